"""deadnet train: a real Caffe solver on tiny LMDBs; run folder, loss, resume, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import caffe_tiny
import numpy as np
import pytest

from data_prep.core import paper
from deadnet_caffe.cli import main
from deadnet_caffe.logparse import parse_log
from deadnet_caffe.train import TrainSettings, snapshots, train, usable_snapshots

ROOT = Path(__file__).resolve().parent.parent


def _weights(caffemodel: Path, net: Path) -> dict[str, list[np.ndarray]]:
    import caffe

    n = caffe.Net(str(net), str(caffemodel), caffe.TEST)
    return {k: [b.data.copy() for b in v] for k, v in n.params.items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 60-iteration run of the tiny net (shared by the tests that only read it)."""
    tmp = tmp_path_factory.mktemp("train")
    ds = caffe_tiny.write_dataset(tmp / "ds", 64, 16)
    solver = caffe_tiny.write_solver(tmp / "net")
    published = solver.read_text()
    run = tmp / "run"
    rc = main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run),
               "--seed", "3", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert solver.read_text() == published  # the published files stay untouched
    return run, ds


def test_run_folder_holds_everything(trained):
    run, ds = trained
    names = {p.name for p in run.iterdir()}
    assert {"solver.prototxt", "train_val.prototxt", "settings.json", "caffe.log", "curves.csv",
            "figure3a_loss.png", "figure3b_accuracy.png", "latest.caffemodel"} <= names  # fmt: skip
    assert "published_iter_60.caffemodel" in names and "published_iter_60.solverstate" in names
    assert os.readlink(run / "latest.caffemodel") == "published_iter_60.caffemodel"
    solver = (run / "solver.prototxt").read_text()
    assert "solver_mode: CPU" in solver and "random_seed: 3" in solver
    net = (run / "train_val.prototxt").read_text()
    assert f'source: "{(ds / "train.lmdb").resolve()}"' in net
    assert f'source: "{(ds / "test.lmdb").resolve()}"' in net


def test_training_lowers_the_loss(trained):
    log = parse_log(trained[0] / "caffe.log")
    iters = sorted(log.train_loss)
    first = np.mean([log.train_loss[i] for i in iters[:10]])
    last = np.mean([log.train_loss[i] for i in iters[-10:]])
    assert last < 0.5 * first
    assert log.test[60]["accuracy"] >= 0.9  # stripes are easy; chance is 0.5


def test_log_parser_reads_the_real_log(trained):
    """Known answers: display 1 -> one loss per iteration; lr follows Caffe's 'inv' policy."""
    log = parse_log(trained[0] / "caffe.log")
    assert sorted(log.train_loss) == list(range(61))
    assert sorted(log.test) == [0, 20, 40, 60]  # test_interval 20, plus iteration 0
    assert set(log.test[0]) == {"accuracy", "loss"}
    assert log.max_iter == 60 and log.sessions == 1
    for it, lr in log.lr.items():
        expected = 0.01 * (1 + paper.LR_GAMMA * it) ** -paper.LR_POWER
        assert lr == pytest.approx(expected, rel=1e-5)
    rows = (trained[0] / "curves.csv").read_text().splitlines()
    assert rows[0] == "iteration,train_loss,lr,test_loss,test_accuracy"
    assert len(rows) == 62


def test_resume_matches_an_uninterrupted_run(tmp_path):
    """Stop at 10, resume to 20: same iteration and bit-identical weights as 0 -> 20.

    Caffe's solverstate holds the weights, the momentum history and the iteration, but not
    its random-number stream or the Data layer's read position. So bit-identity after a
    resume holds for nets whose later iterations use neither: here the LMDB holds exactly one
    batch, crop_size equals the stored side and there is no Dropout. With random crops or
    Dropout only the iteration and the restored weights are the same (checked below).
    """
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 8)
    solver = caffe_tiny.write_solver(tmp_path / "net", batch=8, dropout=False,
                                     crop=caffe_tiny.SIDE)  # fmt: skip
    common = dict(dataset=str(ds), solver=str(solver), seed=7, snapshot_interval=10)
    train(TrainSettings(run=str(tmp_path / "whole"), max_iter=20, **common), progress=False)
    train(TrainSettings(run=str(tmp_path / "part"), max_iter=10, **common), progress=False)
    res = train(TrainSettings(run=str(tmp_path / "part"), max_iter=20, resume=True,
                              dataset=None, solver=None), progress=False)  # fmt: skip
    assert res.iteration == 20
    assert [i for i, _ in snapshots(tmp_path / "part")] == [10, 20]
    assert (
        "Resuming from published_iter_10.solverstate" in (tmp_path / "part/caffe.log").read_text()
    )
    deploy = tmp_path / "net" / "deploy.prototxt"
    deploy.write_text(caffe_tiny.deploy(crop=caffe_tiny.SIDE))
    for it in (10, 20):
        a = _weights(tmp_path / f"whole/published_iter_{it}.caffemodel", deploy)
        b = _weights(tmp_path / f"part/published_iter_{it}.caffemodel", deploy)
        for layer in a:
            for x, y in zip(a[layer], b[layer], strict=True):
                np.testing.assert_array_equal(x, y)


def test_sigterm_snapshots_and_resume_continues(tmp_path):
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 64, 16)
    solver = caffe_tiny.write_solver(tmp_path / "net")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "deadnet_caffe", "train", "--dataset", str(ds),
           "--solver", str(solver), "--run", str(run), "--max-iter", "10000000",
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    log = run / "caffe.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait for training to be under way
        if log.is_file() and "Iteration 2000," in log.read_text(errors="replace"):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    states = snapshots(run)
    stopped_at = states[-1][0]
    assert stopped_at >= 2000 and f"iteration {stopped_at}" in err
    assert "Optimization stopped early." in log.read_text()
    assert os.readlink(run / "latest.caffemodel") == f"published_iter_{stopped_at}.caffemodel"
    rc = main(["train", "--run", str(run), "--resume", "--max-iter", str(stopped_at + 30),
               "--no-progress"])  # fmt: skip
    assert rc == 0
    assert snapshots(run)[-1][0] == stopped_at + 30
    parsed = parse_log(log)
    assert parsed.sessions == 2 and parsed.max_iter == stopped_at + 30
    assert f"Resuming from published_iter_{stopped_at}.solverstate" in log.read_text()
    # display 10: the resumed session logs the next multiple of 10 after the stop
    assert min(i for i in parsed.train_loss if i > stopped_at) == (stopped_at // 10 + 1) * 10


def test_bad_input_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    solver = caffe_tiny.write_solver(tmp_path / "net")
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(tmp_path / "nope"), "--solver", str(solver),
               "--run", str(run)])  # fmt: skip
    assert rc == 2 and not run.exists()
    assert "nope/train.lmdb is not an LMDB" in capsys.readouterr().err
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 8)
    big = tmp_path / "big"
    big.mkdir()
    (big / "train_val.prototxt").write_text(caffe_tiny.train_val(crop=caffe_tiny.SIDE + 4))
    (big / "solver.prototxt").write_text(solver.read_text())
    rc = main(["train", "--dataset", str(ds), "--solver", str(big / "solver.prototxt"),
               "--run", str(run)])  # fmt: skip
    assert rc == 2 and not run.exists()
    assert "smaller than the crop_size 20" in capsys.readouterr().err
    run.mkdir()
    (run / "x").write_text("")
    rc = main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run)])
    assert rc == 2 and "already holds files that deadnet did not write" in capsys.readouterr().err
    assert [p.name for p in run.iterdir()] == ["x"]


@pytest.mark.slow
def test_published_net_few_iterations_give_a_loadable_caffemodel(tmp_path):
    """Two iterations of prototxt/dataset_a (batch 20, 220 px crops of 256 px records)."""
    import caffe

    ds = caffe_tiny.write_dataset(tmp_path / "ds", 20, 20, side=paper.CROP_PX)
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(ds), "--solver",
               str(ROOT / "prototxt/dataset_a/solver.prototxt"), "--run", str(run),
               "--max-iter", "2", "--test-iter", "1", "--seed", "1", "--no-progress"])  # fmt: skip
    assert rc == 0
    latest = run / "latest.caffemodel"
    assert os.readlink(latest) == "deadnet_a_iter_2.caffemodel"
    assert (run / "deadnet_a_iter_2.solverstate").is_file()
    net = caffe.Net(str(ROOT / "prototxt/deploy.prototxt"), str(latest), caffe.TEST)
    assert net.params["conv_d1_1"][0].data.shape == (16, 1, 9, 9)
    assert net.params["score"][0].data.shape == (2, 512)
    assert np.isfinite(net.params["fc1"][0].data).all()
    assert parse_log(run / "caffe.log").max_iter == 2


def test_figures_redraws_from_the_log(trained, tmp_path, capsys):
    run = trained[0]
    before = (run / "curves.csv").read_text()
    (run / "figure3a_loss.png").unlink()
    (run / "curves.csv").unlink()
    assert main(["figures", "--run", str(run)]) == 0
    assert (run / "curves.csv").read_text() == before
    assert (run / "figure3a_loss.png").stat().st_size > 0
    assert main(["figures", "--run", str(run), "--figure-format", "svg,pdf"]) == 0
    assert b"<svg" in (run / "figure3b_accuracy.svg").read_bytes()[:1000]
    assert (run / "figure3a_loss.pdf").read_bytes()[:5] == b"%PDF-"
    assert main(["figures", "--run", str(tmp_path)]) == 2
    assert "caffe.log does not exist" in capsys.readouterr().err


def test_caffe_cpu_is_deterministic_given_random_seed(tmp_path):
    """Random crops and Dropout included: two runs of one seed give identical weights."""
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 64, 16)
    solver = caffe_tiny.write_solver(tmp_path / "net")
    for name in ("a", "b"):
        train(TrainSettings(dataset=str(ds), solver=str(solver), run=str(tmp_path / name),
                            max_iter=20, seed=11), progress=False)  # fmt: skip
    deploy = tmp_path / "net" / "deploy.prototxt"
    a = _weights(tmp_path / "a/published_iter_20.caffemodel", deploy)
    b = _weights(tmp_path / "b/published_iter_20.caffemodel", deploy)
    for layer in a:
        for x, y in zip(a[layer], b[layer], strict=True):
            np.testing.assert_array_equal(x, y)


def test_caffe_failure_is_quoted_and_leaves_no_run(tmp_path, capsys):
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 8)
    solver = caffe_tiny.write_solver(tmp_path / "net")
    net = tmp_path / "net" / "train_val.prototxt"
    # an axis that only Caffe checks (deadnet_caffe.checks refuses unknown bottoms earlier)
    net.write_text(net.read_text().replace("{ num_output: 8", "{ axis: 7 num_output: 8"))
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run),
               "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and not run.exists()
    assert "axis 7 out of range" in err and "the run folder was removed" in err
    rc = main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run),
               "--gpu", "99"])  # fmt: skip
    assert rc == 2 and not run.exists()
    assert "--gpu 99 was asked for" in capsys.readouterr().err


def _caffe_in(run: Path) -> list[int]:
    """Ids of live processes (the caffe tool) whose working folder is ``run``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == str(run):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                found += [int(proc.name)] if state != "Z" else []
        except OSError:
            continue
    return found


def _wait_for(cond, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "training did not get that far"
        time.sleep(0.05)


def _log_has(run: Path, text: str):
    return lambda: (
        (run / "caffe.log").is_file() and text in (run / "caffe.log").read_text(errors="replace")
    )


@pytest.mark.parametrize("moment", ["sigint-at-start", "double-sigint", "sigkill", "sigkill-late"])
def test_interrupted_run_resumes_or_starts_afresh(tmp_path, moment):
    """Ctrl-C (once or twice) or SIGKILL at any moment: following what the message says (or,
    after SIGKILL, rerunning the same command) finishes the run with no manual clean-up.

    Caffe writes no snapshot at iteration 0, so a stop before the first training iteration
    leaves none: the same command then starts afresh. Later stops leave snapshots and
    --resume continues. The caffe tool never outlives ``deadnet train``.
    """
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 64, 16)
    solver = caffe_tiny.write_solver(tmp_path / "net")
    run = tmp_path / "run"
    base = [sys.executable, "-m", "deadnet_caffe", "train", "--dataset", str(ds),
            "--solver", str(solver), "--run", str(run), "--snapshot-interval", "100",
            "--no-progress"]  # fmt: skip
    proc = subprocess.Popen([*base, "--max-iter", "100000000"], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    if moment == "sigint-at-start":
        _wait_for(run.is_dir)
        proc.send_signal(signal.SIGINT)
    elif moment == "sigkill-late":
        _wait_for(_log_has(run, "Iteration 250,"))
        proc.kill()
    else:
        _wait_for(_log_has(run, "Solving"))
        if moment == "double-sigint":
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        else:
            proc.kill()
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    _wait_for(lambda: not _caffe_in(run), 20)
    if moment.startswith("sigkill"):
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130
        assert "afresh" in err or "--resume" in err, err
    # Whether a snapshot was left depends on how far Caffe got: the first Ctrl-C of a double
    # one makes Caffe snapshot before the second can kill it, when it is quick enough.
    left = usable_snapshots(run)
    assert bool(left) == (moment == "sigkill-late") or moment in ("double-sigint", "sigkill")
    # Caffe may have run ahead of the log by what the pipe buffers: finish past its snapshots
    target = str(max([300, *(i + 100 for i, _ in left)]))
    again = subprocess.run([*base, "--max-iter", target], cwd=ROOT, capture_output=True,
                           text=True)  # fmt: skip
    if left:  # the sentence says to resume, and --resume does
        assert again.returncode == 2 and "pass --resume" in again.stderr, again.stderr
        again = subprocess.run([*base, "--max-iter", target, "--resume"], cwd=ROOT,
                               capture_output=True, text=True)  # fmt: skip
        assert "Resuming from published_iter_" in (run / "caffe.log").read_text()
    else:
        assert "starts afresh" in again.stderr, again.stderr
    assert again.returncode == 0, again.stderr
    assert snapshots(run)[-1][0] == int(target)


def test_resume_skips_a_snapshot_truncated_by_a_kill(tmp_path, capsys):
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 8)
    solver = caffe_tiny.write_solver(tmp_path / "net")
    run = tmp_path / "run"
    train(TrainSettings(dataset=str(ds), solver=str(solver), run=str(run), max_iter=20,
                        snapshot_interval=10), progress=False)  # fmt: skip
    state = run / "published_iter_20.solverstate"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    res = train(TrainSettings(dataset=None, solver=None, run=str(run), max_iter=30,
                              resume=True), progress=False)  # fmt: skip
    assert "removed published_iter_20.solverstate" in capsys.readouterr().out
    assert "Resuming from published_iter_10.solverstate" in (run / "caffe.log").read_text()
    assert res.iteration == 30
    assert [i for i, _ in snapshots(run)] == [10, 20, 30]


def test_fine_tuning_starts_from_the_given_weights(trained, tmp_path):
    """--weights W (Caffe's -weights): iteration 0's loss is W's loss on that batch (pycaffe,
    TRAIN phase), and the layers copied by name keep W's weights (base_lr 0: the one update
    changes nothing); a renamed layer is not copied but filled anew."""
    import caffe

    w = trained[0] / "latest.caffemodel"
    old = _weights(w, trained[0] / "train_val.prototxt")
    # one batch of stored crops as large as the net's input: no random crop, no dropout
    ds = caffe_tiny.write_dataset(tmp_path / "ds", 8, 8, seed=5, side=caffe_tiny.CROP)
    for name, new_name in (("same", "score"), ("renamed", "new")):
        folder = tmp_path / name
        caffe_tiny.write_solver(folder, batch=8, dropout=False)
        text = (folder / "train_val.prototxt").read_text()
        (folder / "train_val.prototxt").write_text(
            text.replace('"score" type', f'"{new_name}" type')
        )
        run = tmp_path / f"run_{name}"
        rc = main(["train", "--dataset", str(ds), "--solver", str(folder / "solver.prototxt"),
                   "--run", str(run), "--weights", str(w), "--max-iter", "1", "--base-lr", "0",
                   "--seed", "2", "--no-progress"])  # fmt: skip
        assert rc == 0
        assert f"Finetuning from {w.resolve()}" in (run / "caffe.log").read_text()
        got = parse_log(run / "caffe.log").train_loss[0]
        after = caffe.Net(str(run / "train_val.prototxt"), str(run / "latest.caffemodel"),
                          caffe.TEST)  # fmt: skip
        for layer in ("conv1", "scale1", "fc1"):
            for x, y in zip(old[layer], after.params[layer], strict=True):
                np.testing.assert_array_equal(x, y.data)
        ref = caffe.Net(str(run / "train_val.prototxt"), caffe.TRAIN)
        ref.copy_from(str(w))
        if name == "same":
            np.testing.assert_array_equal(old["score"][0], after.params["score"][0].data)
            assert got == pytest.approx(float(ref.forward()["loss"]), rel=1e-4)
        else:
            assert not np.array_equal(old["score"][0], after.params["new"][0].data)
            for i in (0, 1):
                ref.params["new"][i].data[...] = after.params["new"][i].data
            assert got == pytest.approx(float(ref.forward()["loss"]), rel=1e-4)


def test_fine_tuning_bad_weights_and_paper_iterations(trained, tmp_path, capsys):
    ds, solver = trained[1], caffe_tiny.write_solver(tmp_path / "net")
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run),
               "--weights", str(tmp_path / "no.caffemodel")])  # fmt: skip
    assert rc == 2 and not run.exists()
    assert "--weights: " in capsys.readouterr().err
    rc = main(["train", "--dataset", str(ds), "--solver", str(solver), "--run", str(run),
               "--paper-iterations", "--max-iter", "5"])  # fmt: skip
    assert rc == 2 and not run.exists()
    assert "--paper-iterations" in capsys.readouterr().err
    from deadnet_caffe.train import prepare

    s = TrainSettings(dataset=str(ds), solver=str(solver), run=str(run), paper_iterations=True)
    assert prepare(s)[2] == paper.MAX_ITER_PAPER == 500_000
