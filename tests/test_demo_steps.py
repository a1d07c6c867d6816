"""The demo's steps (deadnet_caffe.demo): the cache (reuse, a changed call, an older demo's
stamp), the child process of Caffe steps, and the resumed fine-tuning step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from data_prep.core.errors import UserError
from deadnet_caffe import demo
from deadnet_caffe.demo import STAMP, Step, code_digest, resumed, run_step
from deadnet_caffe.train import TrainSettings


def write_note(out: Path, text: str, progress: bool | None = None) -> None:
    """A step's library call: writes OUT/note.txt (and OUT/progress.txt: what it was given)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "note.txt").write_text(text)
    (out / "progress.txt").write_text(repr(progress))


def abort(out: Path, progress: bool | None = None) -> None:
    """A step that dies as a failed Caffe CHECK does: SIGABRT."""
    os.abort()


def refuse(out: Path, progress: bool | None = None) -> None:
    raise UserError(f"{out}: refused.")


def _step(out: Path, text: str, isolate: bool = False) -> Step:
    return Step("note", "write a note", out, write_note, lambda: {"out": out, "text": text},
                isolate)  # fmt: skip


def test_a_changed_call_remakes_the_step_and_a_same_one_reuses_it(tmp_path):
    out = tmp_path / "step"
    out.mkdir()
    (out / "old-output.txt").write_text("made by an earlier call\n")
    # an older demo's stamp recorded a command line: it matches no step, which is made again
    (out / STAMP).write_text(json.dumps({"argv": ["describe", "other"], "seconds": 1.0}))
    lines: list[str] = []

    first = run_step(_step(out, "one"), lines.append, progress=False)
    assert first["cached"] is False
    assert first["key"] == {
        "call": "test_demo_steps.write_note",
        "kwargs": {"out": str(out), "text": "one"},
        "code": code_digest(),
    }
    assert not (out / "old-output.txt").exists()  # the earlier output went
    assert (out / "note.txt").read_text() == "one"
    assert (out / "progress.txt").read_text() == "False"
    assert json.loads((out / STAMP).read_text())["key"] == first["key"]
    assert any("the call, an input or the code changed" in line for line in lines)
    assert lines[-1] == f"[demo] note: wrote {out} in {first['seconds']:.0f} s"

    again = run_step(_step(out, "one"), lines.append)
    assert again["cached"] is True and again["seconds"] == first["seconds"]
    assert lines[-1].startswith("[demo] note: reusing")

    changed = run_step(_step(out, "two"), lines.append)
    assert changed["cached"] is False and (out / "note.txt").read_text() == "two"

    # after an earlier step ran again, the same call is not enough to reuse it
    forced = run_step(_step(out, "two"), lines.append, reuse=False)
    assert forced["cached"] is False
    assert any("an input or the code changed" in line for line in lines[-4:])


def test_a_step_made_by_other_code_is_made_again(tmp_path, monkeypatch):
    out = tmp_path / "step"
    assert run_step(_step(out, "one"), lambda _: None)["cached"] is False
    assert run_step(_step(out, "one"), lambda _: None)["cached"] is True
    monkeypatch.setattr(demo, "code_digest", lambda: "0" * 64)  # an upgrade or a fix
    lines: list[str] = []
    assert run_step(_step(out, "one"), lines.append)["cached"] is False
    assert "the call, an input or the code changed" in lines[0]
    assert json.loads((out / STAMP).read_text())["key"]["code"] == "0" * 64


def test_the_code_digest_follows_sources_and_prototxts_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "net.prototxt").write_text('name: "n"\n')
    first = code_digest((pkg,))
    (pkg / "README.md").write_text("docs change nothing\n")
    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert code_digest((pkg,)) == first
    (pkg / "sub" / "net.prototxt").write_text('name: "m"\n')
    second = code_digest((pkg,))
    assert second != first
    (pkg / "a.py").rename(pkg / "b.py")  # the same bytes under another name
    assert code_digest((pkg,)) not in (first, second)
    assert len(code_digest()) == 64 and code_digest() == code_digest()


def test_an_isolated_step_runs_in_a_child_and_its_abort_is_one_failed_step(tmp_path):
    out = tmp_path / "child"
    doc = run_step(_step(out, "from a child", isolate=True), lambda _: None, progress=True)
    assert doc["cached"] is False and (out / "note.txt").read_text() == "from a child"
    assert (out / "progress.txt").read_text() == "True"

    for fn, how in ((abort, "signal SIGABRT"), (refuse, "exit 2")):
        bad = tmp_path / fn.__name__
        step = Step(fn.__name__, "fail", bad, fn, lambda bad=bad: {"out": bad}, isolate=True)
        with pytest.raises(UserError, match=f"step {fn.__name__} failed \\({how}\\)"):
            run_step(step, lambda _: None)
        assert not (bad / STAMP).exists()  # a rerun retries it


def test_an_interrupted_fine_tuning_step_resumes_without_its_start_weights(tmp_path):
    run = tmp_path / "train"
    s = TrainSettings(dataset="ds", solver="solver.prototxt", run=str(run), weights="a.caffemodel")
    assert resumed(s) == s  # no run folder yet: a fresh start from the weights
    run.mkdir()
    assert resumed(s) == s  # a run folder without a solverstate starts afresh too
    (run / "snap_iter_90.solverstate").write_bytes(b"")
    assert (resumed(s).resume, resumed(s).weights) == (True, None)
    (run / STAMP).write_text("{}")
    assert resumed(s) == s  # a finished step is not resumed


@pytest.mark.parametrize("own_a", [False, True])
def test_both_demos_deploy_nets_with_re_estimated_statistics(tmp_path, own_a, monkeypatch):
    """Every heat map, Grad-CAM, class model and report of either demo uses weights whose
    BatchNorm statistics a bnstats step re-estimated from the weights that were trained."""
    from types import SimpleNamespace

    held = SimpleNamespace(path=tmp_path / "held.tif", frame_interval_min=48.0)
    monkeypatch.setattr(demo, "_heldout_position", lambda exp, split: held)
    weights_a = tmp_path / "demo" / "train" / "latest.caffemodel"
    if not own_a:
        weights_a.parent.mkdir(parents=True)
        weights_a.write_bytes(b"A weights")
    for dataset in ("A", "B"):
        out = tmp_path / f"demo-{dataset}"
        cfg = demo.DemoConfig(out=out, dataset=dataset,
                              pretrained=weights_a if dataset == "B" else None)  # fmt: skip
        steps = {s.name: s for s in demo.plan(cfg)}
        made = {s.out / "weights.caffemodel": s.kwargs()["s"].weights
                for s in steps.values() if s.fn is demo.write_bnstats}  # fmt: skip
        trained = {out / "train" / "latest.caffemodel"}
        if dataset == "B":
            trained.add(out / "train_A" / "latest.caffemodel" if own_a else weights_a)
        assert set(made.values()) == trained
        unlisted = {s.kwargs()["s"].unlisted for s in steps.values() if s.fn is demo.write_bnstats}
        assert unlisted == {dataset == "B"}  # B's own positions are mostly healthy
        making = ("simulate", "dataset", "dataset_A", "train", "train_A", "bnstats", "bnstats_A")
        deployed = [s for s in steps.values() if s.name not in (*making, "evaluate")]
        assert len(deployed) == (4 if dataset == "A" else 2)
        for s in deployed:
            args = s.kwargs()
            run = args.get("s") or args.get("r")
            assert run.weights in made, s.name
        # report_A deploys the A net: its statistics come from the A weights
        if dataset == "B":
            b_weights = out / "train" / "latest.caffemodel"
            assert made[steps["report_A"].kwargs()["s"].weights] != b_weights
