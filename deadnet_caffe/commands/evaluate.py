"""Evaluate trained weights on a data set's test LMDB (paper sections 2.5, 3.1, Figure 3).

Reports accuracy with the paper's virtual-batch bootstrap 95% BCa interval, the confusion
matrix, accuracy per dose and per position, and the unexposed-cells check, in two labelled
modes: published val (BatchNorm batch statistics, batch 20; the primary mode) and global
statistics (as the deploy net). Writes evaluation.json (accuracy, ci_low, ci_high at top
level), report.md, predictions.csv and the Figure 3c,d galleries into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.core import paper
from data_prep.core.progress import add_progress_argument
from deadnet_caffe.checks import nonnegative_int, positive_int, seed
from deadnet_caffe.evaluate import EvalSettings, evaluate
from deadnet_caffe.figout import add_figure_argument

NAME = "evaluate"
HELP = "test accuracy with bootstrap BCa intervals, confusion matrix, galleries"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="trained .caffemodel")
    parser.add_argument("--dataset", required=True, help="folder with test.lmdb")
    parser.add_argument(
        "--net",
        help="train/val prototxt; if absent, the one beside --weights, else Data Set A's",
    )
    parser.add_argument("--out", help="output folder; if absent, WEIGHTS' folder/evaluation")
    parser.add_argument("--votes", help="votes.csv: annotators' fraction on unexposed cells")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the virtual batches")
    parser.add_argument(
        "--resamples",
        type=positive_int,
        default=paper.BOOTSTRAP_RESAMPLES,
        help="bootstrap resamples",
    )
    parser.add_argument(
        "--gallery", type=positive_int, default=8, help="crops per class per gallery"
    )
    parser.add_argument(
        "--gpu", type=nonnegative_int, help="GPU device to run on; the CPU if absent"
    )
    add_figure_argument(parser)
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    out = args.out or str(Path(args.weights).parent / "evaluation")
    doc = evaluate(
        EvalSettings(
            weights=args.weights,
            dataset=args.dataset,
            out=out,
            net=args.net,
            votes=args.votes,
            seed=args.seed,
            resamples=args.resamples,
            gallery=args.gallery,
            gpu=args.gpu,
            figure_format=args.figure_format,
        ),
        progress=args.progress,
    )
    print(
        f"deadnet evaluate: accuracy {doc['accuracy']:.3f} "
        f"[{doc['ci_low']:.3f}, {doc['ci_high']:.3f}] ({doc['primary_mode']}); {out}"
    )
    return 0
