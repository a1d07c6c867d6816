"""Train a DeadNet with Caffe's solver (paper section 2.4), writing everything into one run.

The run folder gets the derived solver and the exact nets used (Data sources resolved to
DATASET/train.lmdb and test.lmdb, CPU unless --gpu), Caffe's own log (caffe.log), a
settings JSON, caffemodel + solverstate snapshots, latest.caffemodel, curves.csv and the
Figure 3a,b PNGs. Ctrl-C or SIGTERM writes a snapshot and stops; --resume continues. A run
stopped before its first snapshot (Caffe writes none at iteration 0), or killed then, is
started afresh by the same command; the message says which.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.core.progress import add_progress_argument
from deadnet_caffe.checks import nonnegative_float, positive_int, seed
from deadnet_caffe.train import TrainResult, TrainSettings, train, usable_snapshots

NAME = "train"
HELP = "train a net with Caffe (snapshots, log, curves, resume)"


def _gpu(text: str) -> str:
    if text != "all" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text} is neither a device number nor 'all'")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("--dataset", help="folder with train.lmdb and test.lmdb (deadnet dataset)")
    io.add_argument("--solver", help="solver prototxt, e.g. prototxt/dataset_a/solver.prototxt")
    io.add_argument("--run", required=True, help="run folder, e.g. snapshots/dataset_A")
    io.add_argument(
        "--resume", action="store_true", help="continue the run from its newest solverstate"
    )
    io.add_argument(
        "--weights",
        metavar="CAFFEMODEL",
        help="fine-tune: start from these weights (Caffe's -weights; layers matched by name)",
    )
    ov = parser.add_argument_group("solver overrides (written to the run's derived solver)")
    ov.add_argument("--max-iter", type=positive_int, help="solver max_iter")
    ov.add_argument(
        "--paper-iterations",
        action="store_true",
        help="max_iter = the paper's approx. 500k (section 2.4) instead of the published 1M",
    )
    ov.add_argument("--snapshot-interval", type=positive_int, help="solver snapshot")
    ov.add_argument("--test-interval", type=positive_int, help="solver test_interval")
    ov.add_argument(
        "--test-iter", type=positive_int, help="solver test_iter (batches per test pass)"
    )
    ov.add_argument(
        "--base-lr",
        type=nonnegative_float,
        help="solver base_lr (a stated derivative of the paper's 0.0003; 0 freezes every layer)",
    )
    ov.add_argument("--seed", type=seed, help="solver random_seed (fillers, crops, dropout)")
    dev = parser.add_argument_group("device")
    dev.add_argument(
        "--gpu", type=_gpu, help="GPU id, or 'all' for Caffe's NCCL multi-GPU; CPU if absent"
    )
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    settings = TrainSettings(
        dataset=args.dataset,
        solver=args.solver,
        run=args.run,
        max_iter=args.max_iter,
        snapshot_interval=args.snapshot_interval,
        test_interval=args.test_interval,
        test_iter=args.test_iter,
        base_lr=args.base_lr,
        seed=args.seed,
        gpu=args.gpu,
        resume=args.resume,
        weights=args.weights,
        paper_iterations=args.paper_iterations,
    )
    try:
        result = train(settings, progress=args.progress)
    except KeyboardInterrupt:  # before Caffe started, or before the handler was in place
        states = usable_snapshots(Path(args.run))
        result = TrainResult(Path(args.run), states[-1][0] if states else None, 0, "SIGINT", None)
    if result.interrupted and result.iteration is None:
        print(
            f"deadnet train: {result.interrupted} received before the first snapshot; nothing "
            f"to resume, so the same command starts {result.run} afresh.",
            file=sys.stderr,
        )
    elif result.interrupted:
        print(
            f"deadnet train: {result.interrupted} received; snapshot at iteration "
            f"{result.iteration} in {result.run}; continue with --resume.",
            file=sys.stderr,
        )
    if result.interrupted:
        return 130 if result.interrupted == "SIGINT" else 143
    print(f"deadnet train: iteration {result.iteration} of {result.max_iter}; {result.latest}")
    return 0
