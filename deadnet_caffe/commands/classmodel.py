"""Class model visualisation (paper section 2.6, eq. 4; Figure 6).

Gradient ascent on the pre-softmax score of each class, I <- I + epsilon (dS_c/dI -
lambda1 I - lambda2 nabla^2 I), from a zero image and, when --dataset or --init-image gives
one, from an image of the opposing class. Writes classmodel.png (a 2 x 2 figure like
Figure 6), classmodels.npz (the images and score traces) and settings.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from data_prep.core.paper import (
    CLASSMODEL_EPSILON,
    CLASSMODEL_ITERATIONS,
    CLASSMODEL_LAMBDA1,
    CLASSMODEL_LAMBDA2,
)
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import settings_from
from deadnet_caffe.checks import nonnegative_float, positive_float, positive_int
from deadnet_caffe.classmodel import ClassModelRun, write_classmodel
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.infer import add_net_arguments

NAME = "classmodel"
HELP = "class model images by gradient ascent on the class score (eq. 4, Figure 6)"


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder")
    g = p.add_argument_group("eq. 4")
    g.add_argument("--iterations", type=positive_int, default=CLASSMODEL_ITERATIONS)
    g.add_argument("--epsilon", type=positive_float, default=CLASSMODEL_EPSILON, help="step size")
    g.add_argument(
        "--lambda1", type=nonnegative_float, default=CLASSMODEL_LAMBDA1, help="L2 penalty"
    )
    g.add_argument(
        "--lambda2", type=nonnegative_float, default=CLASSMODEL_LAMBDA2, help="smoothness"
    )
    g.add_argument(
        "--laplacian-sign",
        choices=("smooth", "literal"),
        default="smooth",
        help="how eq. 4's nabla^2 is read (see deadnet_caffe/classmodel.py)",
    )
    s = p.add_argument_group("opposing-class starting images (optional)")
    s.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="data set folder: first crop of each class from test.lmdb or train.lmdb",
    )
    s.add_argument(
        "--init-image",
        nargs=2,
        type=Path,
        default=None,
        metavar=("HEALTHY", "SICK"),
        help="a healthy and a sick image (centre crop) instead of --dataset",
    )
    add_figure_argument(p)
    add_net_arguments(p)
    add_progress_argument(p)


def run(args) -> int:
    summary = write_classmodel(settings_from(ClassModelRun, args), args.progress)
    print(json.dumps(summary, indent=1))
    for key, v in summary.items():
        if v["unchanged"]:
            print(
                f"warning: {key}: dS_c/dI was zero at the start image, so the class model never "
                "moved (e.g. a zero image into a net whose biases are all zero).",
                file=sys.stderr,
            )
    print(f"wrote {args.out}")
    return 0
