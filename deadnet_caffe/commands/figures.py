"""Redraw a run's training curves (paper Figure 3a,b) from its Caffe log.

Writes RUN/curves.csv (iteration, train_loss, lr, test_loss, test_accuracy) and
RUN/figure3a_loss.png, RUN/figure3b_accuracy.png (and .svg / .pdf with --figure-format).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deadnet_caffe.checks import check_caffe_log
from deadnet_caffe.curves import LOG_NAME, update_run
from deadnet_caffe.figout import add_figure_argument

NAME = "figures"
HELP = "redraw a run's Figure 3a,b curves from its Caffe log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder made by deadnet train")
    add_figure_argument(parser)


def run(args: argparse.Namespace) -> int:
    check_caffe_log(Path(args.run) / LOG_NAME)
    for path in update_run(args.run, args.figure_format):
        print(path)
    return 0
