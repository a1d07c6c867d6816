"""Build Data Set A or B (paper sections 2.2-2.3) from a raw experiment: labels, split by
stage position, augmentation of the train set (test sets: crop + normalisation only), and an
LMDB of Caffe Datums (float_data v = 32767 + 4000 z) and/or HDF5 files, with the dataset card
OUT/dataset.json (labels 0 = healthy, 1 = sick) and OUT/split.csv.

Reduced augmentation for quick CPU runs (e.g. the demo): --warps 1 --blurs 1 --rotations 8."""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.build import BuildConfig, build
from data_prep.core import paper
from data_prep.core.progress import add_progress_argument
from deadnet_caffe import checks

NAME = "dataset"
HELP = "build Data Set A or B (LMDB / HDF5) from a raw experiment"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=("A", "B"), help="which data set (paper section 2.2)")
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--experiment",
        type=Path,
        default=Path("runs/experiments/demo"),
        help="raw experiment folder (manifest.csv + TIFFs)",
    )
    io.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: new, or this command's earlier output (replaced atomically)",
    )
    io.add_argument(
        "--format",
        choices=("lmdb", "hdf5", "both"),
        default="lmdb",
        help="LMDB for Caffe's Data layer, HDF5 + list file for HDF5Data",
    )
    io.add_argument(
        "--hdf5-rows", type=checks.positive_int, default=2048, help="crops per HDF5 file"
    )
    run = p.add_argument_group("split and execution")
    run.add_argument("--seed", type=checks.seed, default=0, help="seed of split and augmentation")
    run.add_argument(
        "--test-fraction",
        type=checks.open_fraction,
        default=0.25,
        help="fraction of positions per (class, dose) that go to test",
    )
    run.add_argument(
        "--workers", type=checks.nonnegative_int, default=2, help="worker processes (0/1: inline)"
    )
    a = p.add_argument_group("Data Set A")
    a.add_argument(
        "--early-frames",
        nargs=2,
        type=checks.nonnegative_int,
        default=(0, 1),
        metavar=("FIRST", "COUNT"),
        help="window of early frames labelled (sick positions still look healthy)",
    )
    a.add_argument(
        "--sick-positions",
        nargs="+",
        default=(),
        metavar="PLATE/WELL/POS",
        help="dead-at-end positions (real data); default: manifest dead_at_end",
    )
    a.add_argument(
        "--sick-min-dose",
        type=checks.nonnegative_float,
        default=None,
        metavar="SECONDS",
        help="criterion instead of a list: positions with at least this dose are sick",
    )
    a.add_argument(
        "--warps",
        type=checks.nonnegative_int,
        default=paper.AUG_A["w"],
        help="TPS-warped copies w (0: no warp)",
    )
    a.add_argument(
        "--blurs",
        type=checks.nonnegative_int,
        default=None,
        help=f"blurred copies b (0: no blur); default A {paper.AUG_A['b']}, B {paper.AUG_B['b']}",
    )
    b = p.add_argument_group("Data Set B")
    b.add_argument(
        "--votes",
        type=Path,
        default=None,
        help="votes CSV (web app export or simulator); default EXPERIMENT/votes.csv",
    )
    b.add_argument(
        "--max-dose",
        type=checks.nonnegative_float,
        default=paper.DATASET_B_DOSE_RANGE_S[1],
        help="use items of positions with at most this dose (s)",
    )
    b.add_argument(
        "--time-frames",
        type=checks.positive_int,
        default=paper.AUG_B["t"],
        help="frames t of each annotated 10-frame crop used for training",
    )
    b.add_argument(
        "--noise-copies",
        type=checks.nonnegative_int,
        default=paper.AUG_B["n"],
        help="noisy copies n (0: no noise)",
    )
    b.add_argument(
        "--balance",
        action="store_true",
        help="class-balanced training LMDB: the rarer class's items get extra augmented copies",
    )
    p.add_argument(
        "--rotations",
        type=int,
        default=paper.N_ROTATIONS_MIRRORS,
        choices=range(1, 9),
        metavar="1..8",
        help="rotations/mirrors r",
    )
    add_progress_argument(p)


def run(args: argparse.Namespace) -> int:
    formats = ("lmdb", "hdf5") if args.format == "both" else (args.format,)
    blurs = {}
    if args.blurs is not None:
        blurs = {"blurs_a": args.blurs, "blurs_b": args.blurs}
    cfg = BuildConfig(
        dataset=args.dataset,
        experiment=args.experiment,
        out=args.out,
        seed=args.seed,
        test_fraction=args.test_fraction,
        workers=args.workers,
        formats=formats,
        early_first=args.early_frames[0],
        early_count=args.early_frames[1],
        sick_positions=tuple(args.sick_positions),
        sick_min_dose=args.sick_min_dose,
        warps=args.warps,
        votes=args.votes,
        max_dose=args.max_dose,
        time_frames=args.time_frames,
        noise_copies=args.noise_copies,
        rotations=args.rotations,
        hdf5_rows=args.hdf5_rows,
        balance=args.balance,
        **blurs,
    )
    card = build(cfg, args.progress)
    for part in ("train", "test"):
        c = card["counts"][part]
        print(f"{part}: {c['crops']} crops from {c['positions']} positions {c['per_class']}")
    if "concordance_summary" in card:
        print(f"concordance: {card['concordance_summary']}")
    print(f"wrote {args.out}")
    return 0
