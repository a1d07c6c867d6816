"""Per-experiment phototoxicity report (beyond the paper).

Runs the exact heat map over every analysed frame of every position of an experiment and
writes report.md (readable without this toolkit) with PNG plots: the fraction of area
predicted sick over time, per position, well and dose, a dose-response plot, the positions
to discard and the highest dose that looks safe with a bootstrap interval. With simulated
ground truth (the manifest's ground_truth column) it adds the heat-map AUROC and Grad-CAM's
energy on sick cells and pointing-game hit rate.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.core.errors import UserError
from data_prep.core.manifest import read_manifest
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, GRADCAM_LAYER
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import MANIFEST_CHANNEL
from deadnet_caffe.checks import (
    check_image_sources,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    probability,
)
from deadnet_caffe.gradcam import GradCam
from deadnet_caffe.infer import DeployNet, add_net_arguments
from deadnet_caffe.report import analyse_position, write_report

NAME = "report"
HELP = "per-experiment phototoxicity report: sick area over time, dose response, safe dose"


def add_arguments(p) -> None:
    p.add_argument("--experiment", type=Path, required=True, help="folder with manifest.csv")
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
    add_net_arguments(p)
    add_progress_argument(p)


def run(args) -> int:
    if min(args.stride, args.every, args.late_frames) < 1 or args.gradcam_crops < 0:
        raise UserError("--stride, --every and --late-frames must be >= 1, --gradcam-crops >= 0.")
    positions = read_manifest(args.experiment)
    if args.max_dose is not None:
        positions = [p for p in positions if p.dose_s <= args.max_dose]
        if not positions:
            raise UserError(f"--max-dose {args.max_dose:g}: no position of the experiment.")
    check_image_sources(
        [(p.path, p.channel, p.n_frames) for p in positions], channel_source=MANIFEST_CHANNEL
    )
    inputs = [args.experiment, args.model, args.weights]
    with output_dir(args.out, NAME, inputs) as tmp:
        net = DeployNet(args.model, args.weights, args.gpu, force_backward=True)
        gc = GradCam(net, GRADCAM_LAYER)
        results = [
            analyse_position(
                p, net, gc, args.stride, args.every, args.batch, args.gradcam_crops, args.progress
            )
            for p in positions
        ]
        summary = write_report(tmp, args.experiment, results, args.margin, args.late_frames)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'report.md'}")
    return 0
