"""Print a net's layer table in the form of the paper's Table 1 (layer, size in, size out,
kernel and stride, parameters), computed by Caffe from the prototxt, with the total number
of parameters and the forward FLOPs per image."""

from __future__ import annotations

from pathlib import Path

from deadnet_caffe.checks import positive_int
from deadnet_caffe.describe import describe_net, format_table

NAME = "describe"
HELP = "print a net's Table-1-style layer table, parameter count and FLOPs"


def add_arguments(p) -> None:
    p.add_argument("net", type=Path, metavar="NET.prototxt", help="net prototxt to describe")
    p.add_argument("--phase", choices=("TRAIN", "TEST"), default="TEST", help="net phase")
    p.add_argument(
        "--size",
        nargs=2,
        type=positive_int,
        metavar=("H", "W"),
        default=None,
        help="input height and width (default: the net's crop_size or Input shape)",
    )
    p.add_argument("--all", action="store_true", help="list every layer, not only Table 1's")


def run(args) -> int:
    print(format_table(describe_net(args.net, args.phase, args.size), args.all))
    return 0
