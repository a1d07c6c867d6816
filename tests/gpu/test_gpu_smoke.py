"""GPU smoke test of the CUDA build, for the first GPU host (``make test-gpu``; skipped
without a GPU). Known answers come from the CPU path, which the rest of the suite tests:

- forward and backward of the published deploy net (prototxt/deploy.prototxt, 220 x 220,
  filler weights) on the GPU equal the CPU's within float tolerance;
- ``deadnet train --gpu`` runs 20 iterations of the published Data Set A solver;
- ``deadnet heatmap --gpu`` gives the CPU's heat map.
"""

from __future__ import annotations

from pathlib import Path

import caffe_tiny
import numpy as np
import pytest
import tifffile
from infer_nets import make_weights, phase_like

from data_prep.core import paper
from deadnet_caffe.cli import main
from deadnet_caffe.logparse import parse_log

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "prototxt" / "deploy.prototxt"


@pytest.fixture(scope="module")
def published_weights(tmp_path_factory, gpu) -> Path:
    """Filler weights (seeded) for the published deploy net, BatchNorm at mean 0, var 1."""
    return make_weights(DEPLOY, tmp_path_factory.mktemp("net") / "deploy.caffemodel", seed=7)


def _forward_backward(caffe, weights: Path, x: np.ndarray, top_diff: np.ndarray) -> dict:
    """prob, the input gradient and every parameter gradient of one forward/backward pass."""
    net = caffe.Net(str(DEPLOY), str(weights), caffe.TEST)
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    out = {"prob": net.forward(data=x)["prob"].copy()}
    net.blobs["prob"].diff[...] = top_diff
    out["data_diff"] = net.backward()["data"].copy()
    for name, blobs in net.params.items():
        for i, b in enumerate(blobs):
            out[f"{name}/{i}"] = b.diff.copy()
    return out


def test_published_net_forward_backward_gpu_equals_cpu(gpu, published_weights):
    import caffe

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 220, 220)).astype(np.float32)
    top_diff = rng.standard_normal((4, 2)).astype(np.float32)
    caffe.set_mode_cpu()
    cpu = _forward_backward(caffe, published_weights, x, top_diff)
    caffe.set_device(gpu)
    caffe.set_mode_gpu()
    try:
        on_gpu = _forward_backward(caffe, published_weights, x, top_diff)
    finally:
        caffe.set_mode_cpu()
    assert on_gpu.keys() == cpu.keys()
    # The input gradient is non-trivial, so the comparison below means something.
    assert np.abs(cpu["data_diff"]).max() > 0
    np.testing.assert_allclose(on_gpu["prob"], cpu["prob"], rtol=0, atol=1e-5)
    for key, want in cpu.items():
        # cuBLAS and MKL sum in different orders: relative to the blob's largest entry.
        scale = float(np.abs(want).max()) or 1.0
        np.testing.assert_allclose(on_gpu[key], want, rtol=0, atol=1e-4 * scale, err_msg=key)


def test_train_20_iterations_on_the_gpu(gpu, tmp_path):
    """The published Data Set A solver and net (batch 20, 220 px crops of 256 px records)."""
    import caffe

    ds = caffe_tiny.write_dataset(tmp_path / "ds", 40, 20, side=paper.CROP_PX)
    run = tmp_path / "run"
    rc = main(["train", "--dataset", str(ds),
               "--solver", str(ROOT / "prototxt/dataset_a/solver.prototxt"), "--run", str(run),
               "--max-iter", "20", "--test-iter", "1", "--seed", "1", "--no-progress",
               "--gpu", str(gpu)])  # fmt: skip
    assert rc == 0
    assert "solver_mode: GPU" in (run / "solver.prototxt").read_text()
    log = parse_log(run / "caffe.log")
    assert log.max_iter == 20
    assert set(range(20)) <= set(log.train_loss)  # display 1 for a 20-iteration run
    assert np.isfinite(list(log.train_loss.values())).all()
    net = caffe.Net(str(DEPLOY), str(run / "latest.caffemodel"), caffe.TEST)
    assert all(np.isfinite(b.data).all() for blobs in net.params.values() for b in blobs)


def test_heatmap_on_the_gpu_equals_the_cpu(gpu, published_weights, tmp_path):
    rng = np.random.default_rng(1)
    movie = tmp_path / "frame.tif"
    tifffile.imwrite(movie, phase_like(rng, 260, 301)[None])
    args = ["heatmap", str(movie), "--weights", str(published_weights), "--stride", "32"]
    assert main([*args, "--out", str(tmp_path / "cpu")]) == 0
    assert main([*args, "--out", str(tmp_path / "gpu"), "--gpu", str(gpu)]) == 0
    want = tifffile.imread(tmp_path / "cpu" / "frame_prob.tif")
    got = tifffile.imread(tmp_path / "gpu" / "frame_prob.tif")
    assert got.shape == want.shape and got.shape[-2:] == (260, 301)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
