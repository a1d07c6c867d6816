"""Output folders (data_prep/core/outdir.py): own output replaced, everything else refused,
stale leftovers of killed runs cleaned, workers that die with their parent.

The command-line refusals (every command, one sentence, exit 2, --out untouched) are cases of
tests/test_bad_inputs.py; here are the parts that need a successful run or a killed one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from infer_nets import phase_like, write_net

from data_prep.core.errors import UserError
from data_prep.core.outdir import MARKER, check_location, output_dir, read_marker, write_marker
from deadnet_caffe.cli import main


def _dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _stale(parent: Path, name: str, kind: str, marker: bool, state: str = "partial") -> Path:
    """A leftover sibling of ``parent / name`` as a killed run leaves it."""
    p = parent / f".{name}.{kind}-{_dead_pid()}-0123abcd"
    p.mkdir()
    (p / "results.json").write_text("{}\n")
    if marker:
        doc = {"tool": "deadnet-caffe", "command": "classify", "state": state}
        doc.update(pid=_dead_pid(), pid_start="1", files=["results.json"])
        (p / MARKER).write_text(json.dumps(doc))
    return p


def test_own_output_is_replaced_whole_and_marked(tmp_path):
    out = tmp_path / "o"
    with output_dir(out, "classify") as tmp:
        (tmp / "a.txt").write_text("first\n")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("first\n")
        assert not out.exists()  # nothing is visible before the run succeeds
    doc = read_marker(out)
    assert doc["command"] == "classify" and doc["files"] == ["a.txt", "sub/b.txt"]
    with output_dir(out, "classify") as tmp:
        (tmp / "c.txt").write_text("second\n")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no sibling left


def test_failed_run_leaves_earlier_output_and_no_sibling(tmp_path):
    out = tmp_path / "o"
    with output_dir(out, "classify") as tmp:
        (tmp / "a.txt").write_text("first\n")
    with pytest.raises(KeyboardInterrupt), output_dir(out, "classify") as tmp:
        (tmp / "a.txt").write_text("second, never finished\n")
        raise KeyboardInterrupt
    assert (out / "a.txt").read_text() == "first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_missing_parents_made_for_a_failed_run_are_removed(tmp_path):
    with pytest.raises(RuntimeError), output_dir(tmp_path / "x" / "y" / "o", "classify"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "files", "extra", "words"),
    [
        ("dataset", ["a.txt"], None, "holds the output of 'deadnet dataset'"),
        ("classify", ["a.txt"], "notes.txt", "1 file(s) that deadnet classify did not write"),
        (None, [], "notes.txt", "already holds files that deadnet did not write"),
    ],
)
def test_other_folders_are_refused(tmp_path, command, files, extra, words):
    out = tmp_path / "o"
    out.mkdir()
    for f in [*files, *([extra] if extra else [])]:
        (out / f).write_text("mine\n")
    if command:
        (out / MARKER).write_text(
            json.dumps({"tool": "deadnet-caffe", "command": command, "files": files})
        )
    with pytest.raises(UserError, match="--out") as err:
        check_location(out, "classify")
    assert words in str(err.value)


def test_empty_folder_is_used(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with output_dir(out, "simulate") as tmp:
        (tmp / "m.csv").write_text("x\n")
    assert read_marker(out)["command"] == "simulate"


@pytest.mark.parametrize(
    ("out", "inputs", "how"),
    [("in", ["in"], "is"), ("in/o", ["in"], "lies inside"), (".", ["in/a.tif"], "current")],
)
def test_inputs_and_the_current_folder_are_refused(tmp_path, monkeypatch, out, inputs, how):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.tif").write_bytes(b"x")
    with pytest.raises(UserError, match=how):
        check_location(out, "classify", inputs)
    with pytest.raises(UserError, match=r"contains the input in/a\.tif"):
        check_location("in", "classify", ["in/a.tif"])


def test_stale_siblings_of_killed_runs_are_cleaned_only_when_ours(tmp_path):
    out = tmp_path / "o"
    ours = _stale(tmp_path, "o", "partial", marker=True)
    ours_old = _stale(tmp_path, "o", "old", marker=True)  # not a complete output: removed
    unmarked = _stale(tmp_path, "o", "partial", marker=False)
    legacy = tmp_path / ".o.old.12345"  # what the old atomic_dir left: maybe the user's data
    legacy.mkdir()
    other = _stale(tmp_path, "other", "partial", marker=True)  # another output's
    with output_dir(out, "classify") as tmp:
        (tmp / "a.txt").write_text("new\n")
    assert not ours.exists()
    assert unmarked.exists() and legacy.exists() and other.exists()
    assert not ours_old.exists() and (out / "a.txt").is_file()


def test_run_killed_between_the_two_renames_gets_its_output_back(tmp_path):
    out = tmp_path / "o"
    old = _stale(tmp_path, "o", "old", marker=True, state="complete")
    refused = pytest.raises(UserError, match="holds the output of 'deadnet classify'")
    with refused, output_dir(out, "dataset"):
        pass
    assert not old.exists()
    assert json.loads((out / "results.json").read_text()) == {}


def test_live_runs_siblings_are_left_alone(tmp_path):
    out = tmp_path / "o"
    live = tmp_path / f".o.partial-{os.getpid()}-0123abcd"
    live.mkdir()
    write_marker(live, "classify", "partial")  # this process: still running
    with output_dir(out, "classify"):
        pass
    assert live.exists()


def test_classify_rerun_replaces_its_own_output(tmp_path, monkeypatch):
    """The real command: a second run into its own --out replaces it; a user's file in it
    stops the third run, which changes nothing."""
    monkeypatch.chdir(tmp_path)
    Path("net").mkdir()
    write_net(Path("net"))
    Path("img").mkdir()
    tifffile.imwrite("img/a.tif", phase_like(np.random.default_rng(3), 300, 300))
    argv = ["classify", "--model", "net/deploy.prototxt", "--weights", "net/weights.caffemodel"]
    assert main([*argv, "--out", "o", "img/a.tif", "--crops", "centre"]) == 0
    first = json.loads(Path("o/results.json").read_text())
    assert len(first["crops"]) == 1
    assert main([*argv, "--out", "o", "img/a.tif"]) == 0
    second = json.loads(Path("o/results.json").read_text())
    assert len(second["crops"]) > 1  # the grid, not the first run's centre crop
    Path("o/mine.txt").write_text("keep me\n")
    assert main([*argv, "--out", "o", "img/a.tif"]) == 2
    assert Path("o/mine.txt").read_text() == "keep me\n"
    assert json.loads(Path("o/results.json").read_text()) == second


_POOL = """
import multiprocessing, sys, time
from data_prep.core.outdir import die_with_parent
def work(_):
    import os
    print(os.getpid(), flush=True)
    time.sleep(600)
if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(1, die_with_parent) as pool:
        pool.map(work, [0])
"""


def test_pool_workers_die_with_their_parent(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(_POOL)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        state = Path(f"/proc/{worker}/stat").read_text().rsplit(")")[1].split()[0]
        if state == "Z":  # ended, waiting for init to reap it
            break
        time.sleep(0.1)
    alive = Path(f"/proc/{worker}").exists() and (
        Path(f"/proc/{worker}/stat").read_text().rsplit(")")[1].split()[0] != "Z"
    )
    assert not alive, "the pool worker outlived its killed parent"


def test_lock_file_added_by_a_reader_does_not_block_the_rerun(tmp_path):
    """Caffe creates lock.mdb when it reads an LMDB written without one (deadnet dataset
    with --workers 1); that is no user file."""
    out = tmp_path / "ds"
    with output_dir(out, "dataset") as tmp:
        (tmp / "train.lmdb").mkdir()
        (tmp / "train.lmdb" / "data.mdb").write_bytes(b"\0" * 16)
    (out / "train.lmdb" / "lock.mdb").write_bytes(b"\0" * 16)
    with output_dir(out, "dataset") as tmp:
        (tmp / "dataset.json").write_text("{}\n")
    assert (out / "dataset.json").is_file() and not (out / "train.lmdb").exists()
