"""The speed benchmark's net is the published DeadNet net (benchmarks/caffe_speed.py)."""

from __future__ import annotations

import csv
import ctypes
import os
import subprocess
import sys

import pytest

from data_prep.core import paper
from deadnet_caffe.benchmarks import caffe_speed
from deadnet_caffe.caffe_env import import_caffe

caffe = import_caffe()


def test_train_net_is_the_published_one_with_input_layers(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(caffe_speed.deadnet_train_net(batch=1))
    net = caffe.Net(str(path), caffe.TRAIN)
    sides = [net.blobs[name].data.shape[2] for name, *_ in paper.CONV_LAYERS[::2]]
    assert tuple(sides) == paper.BLOB_SIDES_PUBLISHED[:4]  # 212, 106, 53, 27
    side = paper.BLOB_SIDES_PUBLISHED[4]
    assert net.blobs[paper.POOL_LAYERS[-1]].data.shape == (1, 128, side, side)
    assert net.blobs["score"].data.shape == (1, 2)
    kinds = [layer.type for layer in net.layers]
    assert kinds.count("Convolution") == 8
    assert kinds.count("BatchNorm") == kinds.count("Scale") == 8
    assert kinds.count("Pooling") == 4 and kinds.count("Dropout") == 2
    for name, num_output, kernel, _pad in paper.CONV_LAYERS:
        assert net.params[name][0].data.shape[0] == num_output
        assert net.params[name][0].data.shape[2:] == (kernel, kernel)


@pytest.mark.slow
def test_quick_run_reports_times_ratio_and_profile(tmp_path):
    res = caffe_speed.run(tmp_path, quick=True)
    assert res["batch"] == 2 and res["caffe_s_per_iter"] > 0
    assert set(res["caffe_s_by_layer_type"]) >= {"Convolution", "BatchNorm", "ReLU", "Pooling"}
    if res["torch_s_per_iter"] is None:
        assert "pip install" in res["note"]
    else:
        for suffix in ("", "_1thread"):
            assert res[f"caffe_over_torch_ratio{suffix}"] == pytest.approx(
                res[f"caffe_s_per_iter{suffix}"] / res[f"torch_s_per_iter{suffix}"], rel=0.02
            )
    with open(tmp_path / "caffe_speed_layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows][:2] == ["conv_d1_1", "bn_d1_1"]


def test_caffe_threads_sets_and_restores_the_linked_blas():
    """The thread switch reaches the BLAS that libcaffe really uses (MKL's C entry points)."""
    kind, lib = caffe_speed.caffe_blas()
    assert kind in ("mkl", "openblas") and lib is not None and lib.exists()
    blas = ctypes.CDLL(str(lib))
    get = blas.MKL_Get_Max_Threads if kind == "mkl" else blas.openblas_get_num_threads
    before = get()
    with caffe_speed.caffe_threads(1):
        assert get() == 1
    assert get() == before


@pytest.mark.parametrize("preset, expected", [(None, "AUTO"), ("COMPATIBLE", "COMPATIBLE")])
def test_import_caffe_asks_mkl_for_reproducible_results(preset, expected):
    """Patch 0004: ``import caffe`` sets MKL_CBWR=AUTO unless the user chose a value."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    if preset:
        env["MKL_CBWR"] = preset
    out = subprocess.run(
        [sys.executable, "-c", "import os, caffe; print(os.environ['MKL_CBWR'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == expected


def test_interleaved_seconds_on_fake_timings():
    """Known answer: the warm-up round is dropped, each step's best round is kept, and the
    steps alternate within every round (so both see the same drift of the machine's load)."""
    calls = []

    def fake(name, times):
        it = iter(times)

        def step():
            calls.append(name)
            return next(it)

        return step

    best = caffe_speed.interleaved_seconds(
        {
            "caffe": fake("caffe", [0.1, 5.0, 3.0, 4.0]),
            "torch": fake("torch", [9.0, 2.0, 6.0, 1.5]),
        },
        iters=3,
    )
    assert best == {"caffe": 3.0, "torch": 1.5}
    assert calls == ["caffe", "torch"] * 4
