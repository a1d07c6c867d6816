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

from deadnet_caffe.outdir import write_marker

DEADNET = Path(sys.executable).with_name("deadnet")
NET = "--model net/deploy.prototxt --weights net/weights.caffemodel"


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, what its sentence must name, how to make the input.

    ``argv`` is split on spaces; ``prepare`` (optional) changes the case folder before the
    run; ``out`` is the path whose files and bytes must be unchanged afterwards (``None``: no
    output location in this case); ``needs_non_root`` cases (file permissions) are skipped
    when the tests run as root, whom permissions do not stop.
    """

    id: str
    argv: str
    names: str
    prepare: Callable[[Path], None] | None = None
    out: str | None = None
    needs_non_root: bool = False


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


def _symlink(rel: str, target: str) -> Callable[[Path], None]:
    """A ``prepare`` that makes ``rel`` a symbolic link to ``target``."""
    return lambda d: (d / rel).symlink_to(target)


def _read_only(rel: str) -> Callable[[Path], None]:
    """A ``prepare`` that makes an empty read-only folder ``rel``."""

    def prepare(d: Path) -> None:
        (d / rel).mkdir()
        (d / rel).chmod(0o555)

    return prepare


def _marked(rel: str, command: str, files: list[str], extra: str | None = None):
    """A ``prepare`` that makes ``rel`` look like ``command``'s output holding ``files``
    (plus an unlisted file ``extra``)."""

    def prepare(d: Path) -> None:
        for f in [*files, *([extra] if extra else [])]:
            (d / rel / f).parent.mkdir(parents=True, exist_ok=True)
            (d / rel / f).write_text("x\n")
        write_marker(d / rel, command, "complete", files)

    return prepare


_INPUT = (
    'name: "bad"\nlayer { name: "data" type: "Input" top: "data"\n'
    "  input_param { shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }\n"
)

CASES = [
    # ---- missing inputs ----------------------------------------------------------------
    Case("classify-missing-image", f"classify {NET} --out o nothere.tif", "nothere.tif"),
    Case("heatmap-missing-weights",
         "heatmap --model net/deploy.prototxt --weights nothere.caffemodel --out o img/a.tif",
         "nothere.caffemodel"),
    # ---- output locations (--out, --run, --db) -------------------------------------------
    Case("classify-out-unrelated-folder", f"classify {NET} --out keep img/a.tif", "keep",
         out="keep"),
    Case("classify-out-is-input-folder", f"classify {NET} --out img img", "img", out="img"),
    Case("classify-out-contains-input", f"classify {NET} --out img img/a.tif", "img", out="img"),
    Case("classify-out-inside-input", f"classify {NET} --out img/o img", "img/o", out="img"),
    Case("classify-out-contains-weights", f"classify {NET} --out net img/a.tif", "net",
         out="net"),
    Case("classify-out-is-a-file", f"classify {NET} --out keep/notes.txt img/a.tif",
         "keep/notes.txt", out="keep"),
    Case("classify-out-under-a-file", f"classify {NET} --out keep/notes.txt/o img/a.tif",
         "keep/notes.txt/o", out="keep"),
    Case("classify-out-dot", f"classify {NET} --out . img/a.tif", "--out .", out="."),
    Case("classify-out-parent", f"classify {NET} --out .. img/a.tif", "--out .."),
    Case("classify-out-symlink", f"classify {NET} --out link img/a.tif", "link",
         _symlink("link", "keep"), out="keep"),
    Case("classify-out-read-only-fs", f"classify {NET} --out /sys/deadnet-o img/a.tif",
         "/sys/deadnet-o"),
    Case("classify-out-read-only-folder", f"classify {NET} --out ro/o img/a.tif", "ro/o",
         _read_only("ro"), out="ro", needs_non_root=True),
    Case("classify-out-of-another-command", f"classify {NET} --out o img/a.tif", "o",
         _marked("o", "dataset", ["train.lmdb/data.mdb"]), out="o"),
    Case("classify-out-own-with-user-file", f"classify {NET} --out o img/a.tif", "o",
         _marked("o", "classify", ["images.csv"], extra="my-notes.txt"), out="o"),
    Case("heatmap-out-is-experiment", f"heatmap {NET} --experiment exp --out exp", "exp",
         out="exp"),
    Case("report-out-inside-experiment", f"report {NET} --experiment exp --out exp/report",
         "exp/report", out="exp"),
    Case("dataset-out-is-experiment", "dataset A --experiment exp --out exp", "exp", out="exp"),
    Case("dataset-out-unrelated-folder", "dataset A --experiment exp --out keep", "keep",
         out="keep"),
    Case("simulate-out-unrelated-folder", "simulate --preset tiny --out keep", "keep",
         out="keep"),
    Case("simulate-out-is-a-file", "simulate --preset tiny --out keep/notes.txt",
         "keep/notes.txt", out="keep"),
    Case("gradcam-out-contains-weights", f"gradcam {NET} --dataset exp --out net", "net",
         out="net"),
    Case("classmodel-out-unrelated-folder", f"classmodel {NET} --out keep", "keep", out="keep"),
    Case("evaluate-out-contains-weights",
         "evaluate --weights net/weights.caffemodel --dataset exp --net net/deploy.prototxt "
         "--out net", "net", out="net"),
    Case("demo-out-unrelated-folder", "demo --preset tiny --out keep", "keep", out="keep"),
    Case("bench-out-unrelated-folder", "bench --quick --only simulate --out keep", "keep",
         out="keep"),
    Case("train-run-is-a-file", "train --dataset exp --solver net/deploy.prototxt "
         "--run keep/notes.txt", "keep/notes.txt", out="keep"),
    Case("train-run-unrelated-folder", "train --dataset exp --solver net/deploy.prototxt "
         "--run keep", "keep", out="keep"),
    Case("train-run-is-dataset", "train --dataset exp --solver net/deploy.prototxt --run exp",
         "exp", out="exp"),
    Case("annotate-export-into-folder", "annotate export --db votes.sqlite --out keep",
         "keep", _write("votes.sqlite", b""), out="keep"),
    Case("annotate-export-over-a-file", "annotate export --db votes.sqlite --out keep/notes.txt",
         "keep/notes.txt", _write("votes.sqlite", b""), out="keep"),
    Case("annotate-db-not-a-database", "annotate export --db keep/notes.txt --out v.csv",
         "keep/notes.txt", out="keep"),
    Case("annotate-add-db-not-a-database", "annotate add-annotator ann --db keep/notes.txt",
         "keep/notes.txt", out="keep"),
    Case("annotate-db-is-a-folder", "annotate export --db keep --out v.csv", "keep",
         out="keep"),
    # ---- Caffe aborts become sentences (isolated children, no core file) -----------------
    Case("train-gpu-without-gpu", "train --dataset exp --solver net/deploy.prototxt --run r "
         "--gpu 0", "--gpu 0", out="r"),
    Case("heatmap-gpu-without-gpu", f"heatmap {NET} --gpu 0 --out o img/a.tif", "--gpu 0",
         out="o"),
    Case("gradcam-gpu-without-gpu", f"gradcam {NET} --gpu 0 --dataset exp --out o", "--gpu 0",
         out="o"),
    Case("describe-unknown-layer-type", "describe bad.prototxt", "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "x" type: "NoSuchLayer" bottom: "data" '
                'top: "x" }\n')),
    Case("describe-unknown-bottom", "describe bad.prototxt", "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "r" type: "ReLU" bottom: "nowhere" '
                'top: "r" }\n')),
    Case("classify-unknown-layer-type",
         "classify --model bad.prototxt --weights net/weights.caffemodel --out o img/a.tif",
         "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "x" type: "NoSuchLayer" bottom: "data" '
                'top: "x" }\n'), out="o"),
    Case("classify-unknown-bottom",
         "classify --model bad.prototxt --weights net/weights.caffemodel --out o img/a.tif",
         "bad.prototxt",
         _write("bad.prototxt", _INPUT + 'layer { name: "r" type: "ReLU" bottom: "nowhere" '
                'top: "r" }\n'), out="o"),
    Case("describe-size-zero", "describe net/deploy.prototxt --size 0 0", "--size 0 0"),
    Case("describe-size-too-small", "describe net/deploy.prototxt --size 4 4", "--size 4 4"),
    # ---- images and TIFFs -----------------------------------------------------------------
    # ---- weights, prototxts, LMDBs ---------------------------------------------------------
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
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("root is not stopped by file permissions")
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
