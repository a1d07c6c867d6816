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

from data_prep.core.paper import CROP_STRIDE_PX
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import settings_from
from deadnet_caffe import cluster
from deadnet_caffe.checks import nonnegative_float, nonnegative_int, positive_int, probability
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.infer import add_net_arguments
from deadnet_caffe.jobs import ReportRun, write_report_run

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


def run(args) -> int:
    done = write_report_run(settings_from(ReportRun, args), args.progress)
    if "reused" in done:
        print(f"{done['reused']} of {done['positions']} positions reused from {done['work']}")
    print(json.dumps(done["summary"], indent=1))
    print(f"wrote {args.out / ('report.md' if done['experiments'] == 1 else 'plates.md')}")
    return 0
