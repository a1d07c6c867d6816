"""Check a Model Zoo package folder (deadnet package): the caffemodel's sha1 against its
readme.md header, then that Caffe loads deploy.prototxt with the weights and runs it.
Exit status 2 with one sentence when anything is wrong.
"""

from __future__ import annotations

from pathlib import Path

NAME = "verify"
HELP = "check a packaged model: sha1 and that the net loads"


def add_arguments(p) -> None:
    p.add_argument("folder", type=Path, help="package folder, models/NAME")


def run(args) -> int:
    from deadnet_caffe.modelzoo import verify

    r = verify(args.folder)
    print(f"deadnet verify: {r['name']}: sha1 {r['sha1']} matches; the net loads and runs.")
    return 0
