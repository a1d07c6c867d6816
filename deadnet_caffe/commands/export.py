"""Export trained weights to ONNX (and a bioimage.io package), proven equal to Caffe.

Our own converter reads the deploy prototxt and the .caffemodel (docs/export.md): the ONNX
model is compared with the Caffe net on check crops cut from --check images (training's
per-crop normalisation, the centre 220 px) and written only when P(sick) agrees within
1e-4 on every crop. Writes deadnet.onnx, export.json (the agreement, the folds) and
agreement.csv into --out; with --bioimageio also bioimageio/ (rdf.yaml, test tensors,
cover), which must pass bioimage.io's own test.
"""

from __future__ import annotations

from pathlib import Path

from deadnet_caffe.checks import positive_int
from deadnet_caffe.infer import DEFAULT_MODEL

NAME = "export"
HELP = "ONNX (and bioimage.io) export of a deploy net, checked against Caffe"


def add_arguments(p) -> None:
    p.add_argument("--weights", type=Path, required=True, help=".caffemodel that fits --model")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="deploy prototxt")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--onnx", action="store_true", help="write deadnet.onnx (always written; for clarity)"
    )
    p.add_argument("--bioimageio", action="store_true", help="also the bioimage.io package")
    p.add_argument(
        "--check",
        type=Path,
        nargs="+",
        default=[],
        metavar="IMAGE",
        help="images, stacks or folders to cut check crops from (real and simulated); "
        "smooth random fields when absent",
    )
    p.add_argument("--crops", type=positive_int, default=100, help="check crops")
    p.add_argument(
        "--no-fold", action="store_true", help="keep every BatchNorm + Scale as its own nodes"
    )


def run(args) -> int:
    from deadnet_caffe.onnx_export import export

    doc = export(
        args.weights,
        args.model,
        args.out,
        args.check,
        args.crops,
        fold=not args.no_fold,
        bioimageio=args.bioimageio,
    )
    a = doc["agreement"]
    folded = sum(f.get("folded", False) for f in doc["folds"].values())
    print(
        f"deadnet export: max |dP(sick)| {a['max_abs_dp']:.2e} over {a['crops']} crops "
        f"(tolerance {a['tolerance']:g}); {folded}/{len(doc['folds'])} BatchNorm folded"
        + (f"; bioimageio test {doc['bioimageio']['bioimageio_test']}" if args.bioimageio else "")
        + f"; {args.out}"
    )
    return 0
