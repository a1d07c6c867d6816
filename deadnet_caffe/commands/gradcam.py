"""Grad-CAM at conv_d4_2 (paper section 2.6, eq. 1-3; Figure 5).

Computes eq. 3's class-averaged weights over the training crops (DATASET/train.lmdb) once
and caches them (.npz); then draws Grad-CAM overlays with each crop's own weights (eq. 1)
and with the averaged ones for example crops (--images, or crops of DATASET/test.lmdb),
and, with --frame, a whole-frame Grad-CAM stitched from overlapping crops with both kinds
of weights, showing how eq. 3 removes the seams. Maps that are zero everywhere are
counted and labelled, never rescaled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from data_prep.core.paper import CROP_STRIDE_PX, GRADCAM_LAYER
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import settings_from
from deadnet_caffe.checks import positive_int
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.gradcam import GradCamSettings, write_gradcam
from deadnet_caffe.infer import add_net_arguments

NAME = "gradcam"
HELP = "Grad-CAM overlays, class-averaged weights (eq. 3) and stitched whole-frame maps"


def add_arguments(p) -> None:
    p.add_argument("--dataset", type=Path, required=True, help="data set folder with train.lmdb")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--layer", default=GRADCAM_LAYER, help="layer whose maps are A (eq. 1-2)")
    p.add_argument(
        "--per-class",
        type=positive_int,
        default=200,
        help="training crops per class averaged in eq. 3",
    )
    p.add_argument(
        "--cache", type=Path, default=None, help="eq. 3 cache (.npz; default: beside --weights)"
    )
    p.add_argument(
        "--images",
        nargs="*",
        type=Path,
        default=[],
        help="example images (centre crop of the first frame; default: test.lmdb)",
    )
    p.add_argument("--examples", type=positive_int, default=3, help="test.lmdb examples per class")
    p.add_argument("--frame", type=Path, default=None, help="image for a whole-frame Grad-CAM")
    p.add_argument(
        "--frame-class",
        choices=("healthy", "sick"),
        default="sick",
        help="class c of the whole-frame Grad-CAM",
    )
    p.add_argument(
        "--stride", type=positive_int, default=CROP_STRIDE_PX, help="crop step of --frame"
    )
    add_figure_argument(p)
    add_net_arguments(p)
    add_progress_argument(p)


def run(args) -> int:
    summary = write_gradcam(settings_from(GradCamSettings, args), args.progress)
    if summary["all_zero_eq1"] or summary["all_zero_eq3"]:
        print(
            f"warning: all-zero Grad-CAM maps: {summary['all_zero_eq1']} with eq. 1 weights, "
            f"{summary['all_zero_eq3']} with eq. 3 weights (see gradcam_examples.csv)",
            file=sys.stderr,
        )
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0
