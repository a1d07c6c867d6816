"""The whole DeadNet pipeline on the simulated default, one cached step at a time.

Each step is one ``deadnet`` subcommand run in a child process (so each shows its own
progress bar and a crash in one cannot corrupt another), writing into its own folder under
the demo folder. A step whose folder holds a ``.step.json`` with the same command line is
reused on a rerun; a step that fails leaves no such stamp, so a rerun redoes it.
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError
from data_prep.core.manifest import Position, read_manifest
from data_prep.core.outdir import claim_dir, die_with_parent
from data_prep.core.paper import BATCH_SIZE, DATASET_B_DOSE_RANGE_S
from data_prep.core.runinfo import write_settings
from deadnet_caffe.bnstats import WEIGHTS_NAME as BNSTATS_WEIGHTS
from deadnet_caffe.demo_page import summarise, write_page
from deadnet_caffe.netspec import published

STAMP = ".step.json"


@dataclass
class Step:
    """One stage of the demo: a ``deadnet`` command line and the folder it fills."""

    name: str
    title: str
    out: Path
    argv: list[str]

    def stamp_path(self) -> Path:
        return self.out / STAMP

    def cached(self) -> dict | None:
        stamp = self.stamp_path()
        if not stamp.is_file():
            return None
        doc = json.loads(stamp.read_text())
        return doc if doc.get("argv") == self.argv else None


def run_step(
    step: Step,
    log: Callable[[str], None] = print,
    extra: list[str] = (),
    reuse: bool = True,
) -> dict:
    """Run ``step`` unless its stamp says it already ran with the same command line (and
    ``reuse``: False when a step before it ran again, since its inputs may have changed).

    ``extra`` arguments are passed on but are not part of the cache key (``--resume``).
    Returns the stamp document: ``argv``, ``seconds`` (of the run that made it), ``cached``.
    """
    hit = step.cached() if reuse else None
    if hit is not None:
        log(f"[demo] {step.name}: reusing {step.out} (ran in {hit['seconds']:.0f} s)")
        return {**hit, "cached": True}
    if step.stamp_path().is_file():
        # A finished output of another command line (the demo's own: the stamp says so). It
        # goes, or a training run would refuse a folder that already holds snapshots.
        log(f"[demo] {step.name}: the command line or an input changed; {step.out} is made again")
        shutil.rmtree(step.out)
    log(f"[demo] {step.name}: {step.title}")
    argv = [*step.argv, *extra]
    if "--resume" in extra and "--weights" in argv:
        # resuming a fine-tuning run: its solverstate holds the weights, and deadnet train
        # refuses --weights with --resume
        i = argv.index("--weights")
        del argv[i : i + 2]
    log("[demo]   $ deadnet " + shlex.join(argv))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "deadnet_caffe", *argv], preexec_fn=die_with_parent
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise UserError(
            f"step {step.name} failed (exit {proc.returncode}); its output is in {step.out}, "
            f"rerun 'deadnet demo' to retry from this step."
        )
    doc = {"argv": step.argv, "seconds": round(seconds, 1)}
    stamp = step.stamp_path()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(doc, indent=2) + "\n")
    return {**doc, "cached": False}


# --- the demo's plan -------------------------------------------------------------------------

#: The demo's solver: the published Data Set A solver with one stated change. The published
#: base_lr 0.0003 needs tens of thousands of iterations (the paper trained ~500k on a GPU);
#: on 2 CPU cores the demo has DemoConfig.max_iter, so base_lr is 10x higher. Everything else
#: (Nesterov, inv policy, momentum, weight decay, batch 20, the net) stays as published.
DEMO_BASE_LR = 0.003

#: Data Set B's demo fine-tunes the A demo's weights (``deadnet train --weights``), the way a
#: user with both data sets would: the published Data Set B solver with base_lr 0.001 (3x
#: below the A demo's 0.003, since the start is already trained; 3.3x the published 0.0003)
#: and :data:`DEMO_B_MAX_ITER` iterations. The net and everything else stay as published.
DEMO_B_BASE_LR = 0.001
DEMO_B_MAX_ITER = 300
#: Data Set B's reduced augmentation: r x b x t x n = 2 x 1 x 10 x 1 = 20 per annotated crop
#: (paper 8 x 3 x 10 x 3 = 720): the published B train net mirrors and crops at random, and
#: 300 iterations of 20 see about half of the crops once; class-balanced (``--balance``).
DEMO_B_AUGMENTATION = ("--rotations", "2", "--blurs", "1", "--noise-copies", "1", "--balance")


@dataclass(frozen=True)
class DemoConfig:
    """What ``deadnet demo`` runs; saved as ``settings.json`` in the demo folder."""

    out: Path
    dataset: str = "A"  # "A" or "B"
    preset: str = "demo"
    seed: int = 0
    max_iter: int = 540
    base_lr: float = DEMO_BASE_LR
    test_interval: int = 90
    warps: int = 1  # Data Set A: w = 1 instead of 3
    blurs: int = 1  # b = 1 instead of 2 (A) / 3 (B)
    early_frames: tuple[int, int] = (2, 3)  # frames 2-4: 96-192 min after exposure
    report_every: int = 11
    classmodel_iterations: int = 500
    gradcam_per_class: int = 100
    jobs: int = 2
    pretrained: Path | None = None  # Data Set B: A weights to fine-tune (None: train them)


def _heldout_position(experiment: Path, split_csv: Path) -> Position:
    """The position the net never saw: the one whose dose is nearest 80 s among
    positions outside the training split (the paper's Figure 4 shows a lower-dose movie)."""
    with split_csv.open(newline="") as fh:
        trained = {row["key"] for row in csv.DictReader(fh) if row["part"] == "train"}
    unseen = [p for p in read_manifest(experiment) if p.key not in trained]
    if not unseen:
        raise UserError(f"{split_csv}: every position was used for training; none is held out.")
    return min(unseen, key=lambda p: (abs(p.dose_s - 80.0), p.key))


def _test_iter(dataset: Path) -> int:
    """Batches of 20 that cover the test LMDB once (from the dataset card)."""
    card = json.loads((dataset / "dataset.json").read_text())
    return max(1, -(-int(card["counts"]["test"]["crops"]) // BATCH_SIZE))


def _prepare_train_folder(run: Path) -> list[str]:
    """A train step that was interrupted is resumed from its newest solverstate (a run folder
    with none is started afresh by ``deadnet train`` itself). Returns the extra arguments
    for ``deadnet train``."""
    if run.exists() and not (run / STAMP).exists() and any(run.glob("*.solverstate")):
        return ["--resume"]
    return []


TRUTH_NAME = "truth.json"


def truth_check(exp: Path, ds: Path, evaluation: Path, seed: int) -> dict:
    """Data Set B against the simulator's truth (the experts' labels are not the truth).

    Each annotated item's true state is its true sick fraction above the simulated experts'
    undecided point (:func:`data_prep.sim.annotators.truth_label`). Returns ``votes``: how often
    the simulated votes and the labels made from them agree with the truth, over every voted
    item; ``test``: on the test crops, the class-balanced accuracy (section 2.5, classes by
    truth) of the net (published-val predictions of one pass) and of the expert labels
    against the truth, and the net's against the expert labels for comparison.
    """
    from data_prep.core.manifest import read_manifest
    from data_prep.sim.annotators import item_truth, truth_label, vote_truth_agreement
    from data_prep.votes_csv import Item, read_votes
    from deadnet_caffe import stats

    votes = read_votes(exp / "votes.csv")
    by_key = {p.key: p for p in read_manifest(exp)}
    items: dict[str, list[Item]] = {}
    for item_id in sorted({v.item_id for v in votes}):
        it = Item.parse(item_id)
        items.setdefault(it.position_key, []).append(it)
    truth: dict[str, int] = {}
    for key, its in items.items():
        labels = truth_label(item_truth(by_key[key].ground_truth, its))
        truth.update(zip((it.id for it in its), labels.tolist(), strict=True))
    with (ds / "test_index.csv").open(newline="") as fh:
        item_of = {r["key"]: r["item"] for r in csv.DictReader(fh)}
    with (evaluation / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    expert = np.array([int(r["label"]) for r in rows])
    pred = np.array([int(r["pred_published_val"]) for r in rows])
    true = np.array([truth[item_of[r["key"]]] for r in rows])
    rng = np.random.default_rng(seed)

    def acc(correct: np.ndarray, labels: np.ndarray) -> dict | None:
        if len(set(labels.tolist())) < 2:
            return None
        return stats.paper_accuracy(correct, labels, rng).as_dict()

    return {
        "votes": vote_truth_agreement(votes, truth),
        "test": {
            "crops": len(rows),
            "true_sick": int(true.sum()),
            "expert_sick": int(expert.sum()),
            "net_vs_truth": acc(pred == true, true),
            "experts_vs_truth": acc(expert == true, true),
            "net_vs_experts": acc(pred == expert, expert),
        },
    }


def run_demo(
    cfg: DemoConfig, log: Callable[[str], None] = print, progress: bool | None = None
) -> dict:
    """Run (or reuse) every step and write ``summary.json`` and ``index.html``.

    ``progress`` is passed to every step as ``--progress`` / ``--no-progress`` (None: each
    step's own rule, a bar only when stdout is a terminal).

    Returns the summary dict (see :func:`deadnet_caffe.demo_page.summarise`).
    """
    out = cfg.out
    claim_dir(out, "demo")
    write_settings(out, asdict(cfg))
    exp, ds, run = out / "experiment", out / f"dataset_{cfg.dataset}", out / "train"
    weights = run / "latest.caffemodel"
    seed = ["--seed", str(cfg.seed)]
    done: dict[str, dict] = {}
    t_start = time.perf_counter()

    bars = [] if progress is None else ["--progress" if progress else "--no-progress"]

    def step(name: str, title: str, folder: Path, argv: list[str], extra: list[str] = ()):
        # a step reruns when any step before it ran: its inputs may have changed
        reuse = all(d.get("cached") for d in done.values())
        done[name] = run_step(Step(name, title, folder, argv), log, [*extra, *bars], reuse)

    step(
        "simulate",
        "simulate the phototoxicity experiment",
        exp,
        [
            "simulate",
            "--preset",
            cfg.preset,
            *seed,
            "--jobs",
            str(cfg.jobs),
            "--out",
            str(exp),
        ],
    )

    def dataset_argv(name: str, folder: Path) -> list[str]:
        aug = ["--blurs", str(cfg.blurs)]
        if name == "A":
            aug += ["--warps", str(cfg.warps), "--early-frames", *map(str, cfg.early_frames)]
        else:
            aug = list(DEMO_B_AUGMENTATION)
        return ["dataset", name, "--experiment", str(exp), "--out", str(folder), *seed,
                "--workers", str(cfg.jobs), *aug]  # fmt: skip

    def train_argv(name: str, data: Path, folder: Path, max_iter: int, lr: float) -> list[str]:
        solver = published(f"dataset_{name.lower()}/solver.prototxt")
        return ["train", "--dataset", str(data), "--solver", str(solver), "--run", str(folder),
                "--max-iter", str(max_iter), "--base-lr", str(lr),
                "--test-interval", str(cfg.test_interval),
                "--snapshot-interval", str(cfg.test_interval),
                "--test-iter", str(_test_iter(data)), *seed]  # fmt: skip

    start: list[str] = []
    if cfg.dataset == "B":
        weights_a = cfg.pretrained
        if weights_a is None or not weights_a.is_file():
            # no A demo to start from: train its weights here, as 'deadnet demo' does
            ds_a, run_a = out / "dataset_A", out / "train_A"
            step("dataset_A", "build Data Set A to pre-train on", ds_a, dataset_argv("A", ds_a))
            step(
                "train_A",
                "pre-train on Data Set A (the A demo's solver)",
                run_a,
                train_argv("A", ds_a, run_a, DemoConfig.max_iter, DEMO_BASE_LR),
                extra=_prepare_train_folder(run_a),
            )
            weights_a = run_a / "latest.caffemodel"
        start = ["--weights", str(weights_a.resolve())]
    step(
        "dataset",
        f"build Data Set {cfg.dataset} (reduced augmentation)",
        ds,
        dataset_argv(cfg.dataset, ds),
    )
    step(
        "train",
        "train the published net on the CPU (derived solver)"
        + (", fine-tuning the Data Set A weights" if start else ""),
        run,
        [*train_argv(cfg.dataset, ds, run, cfg.max_iter, cfg.base_lr), *start],
        extra=_prepare_train_folder(run),
    )
    evaluate_net: list[str] = []
    if cfg.dataset == "B":
        # Data Set B's training crops carry additive noise (section 2.3 n) that deploy inputs
        # never have: the deploy net needs BatchNorm statistics of clean windows
        # (deadnet_caffe.bnstats). The weights are unchanged, so the evaluation's primary
        # (batch-statistics) mode is too; its global-statistics mode shows the difference.
        step(
            "bnstats",
            "BatchNorm statistics for deployment, re-estimated on un-augmented windows",
            out / "bnstats",
            ["bnstats", "--weights", str(weights), "--experiment", str(exp), "--dataset",
             str(ds), "--out", str(out / "bnstats"), *seed],
        )  # fmt: skip
        weights = out / "bnstats" / BNSTATS_WEIGHTS
        evaluate_net = ["--net", str(run / "train_val.prototxt")]
    votes = ["--votes", str(exp / "votes.csv")] if (exp / "votes.csv").exists() else []
    step(
        "evaluate",
        "test accuracy with bootstrap BCa intervals",
        out / "evaluation",
        [
            "evaluate",
            "--weights",
            str(weights),
            *evaluate_net,
            "--dataset",
            str(ds),
            "--out",
            str(out / "evaluation"),
            *seed,
            *votes,
        ],
    )
    if cfg.dataset == "A":
        heldout = _heldout_position(exp, ds / "split.csv")
        net = ["--weights", str(weights)]
        step(
            "heatmap",
            "sliding-window heat maps of a held-out time-lapse",
            out / "heatmap",
            [
                "heatmap",
                *net,
                "--out",
                str(out / "heatmap"),
                "--frame-interval-min",
                f"{heldout.frame_interval_min:g}",
                str(heldout.path),
            ],
        )
        step(
            "gradcam",
            "Grad-CAM with class-averaged weights (eq. 3)",
            out / "gradcam",
            [
                "gradcam",
                *net,
                "--dataset",
                str(ds),
                "--out",
                str(out / "gradcam"),
                "--per-class",
                str(cfg.gradcam_per_class),
                "--frame",
                str(heldout.path),
            ],
        )
        step(
            "classmodel",
            "class model visualisation (eq. 4)",
            out / "classmodel",
            [
                "classmodel",
                *net,
                "--dataset",
                str(ds),
                "--out",
                str(out / "classmodel"),
                "--iterations",
                str(cfg.classmodel_iterations),
            ],
        )
        step(
            "report",
            "the per-experiment phototoxicity report",
            out / "report",
            [
                "report",
                *net,
                "--experiment",
                str(exp),
                "--out",
                str(out / "report"),
                "--every",
                str(cfg.report_every),
            ],
        )
    if cfg.dataset == "B":
        low = f"{DATASET_B_DOSE_RANGE_S[1]:g}"
        for name, w, net in (("report", weights, "B"), ("report_A", Path(start[1]), "A")):
            step(
                name,
                f"heat maps and Grad-CAM on Data Set B's positions (the {net} net)",
                out / name,
                ["report", "--weights", str(w), "--experiment", str(exp), "--out",
                 str(out / name), "--every", str(cfg.report_every), "--max-dose", low],
            )  # fmt: skip
        (out / TRUTH_NAME).write_text(
            json.dumps(truth_check(exp, ds, out / "evaluation", cfg.seed), indent=2) + "\n"
        )
    summary = summarise(cfg, done, time.perf_counter() - t_start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_page(cfg, summary)
    return summary
