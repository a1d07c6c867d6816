"""The Dask benchmark's two-process ceiling (benchmarks/dask_throughput.py) waits for its
processes and fails, not hangs, when one dies."""

from __future__ import annotations

import multiprocessing

import pytest

from deadnet_caffe.benchmarks.dask_throughput import _collect


def _answer(queue) -> None:
    queue.put(True)


def _die() -> None:
    raise SystemExit(3)


def test_collect_gets_one_message_from_each_process():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_answer, args=(queue,)) for _ in range(2)]
    for proc in procs:
        proc.start()
    _collect(queue, procs)
    for proc in procs:
        proc.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert queue.empty()


def test_collect_raises_when_a_process_died_before_answering():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_answer, args=(queue,)), ctx.Process(target=_die)]
    for proc in procs:
        proc.start()
    with pytest.raises(RuntimeError, match="exited with status 3"):
        _collect(queue, procs)
    for proc in procs:
        proc.join(timeout=30)
