"""The whole DeadNet pipeline on the simulated default, on a CPU: simulate, Data Set A (or
B), train the published net, evaluate with BCa intervals, heat maps, Grad-CAM, class models
and the phototoxicity report. Each step reuses its result on a rerun; everything goes under
--out with index.html and summary.json."""

from __future__ import annotations

from pathlib import Path

from data_prep.core.progress import add_progress_argument
from deadnet_caffe.checks import positive_float, positive_int, seed
from deadnet_caffe.demo import DEMO_B_BASE_LR, DEMO_B_MAX_ITER, DemoConfig, run_demo

NAME = "demo"
HELP = "run the whole pipeline on the simulated default (make demo)"
_D = DemoConfig(out=Path("runs/demo"))


def add_arguments(p) -> None:
    p.add_argument("--out", type=Path, default=_D.out, help="demo folder")
    p.add_argument("--dataset", choices=("A", "B"), default=_D.dataset, help="which data set")
    p.add_argument(
        "--preset",
        choices=("tiny", "demo"),
        default=_D.preset,
        help="simulator preset (tiny: the reduced CI demo)",
    )
    p.add_argument("--seed", type=seed, default=_D.seed, help="seed of every step")
    p.add_argument(
        "--max-iter",
        type=positive_int,
        help=f"training iterations (A: {_D.max_iter}; B: {DEMO_B_MAX_ITER}, fine-tuning)",
    )
    p.add_argument(
        "--base-lr",
        type=positive_float,
        help=f"derived base_lr (A: {_D.base_lr}; B: {DEMO_B_BASE_LR}, fine-tuning)",
    )
    p.add_argument(
        "--pretrained",
        type=Path,
        help="Data Set B: A weights to fine-tune (default: the A demo's, "
        "OUT/../demo/train/latest.caffemodel; trained here if absent)",
    )
    p.add_argument(
        "--test-interval",
        type=positive_int,
        default=_D.test_interval,
        help="validation (and snapshot) interval",
    )
    p.add_argument(
        "--report-every",
        type=positive_int,
        default=_D.report_every,
        help="report: analyse every n-th frame",
    )
    p.add_argument(
        "--classmodel-iterations",
        type=positive_int,
        default=_D.classmodel_iterations,
        help="eq. 4 iterations",
    )
    p.add_argument(
        "--gradcam-per-class",
        type=positive_int,
        default=_D.gradcam_per_class,
        help="training crops per class for the eq. 3 weights",
    )
    add_progress_argument(p)


def run(args) -> int:
    b = args.dataset == "B"
    cfg = DemoConfig(
        out=args.out,
        dataset=args.dataset,
        preset=args.preset,
        seed=args.seed,
        max_iter=args.max_iter or (DEMO_B_MAX_ITER if b else _D.max_iter),
        base_lr=args.base_lr or (DEMO_B_BASE_LR if b else _D.base_lr),
        pretrained=(args.pretrained or args.out.parent / "demo" / "train" / "latest.caffemodel")
        if b
        else None,
        test_interval=args.test_interval,
        report_every=args.report_every,
        classmodel_iterations=args.classmodel_iterations,
        gradcam_per_class=args.gradcam_per_class,
        # The tiny preset has 6 frames in all: one early frame keeps its test set small.
        early_frames=(0, 1) if args.preset == "tiny" else _D.early_frames,
    )
    s = run_demo(cfg, progress=args.progress)
    print(f"\n[demo] done in {s['total_seconds']:.0f} s; per step:")
    for k, v in s["step_seconds"].items():
        print(f"[demo]   {k:<11} {v:7.0f} s{'  (reused)' if k in s['steps_reused'] else ''}")
    acc = s["test_accuracy"]
    if acc is not None:
        print(f"[demo] test accuracy {acc:.3f} (95% BCa {s['ci_low']:.3f}-{s['ci_high']:.3f})")
    if s.get("ceiling") is not None:
        vt = s.get("accuracy_vs_truth")
        print(f"[demo] concordance ceiling {s['ceiling']:.3f}; against the simulated truth "
              f"{'n/a' if vt is None else f'{vt:.3f}'}")  # fmt: skip
    if s.get("heatmap_auroc") is not None:
        print(f"[demo] heat-map AUROC against ground truth {s['heatmap_auroc']:.3f}")
    print(f"[demo] results: {args.out / 'index.html'}, {args.out / 'summary.json'}")
    return 0
