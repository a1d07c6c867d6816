"""Re-estimate a trained net's BatchNorm statistics for deployment (deadnet_caffe.bnstats).

Writes OUT/weights.caffemodel (the same weights; the BatchNorm running averages recomputed
on un-augmented windows of the dataset's training positions) and OUT/bnstats.json. Use the
new weights with heatmap, report, classify, gradcam: a net trained on augmented crops (Data
Set B's additive noise) otherwise sees clean inputs through statistics of noisy ones.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import settings_from
from deadnet_caffe.bnstats import (
    DEFAULT_FRAMES,
    DEFAULT_WINDOWS,
    WEIGHTS_NAME,
    BnStatsSettings,
    write_bnstats,
)
from deadnet_caffe.checks import positive_int, seed
from deadnet_caffe.infer import add_net_arguments

NAME = "bnstats"
HELP = "re-estimate BatchNorm statistics for deployment on un-augmented training windows"


def add_arguments(p) -> None:
    add_net_arguments(p)
    p.add_argument("--experiment", type=Path, required=True, help="raw experiment folder")
    p.add_argument("--dataset", type=Path, required=True, help="the net's dataset (its split.csv)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--windows", type=positive_int, default=DEFAULT_WINDOWS, help="windows sampled")
    p.add_argument(
        "--frames",
        type=positive_int,
        default=DEFAULT_FRAMES,
        help="frames per training position, evenly spaced",
    )
    p.add_argument("--seed", type=seed, default=0, help="seed of the window sample")
    p.add_argument(
        "--unlisted",
        action="store_true",
        help="also sample the experiment's positions that the dataset does not list (never "
        "a test position; for Data Set B the doses above 80 s): statistics of a healthy and "
        "sick mix, like the class-balanced training batches",
    )
    add_progress_argument(p)


def run(args) -> int:
    stats = write_bnstats(settings_from(BnStatsSettings, args), args.progress)
    print(
        f"deadnet bnstats: {stats['batches']} batches of {args.batch} windows from "
        f"{len(stats['positions'])} positions; {args.out / WEIGHTS_NAME}"
    )
    return 0
