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
        "--experiment",
        type=Path,
        metavar="DIR",
        help="with --compare: take frame 0 of the unexposed positions from this simulated "
        "experiment folder, as written (its settings.json replaces the preset and options)",
    )
    p.add_argument(
        "--real-px",
        type=positive_float,
        help="um per pixel of the --compare frame (default: the TIFF's own calibration, "
        "else 0.433, the shared T98G frames')",
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
    from data_prep.sim.compare import compare_with_real, experiment_frames
    from data_prep.sim.plate import simulate_experiment

    if args.jobs < 1:
        raise UserError("--jobs must be at least 1.")
    if args.experiment and not args.compare:
        raise UserError("--experiment names the frames for --compare; give --compare REAL.tif.")
    settings = settings_from_args(args)
    inputs = (args.settings,) if args.settings else ()
    if args.compare:
        check_image_sources([(args.compare, None, None)])
        frames = None
        if args.experiment:
            settings, frames = experiment_frames(args.experiment)
            inputs = (*inputs, args.experiment)
        with output_dir(args.out, NAME, [*inputs, args.compare]) as tmp:
            return compare_with_real(
                settings, args.compare, args.real_px, tmp, args.out, frames=frames
            )
    positions = simulate_experiment(
        settings, args.out, jobs=args.jobs, progress=args.progress, inputs=inputs
    )
    dead = sum(bool(p.dead_at_end) for p in positions)
    print(
        f"wrote {len(positions)} positions x {settings.layout.n_frames} frames to {args.out} "
        f"({dead} dead at the end)"
    )
    return 0
