"""Classify images: P(sick) for every 256 px crop (or the centre crop) and every image.

Inputs are images, multi-frame TIFF stacks (each frame is an image) or folders of images,
8- or 16-bit, any size of at least 220 px. Each crop is normalised as in training (per-crop
variance normalisation, then the net's centre 220 px; paper section 2.3-2.4). Writes
crops.csv, images.csv, results.json and settings.json into --out.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.core.outdir import output_dir
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import image_files, read_stack
from deadnet_caffe.checks import probability
from deadnet_caffe.infer import (
    DeployNet,
    add_image_arguments,
    add_net_arguments,
    classify_stack,
    write_classification,
)

NAME = "classify"
HELP = "P(sick) per crop and per image for images, TIFF stacks or folders"


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="+", type=Path, help="image files, TIFF stacks or folders")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--crops",
        choices=("grid", "centre"),
        default="grid",
        help="256 px crops at stride 128 covering each image, or only the centre crop",
    )
    p.add_argument(
        "--threshold", type=probability, default=0.5, help="image label: sick if mean >= this"
    )
    add_image_arguments(p)
    add_net_arguments(p)


def run(args) -> int:
    inputs = [*args.inputs, args.model, args.weights]
    with output_dir(args.out, NAME, inputs) as tmp:
        files = [
            f for path in args.inputs for f in (image_files(path) if path.is_dir() else [path])
        ]
        stacks = [(str(path), read_stack(path, args.channel, args.axes)) for path in files]
        net = DeployNet(args.model, args.weights, args.gpu)
        results = []
        for source, frames in stacks:
            results += classify_stack(frames, source, net.p_sick, args.crops, args.batch)
        images = write_classification(tmp, results, args.threshold)
        write_settings(tmp, {k: v for k, v in vars(args).items() if not k.startswith("_")})
    for im in images:
        print(f"{im['source']}[{im['frame']}]: P(sick) = {im['p_sick']:.3f} ({im['label']})")
    print(f"wrote {args.out}")
    return 0
