"""Package trained weights the Caffe Model Zoo way: models/NAME with deploy.prototxt, the
caffemodel, readme.md (the Model Zoo's YAML header: name, caffemodel, sha1, license,
caffe_commit and the Caffe build key) and a model card (training data, imaging conditions,
test accuracy with its interval, the derived solver), card.json and solver.prototxt.

The card is filled from the run folder beside the weights, its data set and experiment,
and an evaluation.json (--evaluation, or one found beside the weights). Check the result
with `deadnet verify models/NAME`.
"""

from __future__ import annotations

from pathlib import Path

from deadnet_caffe.checks import positive_float
from deadnet_caffe.infer import DEFAULT_MODEL
from deadnet_caffe.modelzoo import LICENSE

NAME = "package"
HELP = "Model Zoo folder (readme.md with sha1, model card) for trained weights"


def add_arguments(p) -> None:
    p.add_argument("--weights", type=Path, required=True, help="trained .caffemodel")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="deploy prototxt")
    p.add_argument("--out", type=Path, required=True, help="package folder, models/NAME")
    p.add_argument("--evaluation", type=Path, help="evaluation.json of these weights")
    p.add_argument("--license", default=LICENSE, help="licence of the weights (SPDX)")
    g = p.add_argument_group("imaging conditions (replace what the run recorded)")
    g.add_argument("--pixel-size", type=positive_float, metavar="UM", help="um per pixel")
    g.add_argument("--objective", help="objective, e.g. '20x/0.75 Plan Apo Ph2'")
    g.add_argument("--cell-type", help="cell type, e.g. U2OS")


def run(args) -> int:
    from deadnet_caffe.modelzoo import package

    card = package(
        args.weights,
        args.out,
        args.model,
        args.evaluation,
        args.license,
        {
            "pixel_size_um": args.pixel_size,
            "objective": args.objective,
            "cell_type": args.cell_type,
        },
    )
    h = card["header"]
    print(f"deadnet package: {args.out} ({h['caffemodel']}, sha1 {h['sha1']})")
    return 0
