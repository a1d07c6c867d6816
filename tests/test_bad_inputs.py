"""Bad input across every command: one table of cases, one set of assertions.

Each case runs the real ``deadnet`` command line in a child process, in a fresh folder that
holds a copy of the fixtures below, after the case's ``prepare`` has made its bad input
there. It asserts what ../shared/DESIGN.md promises for bad input:

- exit status 2;
- one line on stderr, naming the file or option (``names``);
- no traceback;
- no core file (the child runs with RLIMIT_CORE unlimited, so an abort would leave one);
- the ``--out`` location (``out``) exactly as it was before: the same files, the same bytes.

Adding a case is one line in ``CASES``. Paths in ``argv`` are relative to the case folder.

Fixtures in every case folder:

- ``exp/``: a raw experiment of seven 384 x 640 positions, 12 frames each
  (tests/data_experiment.py), with ``manifest.csv``;
- ``net/deploy.prototxt`` and ``net/weights.caffemodel``: a narrow DeadNet-shaped deploy net
  with filler weights (tests/infer_nets.py);
- ``img/a.tif``: one 300 x 300 16-bit image;
- ``keep/``: a folder of unrelated files (``notes.txt``, ``data/table.csv``).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
from data_experiment import make_experiment
from infer_nets import phase_like, write_net

DEADNET = Path(sys.executable).with_name("deadnet")
NET = "--model net/deploy.prototxt --weights net/weights.caffemodel"


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, what its sentence must name, how to make the input.

    ``argv`` is split on spaces; ``prepare`` (optional) changes the case folder before the
    run; ``out`` is the path whose files and bytes must be unchanged afterwards (``None``: no
    output location in this case).
    """

    id: str
    argv: str
    names: str
    prepare: Callable[[Path], None] | None = None
    out: str | None = None


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    """A ``prepare`` that writes ``data`` to ``rel`` (parents made)."""

    def prepare(d: Path) -> None:
        path = d / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)

    return prepare


CASES = [
    # ---- missing inputs ----------------------------------------------------------------
    Case("classify-missing-image", f"classify {NET} --out o nothere.tif", "nothere.tif"),
    Case("heatmap-missing-weights",
         "heatmap --model net/deploy.prototxt --weights nothere.caffemodel --out o img/a.tif",
         "nothere.caffemodel"),
    # ---- output locations (--out, --run, --db) -------------------------------------------
    # ---- images and TIFFs -----------------------------------------------------------------
    # ---- weights, prototxts, LMDBs ---------------------------------------------------------
    Case("train-missing-finetune-weights",
         "train --dataset keep --solver keep/notes.txt --run r --weights nothere.caffemodel",
         "nothere.caffemodel", out="r"),
    Case("train-paper-iterations-and-max-iter",
         "train --dataset keep --solver keep/notes.txt --run r --paper-iterations --max-iter 5",
         "--paper-iterations", out="r"),
    Case("report-max-dose-leaves-no-position",
         f"report {NET} --experiment exp --out o --max-dose -1", "--max-dose", out="o"),
    # ---- numeric options, encodings ---------------------------------------------------------
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The fixtures that every case folder starts from (module docstring)."""
    root = tmp_path_factory.mktemp("world")
    make_experiment(root / "exp")
    (root / "net").mkdir()
    write_net(root / "net")
    (root / "img").mkdir()
    rng = np.random.default_rng(3)
    tifffile.imwrite(root / "img" / "a.tif", phase_like(rng, 300, 300))
    (root / "keep" / "data").mkdir(parents=True)
    (root / "keep" / "notes.txt").write_text("my notes\n")
    (root / "keep" / "data" / "table.csv").write_text("a,b\n1,2\n")
    return root


def snapshot(path: Path) -> dict[str, bytes] | None:
    """``{relative path: bytes}`` of every file under ``path`` (or of the file itself);
    ``None`` when nothing is there. Folders are listed with empty bytes."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    out = {}
    for p in sorted(path.rglob("*")):
        out[str(p.relative_to(path))] = p.read_bytes() if p.is_file() else b""
    return out


def _cores_on() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: Path, tmp_path: Path) -> None:
    d = tmp_path / "case"
    shutil.copytree(world, d, symlinks=True)
    if case.prepare is not None:
        case.prepare(d)
    before = snapshot(d / case.out) if case.out else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [str(DEADNET), *case.argv.split()],
        cwd=d,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=_cores_on,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(err.splitlines()) == 1, f"not one line on stderr:\n{proc.stderr}"
    assert case.names in err, f"{case.names!r} not named in: {err}"
    cores = [p.name for p in d.rglob("core*") if p.is_file()]
    assert not cores, f"core files left: {cores}"
    if case.out:
        assert snapshot(d / case.out) == before, f"{case.out} changed"
