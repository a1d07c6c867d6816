"""Grad-CAM (section 2.6, eq. 1-3): gradients, localisation, eq. 3, an independent check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from infer_nets import make_weights, phase_like, write_lmdb, write_net

from data_prep.core.datum import sample_crops
from data_prep.core.normalize import variance_normalize
from deadnet_caffe.cli import main
from deadnet_caffe.gradcam import (
    CamBatch,
    GradCam,
    average_alphas,
    class_weights,
    stitch_frame,
)
from deadnet_caffe.infer import DeployNet, crop_to_input

SMALL_NET = """
name: "small" force_backward: true
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 1 dim: SIDE dim: SIDE } } }
layer { name: "feat" type: "Convolution" bottom: "data" top: "feat"
        convolution_param { num_output: NF kernel_size: KF pad: PF
          weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu_feat" type: "ReLU" bottom: "feat" top: "feat" }
layer { name: "conv_d4_2" type: "Convolution" bottom: "feat" top: "conv_d4_2"
        convolution_param { num_output: NA kernel_size: 3 pad: 1
          weight_filler { type: "gaussian" std: 0.5 }
          bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu_d4_2" type: "ReLU" bottom: "conv_d4_2" top: "conv_d4_2" }
layer { name: "pool_d5_0" type: "Pooling" bottom: "conv_d4_2" top: "pool_d5_0"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "InnerProduct" bottom: "pool_d5_0" top: "score"
        inner_product_param { num_output: 2
          weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0 } } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""


def small_net(tmp_path, side, nf, kf, pf, na, seed=0):
    text = SMALL_NET
    for k, v in {"SIDE": side, "NF": nf, "KF": kf, "PF": pf, "NA": na}.items():
        text = text.replace(k, str(v))
    model = tmp_path / "small.prototxt"
    model.write_text(text)
    return model, make_weights(model, tmp_path / "small.caffemodel", seed)


@pytest.fixture(scope="module")
def deadnet_files(tmp_path_factory):
    return write_net(tmp_path_factory.mktemp("net"), seed=1)


def test_gradients_match_finite_differences(deadnet_files, rng):
    net = DeployNet(*deadnet_files, force_backward=True)
    gc = GradCam(net)
    assert (gc.blob, gc.reader, gc.score_layer) == ("conv_d4_2", "pool_d5_0", "score")
    z = crop_to_input(phase_like(rng, 256, 256))[None]
    cb = gc.compute(z, 1)
    assert cb.activations.shape == (1, 8, 27, 27) and (cb.activations >= 0).all()
    net.forward(z)
    a0 = net.net.blobs["conv_d4_2"].data.copy()
    # elements that are their 2 x 2 pooling window's maximum by a margin > 2h (no ties)
    h = 1e-2
    a = a0[0, :, :26, :26].reshape(8, 13, 2, 13, 2).transpose(0, 1, 3, 2, 4).reshape(8, 13, 13, 4)
    top2 = np.sort(a, axis=-1)[..., -2:]
    ok = (top2[..., 1] - top2[..., 0] > 2 * h) & (top2[..., 1] > 2 * h)
    idx = []
    for k, i, j in np.argwhere(ok):
        r = int(a[k, i, j].argmax())
        idx.append((k, 2 * i + r // 2, 2 * j + r % 2))
    idx = np.array(idx)
    checked = 0
    for k, u, v in idx[rng.permutation(len(idx))[:12]]:
        s = []
        for d in (h, -h):
            a = a0.copy()
            a[0, k, u, v] += d
            net.net.blobs["conv_d4_2"].data[...] = a
            net.net.forward(start="pool_d5_0")
            s.append(float(net.net.blobs["score"].data[0, 1]))
        fd = (s[0] - s[1]) / (2 * h)
        assert fd == pytest.approx(cb.gradients[0, k, u, v], rel=2e-2, abs=1e-6)
        checked += abs(fd) > 0
    assert checked >= 6
    np.testing.assert_allclose(cb.alphas[0], cb.gradients[0].mean(axis=(1, 2)), rtol=1e-6)


def test_single_region_net_highlights_its_region(tmp_path):
    """Score of class 1 reads channel 0 (bright structure) in the top-left 16 x 16 px only."""
    model, weights = small_net(tmp_path, 64, 2, 1, 0, 2)
    net = DeployNet(model, weights, force_backward=True)
    p = net.net.params
    p["feat"][0].data[...] = np.array([1.0, -1.0]).reshape(2, 1, 1, 1)  # relu(x), relu(-x)
    p["conv_d4_2"][0].data[...] = 0
    p["conv_d4_2"][0].data[[0, 1], [0, 1], 1, 1] = 1.0  # identity
    p["conv_d4_2"][1].data[...] = 0
    w = np.zeros((2, 2, 32, 32), np.float32)
    w[1, 0, :8, :8] = 1.0
    w[0] = -w[1]
    p["score"][0].data[...] = w.reshape(2, -1)
    z = np.zeros((1, 64, 64), np.float32)
    z[0, 4:12, 4:12] = 1.0  # inside the region
    z[0, 40:51, 40:51] = -1.0  # a dark structure outside it
    z[0, 30:36, 50:56] = 0.0
    cb = GradCam(net).compute(z, 1)
    cam = cb.cams()[0]
    np.testing.assert_array_equal(cam > 0, z[0] > 0)
    # dS/dA is taken at the post-ReLU blob: it is 1 at the pooled positions of the region
    # even where A = 0 (a backward pass through the in-place ReLU would have zeroed them)
    assert cb.gradients[0, 0, 0, 0] == 1.0 and cb.activations[0, 0, 0, 0] == 0.0
    assert not cb.gradients[0, 1].any()
    zero = GradCam(net).compute(z, 0)
    assert CamBatch.all_zero(zero.cams()).tolist() == [True]


def numpy_gradcam(z, wf, bf, wa, ba, ws, bs, cls):
    """Independent Grad-CAM for conv(3x3, pad 1) -> ReLU -> conv(3x3, pad 1) -> ReLU ->
    max pool 2x2 -> fc, written from the equations (no Caffe)."""

    def conv(x, w, b):
        c, h, wd = x.shape
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        out = np.zeros((w.shape[0], h, wd))
        for o in range(w.shape[0]):
            for i in range(c):
                for dy in range(3):
                    for dx in range(3):
                        out[o] += w[o, i, dy, dx] * xp[i, dy : dy + h, dx : dx + wd]
            out[o] += b[o]
        return out

    f = np.maximum(conv(z[None].astype(np.float64), wf, bf), 0)
    a = np.maximum(conv(f, wa, ba), 0)
    k, h, w = a.shape
    blocks = (
        a.reshape(k, h // 2, 2, w // 2, 2).transpose(0, 1, 3, 2, 4).reshape(k, h // 2, w // 2, 4)
    )
    arg = blocks.argmax(axis=-1)  # Caffe keeps the first maximum in row-major order
    gpool = ws[cls].reshape(k, h // 2, w // 2)
    grad = np.zeros_like(a)
    kk, yy, xx = np.indices(arg.shape)
    grad[kk, 2 * yy + arg // 2, 2 * xx + arg % 2] = gpool
    alpha = grad.mean(axis=(1, 2))
    return alpha, np.maximum(np.einsum("k,khw->hw", alpha, a), 0)


def test_independent_numpy_gradcam_agrees(tmp_path, rng):
    model, weights = small_net(tmp_path, 24, 3, 3, 1, 4, seed=5)
    net = DeployNet(model, weights, force_backward=True)
    prm = {k: [b.data.astype(np.float64) for b in v] for k, v in net.net.params.items()}
    z = rng.normal(size=(2, 24, 24)).astype(np.float32)
    cb = GradCam(net).compute(z, np.array([0, 1]))
    for i, c in enumerate((0, 1)):
        alpha, cam = numpy_gradcam(z[i], *prm["feat"], *prm["conv_d4_2"], *prm["score"], c)
        np.testing.assert_allclose(cb.alphas[i], alpha, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(cb.cams()[i], cam, rtol=1e-4, atol=1e-6)
        assert cam.max() > 0


def test_eq3_average_known_answer():
    alphas = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 8.0]])
    got = average_alphas(alphas, np.array([0, 1, 1]))
    np.testing.assert_allclose(got, [[1.0, 2.0], [4.0, 6.0]])
    assert np.isnan(average_alphas(alphas, np.array([1, 1, 1]))[0]).all()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(7)
    crops = variance_normalize(np.stack([phase_like(rng, 256, 256) for _ in range(6)]))
    write_lmdb(root / "train.lmdb", crops, [0, 1, 0, 1, 0, 1])
    write_lmdb(root / "test.lmdb", crops[:2], [0, 1])
    return root


def test_class_weights_are_eq3_and_cached(tmp_path, deadnet_files, dataset):
    net = DeployNet(*deadnet_files, force_backward=True)
    gc = GradCam(net)
    cache = tmp_path / "eq3.npz"
    cw = class_weights(gc, dataset / "train.lmdb", cache, per_class=2, batch=3)
    assert not cw["cached"] and cw["counts"].tolist() == [2, 2] and cache.is_file()
    z, labels = sample_crops(dataset / "train.lmdb", 2)
    one = np.stack([gc.compute(z[i : i + 1], labels[i]).alphas[0] for i in range(len(z))])
    for c in (0, 1):
        np.testing.assert_allclose(cw["alpha"][c], one[labels == c].mean(axis=0), rtol=1e-4)
    again = class_weights(gc, dataset / "train.lmdb", cache, per_class=2)
    assert again["cached"]
    np.testing.assert_array_equal(again["alpha"], cw["alpha"])
    assert class_weights(gc, dataset / "train.lmdb", cache, per_class=3)["counts"].tolist() == [
        3,
        3,
    ]


def test_stitching_geometry_and_shared_inputs(deadnet_files, rng):
    net = DeployNet(*deadnet_files, force_backward=True)
    gc = GradCam(net)
    assert gc.geometry() == (8, 7.5)  # conv_d4_2 cell u is centred on input pixel 8 u + 7.5
    one = phase_like(rng, 256, 256)
    s = stitch_frame(gc, one, 1, None, stride=128)
    cb = gc.compute(crop_to_input(one[None]), 1)
    np.testing.assert_allclose(s.cam[18:238, 18:238], gc.upsample(cb.cams())[0], rtol=1e-5)
    assert not s.cam[:18].any() and np.isnan(s.seam)
    # a frame repeating every 128 px gives every crop the same input, so each crop's own
    # eq. 1 weights equal the shared ones and both stitchings agree
    frame = np.tile(phase_like(rng, 128, 128), (3, 4))
    alpha = gc.compute(crop_to_input(frame[None, :256, :256]), 1).alphas[0]
    own = stitch_frame(gc, frame, 1, None, stride=128, batch=4)
    shared = stitch_frame(gc, frame, 1, alpha, stride=128, batch=4)
    np.testing.assert_allclose(own.cam, shared.cam, rtol=1e-4, atol=1e-7)
    assert own.seam == pytest.approx(shared.seam, rel=1e-3)


def test_gradcam_cli(tmp_path, deadnet_files, dataset, rng):
    import tifffile

    model, weights = deadnet_files
    tifffile.imwrite(  # a frame with 0.5 um pixels in centimetres (a plain TIFF's unit)
        tmp_path / "frame.tif", phase_like(rng, 300, 420), resolution=(2e4, 2e4), resolutionunit=3
    )
    out = tmp_path / "gc"
    cache = tmp_path / "w.eq3.npz"
    args = ["gradcam", "--dataset", str(dataset), "--out", str(out), "--per-class", "2"]
    args += ["--model", str(model), "--weights", str(weights), "--cache", str(cache)]
    args += ["--figure-format", "svg"]
    assert main([*args, "--examples", "1", "--frame", str(tmp_path / "frame.tif")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eq3_counts"] == [2, 2] and summary["examples"] == 2
    assert np.isfinite(summary["whole_frame"]["seam_index_eq3"])
    for name in ("gradcam_examples.svg", "gradcam_examples.csv", "whole_frame.svg",
                 "whole_frame_cam.tif", "settings.json"):  # fmt: skip
        assert (out / name).is_file()
    assert not (out / "whole_frame.png").exists()
    with tifffile.TiffFile(out / "whole_frame_cam.tif") as tif:
        assert tif.series[0].shape == (2, 300, 420) and tif.series[0].axes == "CYX"
        md = tif.imagej_metadata
        assert md["channels"] == 2 and md["Labels"] == ["eq1", "eq3"] and md["unit"] == "um"
        assert tif.pages.first.tags["XResolution"].value == (2, 1)
    assert cache.is_file()
