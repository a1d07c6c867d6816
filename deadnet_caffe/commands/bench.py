"""Run the project's benchmarks; each prints its figures as ratios against a baseline
measured in the same run, and all results go to OUT/bench.json."""

from __future__ import annotations

import importlib
import json
import pkgutil
import time
from pathlib import Path

from data_prep.core.errors import UserError
from data_prep.core.outdir import claim_dir
from data_prep.core.runinfo import versions
from deadnet_caffe import benchmarks

NAME = "bench"
HELP = "run the benchmarks (speed and memory as ratios against in-run baselines)"


def _modules():
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{benchmarks.__name__}.{info.name}")


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder")
    p.add_argument("--only", nargs="*", default=None, metavar="NAME", help="benchmarks to run")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for tests)")


def run(args) -> int:
    mods = list(_modules())
    names = [m.NAME for m in mods]
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise UserError(f"--only: unknown benchmark(s) {', '.join(unknown)}; have {names}.")
        mods = [m for m in mods if m.NAME in args.only]
    claim_dir(args.out, "bench")  # the benchmarks remove their own work folders in it
    results = {"versions": versions(), "benchmarks": {}}
    for m in mods:
        print(f"== {m.NAME} ==", flush=True)
        t0 = time.perf_counter()
        res = m.run(args.out, args.quick)
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        for k, v in res.items():
            print(f"  {k}: {v}")
        results["benchmarks"][m.NAME] = res
    (args.out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'bench.json'}")
    return 0
