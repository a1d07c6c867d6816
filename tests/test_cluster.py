"""report and heatmap on a real Dask cluster: a ``dask scheduler`` and two ``dask worker``
processes (the distributed command-line tools) on loopback, started by the fixture below.

Known answers come from the local run of the same command (exact heat maps are a pure
function of frame and weights), so the Dask outputs must equal it byte for byte, apart from
settings.json (it records the options) and the output marker (it records the process).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from infer_nets import deadnet_deploy, write_net

from data_prep.core.outdir import MARKER
from deadnet_caffe.benchmarks.caffe_speed import caffe_threads
from deadnet_caffe.cli import main
from deadnet_caffe.cluster import net_loads

BIN = Path(sys.executable).parent
NOT_COMPARED = {"settings.json", MARKER}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start a process in its own session, so that teardown can kill it and its children."""
    with log.open("w") as fh:
        return subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """``tcp://127.0.0.1:PORT`` of a scheduler with two single-threaded workers."""
    from distributed import Client

    d = tmp_path_factory.mktemp("dask")
    env = {**os.environ, "GLOG_minloglevel": "2", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(BIN / "dask")
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    procs = [_start(scheduler, d / "scheduler.log", env)]
    try:
        for i in range(2):
            worker = [dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name",
                      f"w{i}", "--local-directory", str(d / f"w{i}")]  # fmt: skip
            procs.append(_start(worker, d / f"worker{i}.log", env))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for p in procs:  # each in its own session: the group holds its children too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny simulated experiment (4 positions, 3 frames of 512 x 384) and a tiny net."""
    d = tmp_path_factory.mktemp("exp")
    argv = ["simulate", "--preset", "tiny", "--size", "512", "384", "--render-every", "54"]
    assert main([*argv, "--no-votes", "--no-progress", "--out", str(d / "exp")]) == 0
    model, weights = write_net(d)
    return d / "exp", model, weights


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in NOT_COMPARED
    }


def _report(experiment, out: Path, *extra: str) -> list[str]:
    exp, model, weights = experiment
    net = ["--model", str(model), "--weights", str(weights)]
    opts = ["--stride", "32", "--gradcam-crops", "2"]
    return ["report", "--experiment", str(exp), *net, "--out", str(out), *opts, *extra]


@pytest.fixture(scope="module")
def local_report(experiment, tmp_path_factory):
    """The local run, Caffe's BLAS on one thread like each worker (MKL's GEMM rounds by
    thread count: about 3e-8 in P(sick) otherwise; docs/scale.md)."""
    out = tmp_path_factory.mktemp("local") / "report"
    with caffe_threads(1):
        assert main(_report(experiment, out)) == 0
    return _files(out)


def test_report_on_dask_equals_local(cluster, experiment, local_report, tmp_path, capsys):
    from distributed import Client

    out = tmp_path / "report"
    assert main(_report(experiment, out, "--scheduler", cluster, "--chunk-frames", "2")) == 0
    assert "0 of 4 positions reused" in capsys.readouterr().out
    got = _files(out)
    assert any(n.startswith("maps/") for n in local_report)  # the kept maps are compared too
    assert sorted(got) == sorted(local_report)
    for name, data in local_report.items():
        assert got[name] == data, f"{name} differs from the local run"
    assert not (tmp_path / "report.dask-work").exists()  # the work folder is removed
    with Client(cluster) as client:  # each worker built the net once (one thread each)
        loads = client.run(net_loads)
    assert all(max(n.values(), default=1) == 1 for n in loads.values()), loads


@pytest.mark.parametrize("mode", ["exact", "dense"])
def test_heatmap_on_dask_equals_local(cluster, experiment, tmp_path, mode):
    exp, model, weights = experiment
    fcn = tmp_path / "fcn.prototxt"
    fcn.write_text(deadnet_deploy(fully_conv=True))
    args = ["heatmap", "--experiment", str(exp), "--model", str(model), "--weights",
            str(weights), "--stride", "64", "--every", "2", "--mode", mode,
            "--dense-model", str(fcn)]  # fmt: skip
    with caffe_threads(1):
        assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "dask"), "--scheduler", cluster]) == 0
    local, dask = _files(tmp_path / "local"), _files(tmp_path / "dask")
    assert sorted(local) == sorted(dask) and any(n.endswith("_prob.tif") for n in local)
    assert all(local[n] == dask[n] for n in local), [n for n in local if local[n] != dask[n]]


def test_heatmap_of_loose_channel_stack_on_dask_equals_local(cluster, experiment, tmp_path):
    """A loose two-channel TIFF (axes TCYX) with --channel 1: the workers read the channel
    the client names, as the local run does."""
    import numpy as np
    import tifffile

    exp, model, weights = experiment
    frames = tifffile.imread(next(iter(sorted((exp / "images").iterdir()))))
    two = np.stack([np.zeros_like(frames), frames], axis=1)  # (T, 2, H, W); channel 0 blank
    stack = tmp_path / "two.tif"
    tifffile.imwrite(stack, two, imagej=True, metadata={"axes": "TCYX"})
    args = ["heatmap", str(stack), "--channel", "1", "--model", str(model), "--weights",
            str(weights), "--stride", "64"]  # fmt: skip
    with caffe_threads(1):
        assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "dask"), "--scheduler", cluster]) == 0
    local, dask = _files(tmp_path / "local"), _files(tmp_path / "dask")
    assert sorted(local) == sorted(dask) and "two_prob.tif" in local
    assert all(local[n] == dask[n] for n in local), [n for n in local if local[n] != dask[n]]
    probs = tifffile.imread(tmp_path / "dask" / "two_prob.tif")
    assert probs.shape == (len(frames), *frames.shape[1:])


def test_worker_killed_mid_run(cluster, experiment, local_report, tmp_path):
    """SIGKILL the worker running a task: the run completes and equals the local run."""
    from distributed import Client

    out = tmp_path / "report"
    argv = [str(BIN / "deadnet"), *_report(experiment, out, "--scheduler", cluster,
                                           "--chunk-frames", "1")]  # fmt: skip
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with Client(cluster) as c:
            deadline = time.monotonic() + 120
            while not any(c.processing().values()):
                assert client.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            busy = next(w for w, tasks in c.processing().items() if tasks)
            pid = c.run(os.getpid, workers=[busy])[busy]
        assert client.poll() is None  # the run is still going
        os.kill(pid, signal.SIGKILL)
        log, _ = client.communicate(timeout=300)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, log
    got = _files(out)
    assert sorted(got) == sorted(local_report)
    assert all(got[n] == local_report[n] for n in got), [
        n for n in got if got[n] != local_report[n]
    ]


def test_rerun_after_client_killed_reuses_positions(cluster, experiment, tmp_path, capsys):
    out = tmp_path / "report"
    work = tmp_path / "work"
    argv = _report(experiment, out, "--scheduler", cluster, "--work", str(work))
    client = subprocess.Popen([str(BIN / "deadnet"), *argv], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((work / "positions").glob("*.pkl")):
            assert client.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        client.kill()
        client.wait()
    done = len(list((work / "positions").glob("*.pkl")))
    assert not out.exists() and done >= 1
    assert main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "positions reused" in x)
    assert int(line.split()[0]) >= done
    assert not work.exists()


def test_unreachable_scheduler(experiment, tmp_path, capsys):
    """One sentence, exit status 2, within the timeout; nothing written."""
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    argv = _report(experiment, tmp_path / "o", "--scheduler", f"tcp://127.0.0.1:{port}")
    assert main([*argv, "--scheduler-timeout", "2"]) == 2
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deadnet report: --scheduler tcp://127.0.0.1:{port}: no Dask")
    assert "within 2 s" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_plate_summary_of_two_experiments(cluster, experiment, local_report, tmp_path):
    """Two experiments from a list file: each report as alone, plates from its fractions."""
    import csv
    import json
    import shutil

    import numpy as np

    exp = experiment[0]
    shutil.copytree(exp, tmp_path / "b" / exp.name)
    (tmp_path / "list.txt").write_text(f"# the screen\n{exp}\nb/{exp.name}\n")
    out = tmp_path / "screen"
    argv = _report(experiment, out, "--scheduler", cluster)
    argv[argv.index("--experiment") : argv.index("--experiment") + 2] = [
        "--experiments", str(tmp_path / "list.txt")
    ]  # fmt: skip
    assert main(argv) == 0
    got = _files(out / exp.name)
    assert got == local_report
    rows = list(csv.DictReader(io.StringIO(local_report["fractions.csv"].decode())))
    late: dict[tuple, list[float]] = {}
    for r in rows:
        late.setdefault((r["dose_s"], r["well"], r["position"]), []).append(
            float(r["sick_fraction"])
        )
    by_dose: dict[float, list[float]] = {}
    for (dose, _, _), f in late.items():
        by_dose.setdefault(float(dose), []).append(np.mean(f[-3:]))  # --late-frames 3
    plates = json.loads((out / "plates.json").read_text())
    alone = json.loads(local_report["summary.json"])["highest_safe_dose"]
    assert list(plates) == [f"{exp.name}/sim", f"{exp.name}-2/sim"]
    for p in plates.values():
        assert p["highest_safe_dose"] == alone
        means = {d["dose_s"]: d["mean"] for d in p["dose_response"]}
        assert means == pytest.approx({d: np.mean(v) for d, v in by_dose.items()})
        for d in p["dose_response"]:
            assert d["ci"][0] <= d["mean"] <= d["ci"][1]
    assert "exp-2/sim" in (out / "plates.md").read_text()
