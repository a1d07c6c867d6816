"""The whole DeadNet pipeline on the simulated default, one cached step at a time.

Each step is one ``deadnet`` subcommand run in a child process (so each shows its own
progress bar and a crash in one cannot corrupt another), writing into its own folder under
the demo folder. A step whose folder holds a ``.step.json`` with the same command line is
reused on a rerun; a step that fails leaves no such stamp, so a rerun redoes it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deadnet_caffe.errors import UserError

STAMP = ".step.json"


@dataclass
class Step:
    """One stage of the demo: a ``deadnet`` command line and the folder it fills."""

    name: str
    title: str
    out: Path
    argv: list[str]
    after: Callable[[Path], dict] | None = field(default=None, repr=False)

    def stamp_path(self) -> Path:
        return self.out / STAMP if self.out.suffix == "" else self.out.with_suffix(".step.json")

    def cached(self) -> dict | None:
        stamp = self.stamp_path()
        if not stamp.is_file():
            return None
        doc = json.loads(stamp.read_text())
        return doc if doc.get("argv") == self.argv else None


def run_step(step: Step, log: Callable[[str], None] = print) -> dict:
    """Run ``step`` unless its stamp says it already ran with the same command line.

    Returns the stamp document: ``argv``, ``seconds`` (of the run that made it), ``cached``.
    """
    hit = step.cached()
    if hit is not None:
        log(f"[demo] {step.name}: reusing {step.out} (ran in {hit['seconds']:.0f} s)")
        return {**hit, "cached": True}
    log(f"[demo] {step.name}: {step.title}")
    log("[demo]   $ deadnet " + shlex.join(step.argv))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "deadnet_caffe.cli", *step.argv])
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise UserError(
            f"step {step.name} failed (exit {proc.returncode}); its output is in {step.out}, "
            f"rerun 'deadnet demo' to retry from this step."
        )
    extra = step.after(step.out) if step.after else {}
    doc = {"argv": step.argv, "seconds": round(seconds, 1), **extra}
    stamp = step.stamp_path()
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(doc, indent=2) + "\n")
    return {**doc, "cached": False}
