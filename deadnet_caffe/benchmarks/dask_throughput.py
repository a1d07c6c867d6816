"""The report's work on Dask (issue 18; docs/scale.md): throughput with 1 and 2 workers, and
the Dask path's overhead against the plain local loop, on the same work in the same run.

The work: the exact heat maps (stride 128) of every frame of a few synthetic positions, with
the published deploy net (trained weights when ``snapshots/dataset_A`` has them, Caffe's
fillers otherwise; the speed does not depend on the values). Each configuration is timed
from a loaded net / a running cluster to the results, net loading included:

- ``local_1thread``: :func:`deadnet_caffe.report.analyse_position` in a loop, Caffe on one
  thread (the baseline: one Dask worker is one single-threaded process);
- ``dask_1worker`` and ``dask_2workers``: :class:`deadnet_caffe.cluster.ClusterRun` on a
  ``distributed.LocalCluster`` of single-threaded worker processes (a real scheduler and
  real worker processes), timed from connecting; the workers have imported Caffe before,
  as the measuring process has (a long-running cluster's workers have).

- ``two_processes``: the machine's own ceiling for the first ratio: the same work split
  between two plain single-threaded processes (no Dask), started and warmed first, timed from
  a common start to the last result, net loading included as for the workers.

Reported: ``frames_per_s_*``, ``two_over_one_worker_ratio`` (goal >= 1.7 on 2 free cores),
``two_processes_over_one_ratio`` (the same ratio without Dask: what two cores of this machine
give two independent processes; two cores share memory bandwidth and caches, so it is below
2), ``dask_over_local_overhead_ratio`` (seconds of dask_1worker over local_1thread; goal <= 1.1).

The work is full-size frames (1344 x 1024, the demo's and the paper's): on 768 x 512 frames a
run lasted about 5 s and the fixed costs of a run (connecting, loading the net, one scoring
task per position) held the 2-worker ratio at 1.26-1.58 on an idle machine, against 1.63-1.74
on full frames.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from pathlib import Path
from queue import Empty
from types import SimpleNamespace

import numpy as np
import tifffile

from data_prep.core.manifest import Position
from deadnet_caffe.benchmarks.caffe_speed import caffe_threads
from deadnet_caffe.benchmarks.inference import MODEL, TRAINED, _filler_weights, _frame
from deadnet_caffe.infer import DEFAULT_BATCH

NAME = "dask"
STRIDE = 128


def _positions(root: Path, n_pos: int, n_frames: int, size: tuple[int, int]) -> list[Position]:
    base = _frame(*size)
    out = []
    for i in range(n_pos):
        path = root / f"p{i}.tif"
        stack = np.stack([np.roll(base, 17 * (i * n_frames + t), axis=1) for t in range(n_frames)])
        tifffile.imwrite(path, stack, photometric="minisblack")
        out.append(Position("B", f"W{i}", "p1", 0.0, 8.0, 0.43, n_frames, path))
    return out


def _local(positions, weights: Path) -> float:
    from deadnet_caffe.infer import DeployNet
    from deadnet_caffe.report import analyse_position

    t0 = time.perf_counter()
    with caffe_threads(1):
        net = DeployNet(MODEL, weights)
        for p in positions:
            analyse_position(p, net, None, STRIDE, 1, DEFAULT_BATCH, 0)
    return time.perf_counter() - t0


def _warm() -> None:
    """Import Caffe and the report code in a worker, as the measuring process has."""
    import caffe  # noqa: F401

    import deadnet_caffe.report  # noqa: F401


def _split_worker(positions, weights: Path, ready, go, done) -> None:
    _warm()
    ready.put(True)
    go.wait()
    _local(positions, weights)
    done.put(True)


def _collect(queue, procs) -> None:
    """One message from each process; a process that died first is an error, not a hang."""
    got = 0
    while got < len(procs):
        try:
            queue.get(timeout=5)
            got += 1
        except Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a benchmark process exited with status {dead[0]}") from None


def _two_processes(positions, weights: Path) -> float:
    """Seconds for two warmed single-threaded processes to analyse half the positions each."""
    ctx = multiprocessing.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=_split_worker, args=(positions[i::2], weights, ready, go, done))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    try:
        _collect(ready, procs)
        t0 = time.perf_counter()
        go.set()
        _collect(done, procs)
        return time.perf_counter() - t0
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def _dask(positions, weights: Path, workers: int, root: Path, chunk: int) -> float:
    from distributed import Client, LocalCluster

    from deadnet_caffe.cluster import ClusterRun, NetSpec

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc:
        with Client(lc) as client:  # a running cluster has its modules imported
            client.run(_warm)
        args = SimpleNamespace(
            scheduler=lc.scheduler_address,
            scheduler_timeout=30.0,
            chunk_frames=chunk,
            work=root / f"work{workers}",
            out=root / f"out{workers}",
        )
        t0 = time.perf_counter()
        with ClusterRun(args, NetSpec(MODEL, weights), [weights]) as run:
            run.report_results(positions, STRIDE, 1, DEFAULT_BATCH, 0)
        sec = time.perf_counter() - t0
        run.done()
    return sec


def run(out_dir: Path, quick: bool) -> dict:
    n_pos, n_frames, size = (2, 2, (384, 512)) if quick else (4, 6, (1024, 1344))
    chunk = 1 if quick else 3
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        root = Path(tmp)
        weights = TRAINED if TRAINED.is_file() else _filler_weights(root / "filler.caffemodel")
        positions = _positions(root, n_pos, n_frames, size)
        t_local = _local(positions, weights)
        t1 = _dask(positions, weights, 1, root, chunk)
        t2 = _dask(positions, weights, 2, root, chunk)
        t_two = _two_processes(positions, weights)
    frames = n_pos * n_frames
    return {
        "work": f"{n_pos} positions x {n_frames} frames of {size[1]} x {size[0]}, stride {STRIDE}",
        "frames_per_s_local_1thread": round(frames / t_local, 3),
        "frames_per_s_dask_1worker": round(frames / t1, 3),
        "frames_per_s_dask_2workers": round(frames / t2, 3),
        "two_over_one_worker_ratio": round(t1 / t2, 3),
        "two_processes_over_one_ratio": round(t_local / t_two, 3),
        "dask_over_local_overhead_ratio": round(t1 / t_local, 3),
    }
