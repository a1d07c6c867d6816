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
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep.experiment import Position, read_manifest
from deadnet_caffe.demo_page import summarise, write_page
from deadnet_caffe.errors import UserError
from deadnet_caffe.outdir import claim_dir, die_with_parent
from deadnet_caffe.paper import BATCH_SIZE
from deadnet_caffe.runinfo import write_settings

PROJECT = Path(__file__).resolve().parent.parent

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


def run_step(step: Step, log: Callable[[str], None] = print, extra: list[str] = ()) -> dict:
    """Run ``step`` unless its stamp says it already ran with the same command line.

    ``extra`` arguments are passed on but are not part of the cache key (``--resume``).
    Returns the stamp document: ``argv``, ``seconds`` (of the run that made it), ``cached``.
    """
    hit = step.cached()
    if hit is not None:
        log(f"[demo] {step.name}: reusing {step.out} (ran in {hit['seconds']:.0f} s)")
        return {**hit, "cached": True}
    step.stamp_path().unlink(missing_ok=True)  # a stale stamp is no output of the step
    log(f"[demo] {step.name}: {step.title}")
    log("[demo]   $ deadnet " + shlex.join([*step.argv, *extra]))
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "deadnet_caffe.cli", *step.argv, *extra], preexec_fn=die_with_parent
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
#: on 2 CPU cores the demo has ~400 iterations, so base_lr is 10x higher. Everything else
#: (Nesterov, inv policy, momentum, weight decay, batch 20, the net) stays as published.
DEMO_BASE_LR = 0.003


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


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Run (or reuse) every step and write ``summary.json`` and ``index.html``.

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

    def step(name: str, title: str, folder: Path, argv: list[str], extra: list[str] = ()):
        done[name] = run_step(Step(name, title, folder, argv), log, extra=list(extra))

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
            "--quiet",
            "--out",
            str(exp),
        ],
    )
    aug = ["--blurs", str(cfg.blurs)]
    if cfg.dataset == "A":
        aug += ["--warps", str(cfg.warps), "--early-frames", *map(str, cfg.early_frames)]
    step(
        "dataset",
        f"build Data Set {cfg.dataset} (reduced augmentation)",
        ds,
        [
            "dataset",
            cfg.dataset,
            "--experiment",
            str(exp),
            "--out",
            str(ds),
            *seed,
            "--workers",
            str(cfg.jobs),
            *aug,
        ],
    )
    solver = f"prototxt/dataset_{cfg.dataset.lower()}/solver.prototxt"
    step(
        "train",
        "train the published net on the CPU (derived solver)",
        run,
        [
            "train",
            "--dataset",
            str(ds),
            "--solver",
            str(PROJECT / solver),
            "--run",
            str(run),
            "--max-iter",
            str(cfg.max_iter),
            "--base-lr",
            str(cfg.base_lr),
            "--test-interval",
            str(cfg.test_interval),
            "--snapshot-interval",
            str(cfg.test_interval),
            "--test-iter",
            str(_test_iter(ds)),
            *seed,
        ],
        extra=_prepare_train_folder(run),
    )
    votes = ["--votes", str(exp / "votes.csv")] if (exp / "votes.csv").exists() else []
    step(
        "evaluate",
        "test accuracy with bootstrap BCa intervals",
        out / "evaluation",
        [
            "evaluate",
            "--weights",
            str(weights),
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
    summary = summarise(cfg, done, time.perf_counter() - t_start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_page(cfg, summary)
    return summary
