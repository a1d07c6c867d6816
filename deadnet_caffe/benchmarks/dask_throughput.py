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

Reported: ``frames_per_s_*``, ``two_over_one_worker_ratio`` (goal >= 1.7 on 2 free cores),
``dask_over_local_overhead_ratio`` (seconds of dask_1worker over local_1thread; goal <= 1.1).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
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
    n_pos, n_frames, size = (2, 2, (384, 512)) if quick else (4, 6, (512, 768))
    chunk = 1 if quick else 3
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        root = Path(tmp)
        weights = TRAINED if TRAINED.is_file() else _filler_weights(root / "filler.caffemodel")
        positions = _positions(root, n_pos, n_frames, size)
        t_local = _local(positions, weights)
        t1 = _dask(positions, weights, 1, root, chunk)
        t2 = _dask(positions, weights, 2, root, chunk)
    frames = n_pos * n_frames
    return {
        "work": f"{n_pos} positions x {n_frames} frames of {size[1]} x {size[0]}, stride {STRIDE}",
        "frames_per_s_local_1thread": round(frames / t_local, 3),
        "frames_per_s_dask_1worker": round(frames / t1, 3),
        "frames_per_s_dask_2workers": round(frames / t2, 3),
        "two_over_one_worker_ratio": round(t1 / t2, 3),
        "dask_over_local_overhead_ratio": round(t1 / t_local, 3),
    }
