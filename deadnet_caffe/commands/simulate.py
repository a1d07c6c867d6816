"""Simulate a phase-contrast phototoxicity experiment (paper section 2.1) with ground truth.

Writes the raw-experiment format (one 16-bit multi-frame ImageJ TIFF per stage position and
manifest.csv), the ground truth (label images, sick masks, per-cell table), simulated expert
votes for Data Set B and settings.json. The model is described in docs/simulator.md. Presets:
tiny (tests, seconds), demo (make demo, a minute or two), paper (the full layout). Options
given on the command line override the preset.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from data_prep.core.checks import read_text
from data_prep.core.errors import UserError
from data_prep.core.outdir import output_dir
from data_prep.core.progress import add_progress_argument
from data_prep.sim.params import PRESETS, Biology, Optics, Settings
from deadnet_caffe.checks import (
    check_image_sources,
    nonnegative_float,
    positive_float,
    positive_int,
    seed,
)

NAME = "simulate"
HELP = "simulate a phototoxicity experiment with ground truth (the embedded default data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="experiment folder to write")
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="layout preset")
    p.add_argument("--seed", type=seed, default=0, help="random seed (same seed, same bytes)")
    g = p.add_argument_group("layout (override the preset)")
    g.add_argument(
        "--doses", type=nonnegative_float, nargs="+", metavar="S", help="dose per well, seconds"
    )
    g.add_argument("--positions", type=positive_int, metavar="N", help="stage positions per well")
    g.add_argument("--hours", type=positive_float, help="length of the time-lapse in hours")
    g.add_argument(
        "--render-every",
        type=positive_int,
        metavar="K",
        help="render every K-th 8-min frame (the TIFF's frame interval is K x 8 min)",
    )
    g.add_argument(
        "--size",
        type=positive_int,
        nargs=2,
        metavar=("W", "H"),
        help="frame size in px (1344 1024)",
    )
    g.add_argument("--no-votes", action="store_true", help="do not simulate expert votes")
    p.add_argument(
        "--settings",
        type=Path,
        help="JSON with 'biology' and/or 'optics' objects overriding model parameters",
    )
    p.add_argument(
        "--compare",
        type=Path,
        metavar="REAL.tif",
        help="instead of simulating the experiment, render frame 0 of the preset's unexposed "
        "positions, print their envelope statistics next to this real frame's and write "
        "simulator-vs-real.png, simulator-stats.png and simulator-damage-strip.png to --out",
    )
    p.add_argument(
        "--real-px",
        type=positive_float,
        default=6.5 / 15.0,
        help="um per pixel of the --compare frame",
    )
    p.add_argument("--jobs", type=positive_int, default=1, help="positions simulated in parallel")
    add_progress_argument(p)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` for these command-line arguments."""
    lay = PRESETS[args.preset]
    changes = {
        "doses_s": tuple(args.doses) if args.doses else None,
        "positions_per_well": args.positions,
        "hours": args.hours,
        "render_every": args.render_every,
        "width": args.size[0] if args.size else None,
        "height": args.size[1] if args.size else None,
        "votes": False if args.no_votes else None,
    }
    lay = replace(lay, **{k: v for k, v in changes.items() if v is not None})
    bio, optics = Biology(), Optics()
    if args.settings:
        try:
            doc = json.loads(read_text(args.settings, "settings JSON"))
        except json.JSONDecodeError as err:
            raise UserError(f"{args.settings}: cannot read the settings JSON ({err}).") from None
        if not isinstance(doc, dict) or set(doc) - {"biology", "optics"}:
            raise UserError(f"{args.settings}: expected an object with 'biology' and 'optics'.")
        bio = Biology.from_dict(doc.get("biology", {}), str(args.settings))
        optics = Optics.from_dict(doc.get("optics", {}), str(args.settings))
    settings = Settings(layout=lay, biology=bio, optics=optics, seed=args.seed)
    settings.layout.check()
    return settings


def run(args: argparse.Namespace) -> int:
    from data_prep.sim.plate import simulate_experiment

    if args.jobs < 1:
        raise UserError("--jobs must be at least 1.")
    settings = settings_from_args(args)
    inputs = (args.settings,) if args.settings else ()
    if args.compare:
        check_image_sources([(args.compare, None, None)])
        with output_dir(args.out, NAME, [*inputs, args.compare]) as tmp:
            return compare_with_real(settings, args.compare, args.real_px, tmp, args.out)
    positions = simulate_experiment(
        settings, args.out, jobs=args.jobs, progress=args.progress, inputs=inputs
    )
    dead = sum(bool(p.dead_at_end) for p in positions)
    print(
        f"wrote {len(positions)} positions x {settings.layout.n_frames} frames to {args.out} "
        f"({dead} dead at the end)"
    )
    return 0


def compare_with_real(
    settings: Settings, real_path: Path, real_px: float, out: Path, shown: Path
) -> int:
    """``--compare``: envelope statistics of frame 0 of every unexposed position and a real frame.

    Prints one row per frame (data_prep.sim.compare.format_table) and whether each simulated
    frame meets the issue-15 targets; writes the two comparison figures into ``out`` (the
    folder that becomes ``shown``, the --out named in the messages), and the
    healthy -> stressed -> dying -> dead strip of the cell of the exposed wells (below 200 s)
    that stays stressed longest (data_prep.sim.compare.damage_strip).
    """
    import numpy as np
    import tifffile

    from data_prep.sim.compare import (
        damage_strip,
        envelope,
        format_table,
        meets_targets,
        write_figures,
        write_strip,
    )
    from data_prep.sim.plate import PositionSim, well_name

    try:
        real = tifffile.imread(real_path)
    except (OSError, ValueError) as err:
        raise UserError(f"--compare {real_path}: cannot read it as a TIFF ({err}).") from None
    if real.ndim == 3 and real.shape[0] >= 1:
        real = real[0]
    if real.ndim != 2 or min(real.shape) < 64 or float(np.ptp(real)) == 0:
        raise UserError(f"--compare {real_path}: expected a grey frame of at least 64 x 64 px.")
    lay = settings.layout
    rows = {f"real {real_path.name}": envelope(real, real_px)}
    frames, failed = [], 0
    for w, dose in enumerate(lay.doses_s):
        if dose != 0:
            continue
        for p in range(lay.positions_per_well):
            sim = PositionSim(settings, w, p, dose)
            img, _, _ = sim.render(0)
            stats = envelope(img, lay.pixel_size_um, sim.renderer.layers)
            ok = meets_targets(stats)
            failed += not all(ok.values())
            misses = ", ".join(k for k, v in ok.items() if not v)
            name = f"sim {well_name(w)}_p{p + 1} t0"
            rows[name + (f" (misses {misses})" if misses else "")] = stats
            frames.append(img)
    if not frames:
        raise UserError("--compare: the layout has no unexposed (dose 0) well to compare.")
    print(format_table(rows))
    print(
        f"{len(frames) - failed} of {len(frames)} simulated frames meet the targets "
        "(skewness >= 1, bright tail >= 1% and >= 1.5 x dark, PSD slope in [-2.5, -2.0], "
        "overlap <= 2%)"
    )
    write_figures(real, real_px, frames, lay.pixel_size_um, out)
    print(f"wrote {shown / 'simulator-vs-real.png'} and {shown / 'simulator-stats.png'}")
    candidates = [
        (w, p, dose)
        for w, dose in enumerate(lay.doses_s)
        if 0 < dose < 200
        for p in range(lay.positions_per_well)
    ]
    strip = damage_strip(settings, candidates)
    if strip:
        write_strip(*strip, lay.pixel_size_um, out / "simulator-damage-strip.png")
        (w, p, dose) = strip[2]
        print(
            f"wrote {shown / 'simulator-damage-strip.png'} "
            f"(a cell of {well_name(w)}_p{p + 1}, {dose:g} s)"
        )
    return 0
