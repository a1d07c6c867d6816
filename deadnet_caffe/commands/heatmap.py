"""Sliding-window P(sick) heat maps over every frame of time-lapses (paper Figure 4).

Inputs are an experiment (--experiment, every position of its manifest) or loose TIFF
stacks / images / folders. For each time-lapse, writes an ImageJ/Fiji TIFF stack of
P(sick) and an RGB TIFF stack of the red = sick overlays, both calibrated (pixel size and
unit, frame interval: from the manifest, or from the input TIFF's tags), the overlays as
PNG, an animated GIF, and the fraction of the area with P(sick) >= 0.5 per frame
(sick_fraction.csv and .png, or --figure-format, for all time-lapses together).
Exact mode (default) normalises every window as in training; dense mode runs the fully
convolutional net once per frame with local normalisation (faster, approximate).
With --scheduler the heat maps are computed on a Dask cluster (docs/scale.md).
"""

from __future__ import annotations

from pathlib import Path

from data_prep.core.paper import CROP_STRIDE_PX, FRAME_INTERVAL_MIN
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import settings_from
from deadnet_caffe import cluster
from deadnet_caffe.checks import positive_float, positive_int
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.infer import add_image_arguments, add_net_arguments
from deadnet_caffe.jobs import DEFAULT_DENSE_MODEL, HeatmapRun, write_heatmap_run

NAME = "heatmap"
HELP = "sliding-window P(sick) heat maps of time-lapses (PNG, TIFF, GIF, sick fraction)"


def add_arguments(p) -> None:
    src = p.add_argument_group("input (one of)")
    src.add_argument("inputs", nargs="*", type=Path, help="TIFF stacks, images or folders")
    src.add_argument("--experiment", type=Path, help="experiment folder with manifest.csv")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--mode",
        choices=("exact", "dense"),
        default="exact",
        help="exact: every window normalised as in training; dense: one fully convolutional pass",
    )
    p.add_argument(
        "--stride", type=positive_int, default=CROP_STRIDE_PX, help="window step (exact mode)"
    )
    p.add_argument(
        "--dense-model",
        type=Path,
        default=DEFAULT_DENSE_MODEL,
        help="fully convolutional deploy variant (dense mode)",
    )
    p.add_argument("--every", type=positive_int, default=1, help="use every n-th frame")
    p.add_argument(
        "--frame-interval-min",
        type=positive_float,
        default=None,
        help="minutes between frames of loose inputs (default: the TIFF's ImageJ frame "
        f"interval, else {FRAME_INTERVAL_MIN:g}; experiments use the manifest)",
    )
    add_image_arguments(p)
    add_figure_argument(p)
    add_net_arguments(p)
    add_progress_argument(p)
    cluster.add_cluster_arguments(p)


def run(args) -> int:
    done = write_heatmap_run(settings_from(HeatmapRun, args), args.progress)
    print(f"wrote {args.out} ({done['timelapses']} time-lapse(s), {done['frames']} frames)")
    return 0
