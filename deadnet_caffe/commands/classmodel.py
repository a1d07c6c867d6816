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

import numpy as np

from data_prep.core.datum import sample_crops
from data_prep.core.errors import UserError
from data_prep.core.outdir import output_dir
from data_prep.core.paper import (
    CLASSMODEL_EPSILON,
    CLASSMODEL_ITERATIONS,
    CLASSMODEL_LAMBDA1,
    CLASSMODEL_LAMBDA2,
)
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import read_stack
from deadnet_caffe.checks import nonnegative_float, positive_float, positive_int
from deadnet_caffe.classmodel import (
    ClassModelSettings,
    ScoreGradient,
    class_models,
    write_class_models,
)
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.infer import DeployNet, add_net_arguments, centre_input

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


def _inits(args) -> dict[int, np.ndarray] | None:
    """Starting image of each class label (crops in z units), or None."""
    if args.init_image:
        out = {}
        for c, path in enumerate(args.init_image):
            out[c] = centre_input(read_stack(path)[0])
        return out
    if args.dataset:
        for split in ("test.lmdb", "train.lmdb"):
            if (args.dataset / split).is_dir():
                z, labels = sample_crops(args.dataset / split, 1, seed=2)
                if set(labels.tolist()) == {0, 1}:
                    return {int(c): z[labels == c][0] for c in (0, 1)}
        raise UserError(f"{args.dataset}: no test.lmdb or train.lmdb with crops of both classes.")
    return None


def run(args) -> int:
    if args.iterations < 1:
        raise UserError("--iterations must be at least 1.")
    inputs = [args.model, args.weights, *(args.init_image or [])]
    if args.dataset:
        inputs.append(args.dataset)
    with output_dir(args.out, NAME, inputs) as tmp:
        settings = ClassModelSettings(
            args.epsilon, args.lambda1, args.lambda2, args.iterations, args.laplacian_sign
        )
        inits = _inits(args)
        net = DeployNet(args.model, args.weights, args.gpu, force_backward=True)
        panels = class_models(ScoreGradient(net), inits, settings, args.progress)
        summary = write_class_models(tmp, panels, inits, args.figure_format)
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
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
