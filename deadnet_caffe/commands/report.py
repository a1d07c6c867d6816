"""Per-experiment phototoxicity report (beyond the paper).

Runs the exact heat map over every analysed frame of every position of an experiment and
writes report.md (readable without this toolkit) with plots (PNG; SVG or PDF as well with
--figure-format): the fraction of area
predicted sick over time, per position, well and dose, a dose-response plot, the positions
to discard and the highest dose that looks safe with a bootstrap interval. With simulated
ground truth (the manifest's ground_truth column) it adds the heat-map AUROC and Grad-CAM's
energy on sick cells and pointing-game hit rate. The heat maps are kept in OUT/maps as
calibrated ImageJ TIFFs (``--no-keep-maps`` to leave them out).

Several experiments (``--experiment`` repeated, or ``--experiments LIST``) give one report
per experiment in ``OUT/NAME/`` (its maps in ``OUT/NAME/maps``) and a plate summary in
``OUT/plates.md``: the dose response of each plate and its highest safe dose, with bootstrap
intervals (deadnet_caffe.plate). With ``--scheduler`` the heat maps are computed on a Dask
cluster (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_prep.core.checks import read_text
from data_prep.core.errors import UserError
from data_prep.core.manifest import read_manifest
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, GRADCAM_LAYER
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import MANIFEST_CHANNEL
from deadnet_caffe import cluster, plate
from deadnet_caffe.checks import (
    check_image_sources,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    probability,
)
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.gradcam import GradCam
from deadnet_caffe.infer import DeployNet, add_net_arguments
from deadnet_caffe.report import analyse_position, write_report

NAME = "report"
HELP = "per-experiment phototoxicity report: sick area over time, dose response, safe dose"


def add_arguments(p) -> None:
    src = p.add_argument_group("experiments (one or more)")
    src.add_argument(
        "--experiment",
        type=Path,
        action="append",
        default=[],
        help="folder with manifest.csv (repeat it for a plate summary of several)",
    )
    src.add_argument(
        "--experiments",
        type=Path,
        metavar="LIST",
        help="text file: one experiment folder per line, relative to the file",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--stride", type=positive_int, default=CROP_STRIDE_PX, help="heat-map window step"
    )
    p.add_argument("--every", type=positive_int, default=1, help="analyse every n-th frame")
    p.add_argument("--late-frames", type=positive_int, default=3, help="frames averaged at the end")
    p.add_argument(
        "--margin",
        type=probability,
        default=0.2,
        help="sick fraction above the dose-0 baseline that flags a position",
    )
    p.add_argument(
        "--max-dose",
        type=nonnegative_float,
        default=None,
        help="analyse only the positions with at most this dose (s), e.g. 80 for Data Set B's",
    )
    p.add_argument(
        "--gradcam-crops",
        type=nonnegative_int,
        default=4,
        help="sick crops per position for the Grad-CAM checks (needs ground truth)",
    )
    p.add_argument(
        "--keep-maps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the heat maps in OUT/maps as calibrated TIFFs (P(sick) and RGB overlay)",
    )
    add_figure_argument(p)
    add_net_arguments(p)
    add_progress_argument(p)
    cluster.add_cluster_arguments(p)


def _experiments(args) -> list[Path]:
    """The experiment folders of ``--experiment`` and ``--experiments``, in that order."""
    exps = list(args.experiment)
    if args.experiments is not None:
        if not args.experiments.is_file():
            raise UserError(f"--experiments {args.experiments}: no such file.")
        lines = read_text(args.experiments, "experiment list").splitlines()
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not names:
            raise UserError(f"--experiments {args.experiments}: the list names no experiment.")
        exps += [args.experiments.parent / n for n in names]
    if not exps:
        raise UserError("give --experiment (one or more) or --experiments LIST.")
    if len({e.resolve() for e in exps}) < len(exps):
        raise UserError("an experiment is given twice (--experiment / --experiments).")
    return exps


def _maps_folders(tmp: Path, experiments: list[Path], groups: list[list]) -> list[Path]:
    """The folder that keeps each position's heat maps: OUT/maps, or OUT/NAME/maps per
    experiment of a screen (keys repeat between experiments)."""
    if len(experiments) == 1:
        return [tmp / "maps"] * len(groups[0])
    names = plate.experiment_names(experiments)
    return [tmp / name / "maps" for name, g in zip(names, groups, strict=True) for _ in g]


def run(args) -> int:
    if min(args.stride, args.every, args.late_frames) < 1 or args.gradcam_crops < 0:
        raise UserError("--stride, --every and --late-frames must be >= 1, --gradcam-crops >= 0.")
    experiments = _experiments(args)
    groups = []
    for exp in experiments:
        positions = read_manifest(exp)
        if args.max_dose is not None:
            positions = [p for p in positions if p.dose_s <= args.max_dose]
            if not positions:
                raise UserError(f"--max-dose {args.max_dose:g}: no position of {exp}.")
        groups.append(positions)
    positions = [p for g in groups for p in g]
    check_image_sources(
        [(p.path, p.channel, p.n_frames) for p in positions], channel_source=MANIFEST_CHANNEL
    )
    inputs = [*experiments, args.model, args.weights]
    if args.experiments is not None:
        inputs.append(args.experiments)
    with output_dir(args.out, NAME, inputs) as tmp:
        maps = _maps_folders(tmp, experiments, groups) if args.keep_maps else None
        if args.scheduler:
            spec = cluster.net_spec(args, force_backward=True)
            with cluster.ClusterRun(args, spec, inputs) as run_:
                results = run_.report_results(
                    positions,
                    args.stride,
                    args.every,
                    args.batch,
                    args.gradcam_crops,
                    args.progress,
                    maps,
                )
        else:
            net = DeployNet(args.model, args.weights, args.gpu, force_backward=True)
            gc = GradCam(net, GRADCAM_LAYER)
            results = [
                analyse_position(
                    p,
                    net,
                    gc,
                    args.stride,
                    args.every,
                    args.batch,
                    args.gradcam_crops,
                    args.progress,
                    maps[i] if maps else None,
                )
                for i, p in enumerate(positions)
            ]
        if len(experiments) == 1:
            summary = write_report(
                tmp, experiments[0], results, args.margin, args.late_frames, args.figure_format
            )
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        else:
            summary = plate.write_screen(
                tmp,
                experiments,
                groups,
                results,
                args.margin,
                args.late_frames,
                args.figure_format,
            )
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
    if args.scheduler:
        run_.done()
        print(f"{run_.reused} of {len(positions)} positions reused from {run_.work.root}")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out / ('report.md' if len(experiments) == 1 else 'plates.md')}")
    return 0
