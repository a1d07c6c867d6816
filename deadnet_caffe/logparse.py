"""Read Caffe's own training log (glog format) into rows of numbers.

Caffe writes one line per event; the lines used here are those that BVLC Caffe's
``tools/extra/parse_log.py`` reads (solver.cpp / sgd_solver.cpp, Caffe 1.0)::

    Iteration 200 (4.2 iter/s, 47.6s/200 iters), loss = 0.41     train loss (display-smoothed)
    Iteration 200, lr = 0.000299                                 learning rate
    Iteration 2000, Testing net (#0)                             a test pass starts
        Test net output #0: accuracy = 0.93                      its outputs
        Test net output #1: loss = 0.21 (* 1 = 0.21 loss)
    Iteration 1000000, loss = 0.02                               final train loss

A log may hold several sessions (a run that was stopped and resumed appends to the same log);
a later value for the same iteration replaces the earlier one.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

_TRAIN_LOSS = re.compile(r"\] Iteration (\d+)(?: \([^)]*\))?, loss = ([-+\w.]+)")
_LR = re.compile(r"\] Iteration (\d+), lr = ([-+\w.]+)")
_TESTING = re.compile(r"\] Iteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUT = re.compile(r"\]\s+Test net output #\d+: (\S+) = ([-+\w.]+)")
_MAX_ITER = re.compile(r"^\s*max_iter: (\d+)")
_START = re.compile(r"\] Solving (\S+)")

#: Columns of the curves CSV, in order.
CSV_COLUMNS = ("iteration", "train_loss", "lr", "test_loss", "test_accuracy")


@dataclass
class CaffeLog:
    """Numbers read from a Caffe training log.

    Attributes
    ----------
    train_loss : dict[int, float]
        Iteration -> the train loss Caffe displays (averaged over ``average_loss`` iterations).
    lr : dict[int, float]
        Iteration -> learning rate.
    test : dict[int, dict[str, float]]
        Iteration -> test net #0 outputs (e.g. ``{"accuracy": 0.9, "loss": 0.2}``).
    max_iter : int or None
        The solver's ``max_iter`` as printed at start-up (the last session's).
    sessions : int
        How many times the solver started in this log.
    """

    train_loss: dict[int, float] = field(default_factory=dict)
    lr: dict[int, float] = field(default_factory=dict)
    test: dict[int, dict[str, float]] = field(default_factory=dict)
    max_iter: int | None = None
    sessions: int = 0

    @property
    def last_iteration(self) -> int | None:
        """The largest iteration seen in any line, or None for an empty log."""
        seen = [*self.train_loss, *self.lr, *self.test]
        return max(seen) if seen else None

    def rows(self) -> list[dict[str, float | int]]:
        """One row per iteration with any number, columns ``CSV_COLUMNS`` (NaN where absent)."""
        out = []
        for it in sorted({*self.train_loss, *self.lr, *self.test}):
            test = self.test.get(it, {})
            out.append(
                {
                    "iteration": it,
                    "train_loss": self.train_loss.get(it, math.nan),
                    "lr": self.lr.get(it, math.nan),
                    "test_loss": _first(test, "loss"),
                    "test_accuracy": _first(test, "accuracy"),
                }
            )
        return out


class LineParser:
    """Feed log lines one at a time (e.g. live from Caffe's stderr); read ``.log``."""

    def __init__(self) -> None:
        self.log = CaffeLog()
        self._testing: int | None = None  # iteration of the test pass being read
        self.last_loss: float | None = None  # the newest train loss and lr, for progress bars
        self.last_lr: float | None = None

    def feed(self, line: str) -> None:
        """Take one line of the log."""
        if m := _TEST_OUT.search(line):
            if self._testing is not None:
                self.log.test.setdefault(self._testing, {})[m.group(1)] = float(m.group(2))
            return
        if m := _TESTING.search(line):
            # Only test net #0 (the val net) is kept; others are read and dropped.
            self._testing = int(m.group(1)) if m.group(2) == "0" else None
            if self._testing is not None:
                self.log.test[self._testing] = {}
            return
        # Other threads (data prefetching) may write lines between a test pass's outputs, so
        # only a solver line of the training loop ends the pass.
        if m := _LR.search(line):
            self._testing = None
            self.log.lr[int(m.group(1))] = self.last_lr = float(m.group(2))
        elif m := _TRAIN_LOSS.search(line):
            self._testing = None
            self.log.train_loss[int(m.group(1))] = self.last_loss = float(m.group(2))
        elif m := _MAX_ITER.search(line):
            self.log.max_iter = int(m.group(1))
        elif _START.search(line):
            self.log.sessions += 1


def parse_log(path: Path | str) -> CaffeLog:
    """Parse a Caffe training log file (all of its sessions)."""
    parser = LineParser()
    with open(path, errors="replace") as fh:
        for line in fh:
            parser.feed(line)
    return parser.log


def write_csv(log: CaffeLog, path: Path | str) -> Path:
    """Write ``log.rows()`` as CSV with header ``CSV_COLUMNS``; empty cells where absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in log.rows():
            writer.writerow({k: ("" if _isnan(v) else v) for k, v in row.items()})
    tmp.replace(path)
    return path


def read_csv(path: Path | str) -> dict[str, list[float]]:
    """Read a curves CSV back as columns (NaN for empty cells)."""
    cols: dict[str, list[float]] = {c: [] for c in CSV_COLUMNS}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for c in CSV_COLUMNS:
                cols[c].append(float(row[c]) if row.get(c) else math.nan)
    return cols


def _first(outputs: dict[str, float], word: str) -> float:
    """The first output whose top name contains ``word`` (e.g. ``loss``, ``accuracy``)."""
    return next((v for k, v in outputs.items() if word in k), math.nan)


def _isnan(v: float | int) -> bool:
    return isinstance(v, float) and math.isnan(v)
