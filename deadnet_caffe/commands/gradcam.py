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

import numpy as np

from data_prep.core.datum import sample_crops
from data_prep.core.errors import UserError
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, GRADCAM_LAYER
from data_prep.core.progress import add_progress_argument
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import read_stack
from data_prep.core.tiffout import Calibration
from deadnet_caffe.checks import check_image_sources, positive_int
from deadnet_caffe.figout import add_figure_argument
from deadnet_caffe.gradcam import GradCam, class_weights, write_examples, write_whole_frame
from deadnet_caffe.infer import (
    DeployNet,
    add_net_arguments,
    centre_input,
)

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


def _examples(args, net):
    if args.images:
        z, names = [], []
        for path in args.images:
            z.append(centre_input(read_stack(path)[0]))
            names.append(path.name)
        z = np.stack(z)
        labels = (net.p_sick(z) >= 0.5).astype(np.int64)  # predicted class
        return z, labels, names
    for split in ("test.lmdb", "val.lmdb", "train.lmdb"):
        if (args.dataset / split).is_dir():
            z, labels = sample_crops(args.dataset / split, args.examples, seed=1)
            return z, labels, [f"{split}#{i}" for i in range(len(z))]
    raise UserError(f"{args.dataset}: no test.lmdb, val.lmdb or train.lmdb for examples.")


def run(args) -> int:
    if args.per_class < 1 or args.examples < 1 or args.stride < 1:
        raise UserError("--per-class, --examples and --stride must be at least 1.")
    check_image_sources([(path, None, None) for path in args.images])
    cache = args.cache or args.weights.with_name(f"{args.weights.stem}.{args.layer}.eq3.npz")
    inputs = [args.dataset, args.model, args.weights, cache, *args.images]
    if args.frame:
        inputs.append(args.frame)
    with output_dir(args.out, NAME, inputs) as tmp:
        frame = read_stack(args.frame)[0] if args.frame else None
        net = DeployNet(args.model, args.weights, args.gpu, force_backward=True)
        gc = GradCam(net, args.layer)
        cw = class_weights(
            gc, args.dataset / "train.lmdb", cache, args.per_class, args.batch, args.progress
        )
        print(
            f"eq. 3 weights: {cw['counts'].tolist()} crops per class "
            f"({'cached' if cw['cached'] else 'computed'}: {cache})"
        )
        z, labels, names = _examples(args, net)
        summary = {
            "layer": args.layer,
            "A": "post-ReLU activations; dS/dA taken before ReLU backward",
            "eq3_counts": cw["counts"].tolist(),
            "eq3_cache": str(cache),
            **write_examples(tmp, gc, z, labels, names, cw["alpha"], args.figure_format),
        }
        if frame is not None:
            c = 1 if args.frame_class == "sick" else 0
            summary["whole_frame"] = {
                "class": args.frame_class,
                **write_whole_frame(
                    tmp,
                    gc,
                    frame,
                    c,
                    cw["alpha"][c],
                    args.stride,
                    args.batch,
                    Calibration.of_tiff(args.frame),
                    args.figure_format,
                ),
            }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
    if summary["all_zero_eq1"] or summary["all_zero_eq3"]:
        print(
            f"warning: all-zero Grad-CAM maps: {summary['all_zero_eq1']} with eq. 1 weights, "
            f"{summary['all_zero_eq3']} with eq. 3 weights (see gradcam_examples.csv)",
            file=sys.stderr,
        )
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return 0
