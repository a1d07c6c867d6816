"""The project's CPU speed patches to Caffe keep results bit-identical (issue 6 item 5).

third_party/caffe/patches/0002-* (OpenMP element-wise layers), 0003-* (parallel im2col and
col2im), 0004-* (BLAS defaults: MKL reproducibility, OpenBLAS kernels), 0005-* (cache-blocked
convolution forward pass), 0006-* (fewer BatchNorm and Scale passes in place), 0007-*
(huge-page blobs) and 0008-* (2 x 2 max-pooling fast path) must not change what Caffe
computes. Each test runs a real pycaffe layer on small inputs and compares with numpy:

- exactly (``assert_array_equal``), where numpy can repeat the unpatched code's float32
  operations in the same order, or where the inputs are chosen so that every sum is exact
  (small integers, power-of-two counts, a standard deviation of 2), which makes the result
  independent of summation order and threading;
- within ``RTOL`` on random inputs, where Caffe sums with BLAS (gemv, gemm) in an order
  that numpy does not reproduce.

Blob sizes are chosen above the patches' OpenMP threshold (32768 elements) so that the
parallel loops run, and one test compares a 1-thread and a 2-thread process bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deadnet_caffe.caffe_env import import_caffe

caffe = import_caffe()
caffe.set_mode_cpu()

RTOL = 1e-5  # float32 sums of a few thousand terms in a different order
PARALLEL_MIN = 32768  # kParallelMinCount in patch 0002's caffe/util/parallel.hpp


def _net(tmp_path, shape: tuple[int, ...], layers: str, name: str = "net.prototxt"):
    dims = " ".join(f"dim: {d}" for d in shape)
    text = (
        "force_backward: true\n"
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
    )
    path = tmp_path / name
    path.write_text(text + layers)
    return caffe.Net(str(path), caffe.TRAIN)


def _run(net, x: np.ndarray, dy: np.ndarray, out: str = "out") -> tuple[np.ndarray, np.ndarray]:
    """Forward ``x``, backward ``dy`` from blob ``out``; return (y, dx) copies."""
    net.blobs["data"].data[...] = x
    y = net.forward()[out].copy()
    net.blobs[out].diff[...] = dy
    net.backward()
    return y, net.blobs["data"].diff.copy()


def _ints(rng, shape, lo=-3, hi=4) -> np.ndarray:
    return rng.integers(lo, hi, size=shape).astype(np.float32)


# --- ReLU ---------------------------------------------------------------------------------
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_matches_unpatched_formula_exactly(tmp_path, rng, slope):
    shape = (2, 4, 70, 70)  # 39200 elements: the OpenMP path
    assert np.prod(shape) >= PARALLEL_MIN
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, 0, :4] = [0.0, -0.0, 1e-30, -1e-30]
    dy = rng.standard_normal(shape).astype(np.float32)
    net = _net(
        tmp_path,
        shape,
        f'layer {{ name: "relu" type: "ReLU" bottom: "data" top: "out" '
        f"relu_param {{ negative_slope: {slope} }} }}",
    )
    y, dx = _run(net, x, dy)
    s = np.float32(slope)
    # Caffe 1.0: max(x, 0) + slope * min(x, 0); dy * ((x > 0) + slope * (x <= 0))
    np.testing.assert_array_equal(y, np.maximum(x, 0) + s * np.minimum(x, 0))
    factor = (x > 0).astype(np.float32) + s * (x <= 0).astype(np.float32)
    np.testing.assert_array_equal(dx, dy * factor)


# --- BatchNorm + Scale (the published block) ----------------------------------------------
BN_SCALE = """
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn"
        batch_norm_param { use_global_stats: false eps: 0 } }
layer { name: "scale" type: "Scale" bottom: "bn" top: "out" scale_param { bias_term: true } }
"""
# The published blocks run both layers in place (patch 0006's one-pass paths).
BN_SCALE_IN_PLACE = """
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
        batch_norm_param { use_global_stats: false eps: 0 } }
layer { name: "scale" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }
"""


def _bn_exact_inputs(rng, n: int, c: int, side: int):
    """x = mean_c +- 2 (half each), so mean and var = 4 are exact and y = +-1."""
    sign = np.where(rng.random((n, c, side, side)) < 0.5, 1.0, -1.0)
    # balance the signs per channel so that the mean is exactly mean_c
    flat = sign.transpose(1, 0, 2, 3).reshape(c, -1)
    flat[:, : flat.shape[1] // 2] = 1.0
    flat[:, flat.shape[1] // 2 :] = -1.0
    flat = np.take_along_axis(flat, np.argsort(rng.random(flat.shape), axis=1), axis=1)
    sign = flat.reshape(c, n, side, side).transpose(1, 0, 2, 3)
    mean_c = rng.integers(-5, 6, size=(1, c, 1, 1))
    return (mean_c + 2.0 * sign).astype(np.float32), sign.astype(np.float32)


@pytest.mark.parametrize("in_place", [False, True])
def test_batchnorm_scale_exact_known_answer(tmp_path, rng, in_place):
    n, c, side = 2, 4, 64  # spatial 4096 and n * spatial 8192: powers of two
    x, sign = _bn_exact_inputs(rng, n, c, side)
    dy = _ints(rng, x.shape)
    gamma = np.array([2.0, -0.5, 0.0, 3.0], dtype=np.float32)
    beta = np.array([1.0, 0.25, -2.0, 0.0], dtype=np.float32)
    net = _net(tmp_path, x.shape, BN_SCALE_IN_PLACE if in_place else BN_SCALE)
    net.params["scale"][0].data[...] = gamma
    net.params["scale"][1].data[...] = beta
    y, dx = _run(net, x, dy, out="data" if in_place else "out")
    g, b = gamma.reshape(1, c, 1, 1), beta.reshape(1, c, 1, 1)
    # BatchNorm output is exactly +-1; Scale: sscal (zeros for gamma 0), then + beta.
    if not in_place:
        np.testing.assert_array_equal(net.blobs["bn"].data, sign)
    np.testing.assert_array_equal(y, np.where(g == 0, 0, g * sign) + b)
    assert not np.signbit(y[:, 2] - beta[2]).any()  # gamma 0 writes +0, not 0 * x
    # Backward through Scale: dbn = gamma * dy (zeros for gamma 0); gradient sums exact.
    dbn = np.where(g == 0, 0, g * dy).astype(np.float32)
    np.testing.assert_array_equal(net.params["scale"][0].diff, (dy * sign).sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(net.params["scale"][1].diff, dy.sum(axis=(0, 2, 3)))
    # BatchNorm backward in Caffe's order: (dy + -1/m * (y * sum(dy*y) + sum(dy))) / std
    m = np.float32(-1.0 / (n * side * side))
    s_dyy = (dbn * sign).sum(axis=(0, 2, 3), keepdims=True).astype(np.float32)
    s_dy = dbn.sum(axis=(0, 2, 3), keepdims=True).astype(np.float32)
    expect = (dbn + m * (sign * s_dyy + s_dy)) / np.float32(2.0)
    np.testing.assert_array_equal(dx, expect.astype(np.float32))


@pytest.mark.parametrize("bias_term", [True, False])
@pytest.mark.parametrize("force_backward", [True, False])
def test_scale_in_place_paths_exact(tmp_path, rng, bias_term, force_backward):
    """In place, Scale's one-pass forward (with a bias) and backward (with an input
    gradient) and its old passes (no bias; no input gradient) give the same answers."""
    shape = (2, 3, 80, 80)  # 38400 elements: the OpenMP path
    x, dy = _ints(rng, shape), _ints(rng, shape)
    gamma = np.array([2.0, 0.0, -1.5], dtype=np.float32)
    beta = np.array([0.5, -1.0, 4.0], dtype=np.float32)
    (tmp_path / "net.prototxt").write_text(
        ("force_backward: true\n" if force_backward else "")
        + 'layer { name: "data" type: "Input" top: "data" '
        + "input_param { shape { dim: 2 dim: 3 dim: 80 dim: 80 } } }\n"
        + 'layer { name: "scale" type: "Scale" bottom: "data" top: "data" '
        + f"scale_param {{ bias_term: {str(bias_term).lower()} }} "
        # Without force_backward, a loss weight makes Caffe run the layer's backward pass
        # for its parameters only (the input needs no gradient).
        + ("}" if force_backward else "loss_weight: 1 }")
    )
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
    net.params["scale"][0].data[...] = gamma
    if bias_term:
        net.params["scale"][1].data[...] = beta
    y, dx = _run(net, x, dy, out="data")
    g = gamma.reshape(1, 3, 1, 1)
    expect = np.where(g == 0, np.float32(0), g * x)
    if bias_term:
        expect = expect + beta.reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(y, expect)
    if not bias_term:
        assert not np.signbit(y[:, 1]).any()  # gamma 0 writes +0, not 0 * x
    np.testing.assert_array_equal(net.params["scale"][0].diff, (dy * x).sum(axis=(0, 2, 3)))
    if bias_term:
        np.testing.assert_array_equal(net.params["scale"][1].diff, dy.sum(axis=(0, 2, 3)))
    if force_backward:
        np.testing.assert_array_equal(dx, np.where(g == 0, np.float32(0), g * dy))
    else:  # no input gradient: Caffe leaves the (in-place) diff as the top gradient
        np.testing.assert_array_equal(dx, dy)


def test_batchnorm_random_inputs_match_numpy(tmp_path, rng):
    shape = (3, 5, 48, 48)
    x = (3 + 2 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    net = _net(
        tmp_path,
        shape,
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" '
        "batch_norm_param { use_global_stats: false } }",
    )
    y, dx = _run(net, x, dy)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    axes = (0, 2, 3)
    mu, var = x64.mean(axes, keepdims=True), x64.var(axes, keepdims=True)
    std = np.sqrt(var + 1e-5)
    ref = (x64 - mu) / std
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=RTOL)
    dref = dy64 - dy64.mean(axes, keepdims=True) - ref * (dy64 * ref).mean(axes, keepdims=True)
    np.testing.assert_allclose(dx, dref / std, rtol=1e-4, atol=1e-5)
    # running statistics: sum 1, mean, unbiased variance
    m = x[:, 0].size
    np.testing.assert_allclose(net.params["bn"][0].data, mu.ravel(), rtol=RTOL)
    np.testing.assert_allclose(net.params["bn"][1].data, var.ravel() * m / (m - 1), rtol=RTOL)
    assert net.params["bn"][2].data[0] == 1.0


def test_batchnorm_global_stats_divides_by_stored_std(tmp_path, rng):
    shape = (2, 3, 40, 40)
    x = _ints(rng, shape)
    dy = _ints(rng, shape)
    net = _net(
        tmp_path,
        shape,
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "out" '
        "batch_norm_param { use_global_stats: true eps: 0 } }",
    )
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 16.0])
    net.params["bn"][0].data[...] = 2 * mean  # stored sums with scale factor 2
    net.params["bn"][1].data[...] = 2 * var
    net.params["bn"][2].data[...] = 2.0
    y, dx = _run(net, x, dy)
    std = np.sqrt(var).astype(np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(y, (x - mean.astype(np.float32).reshape(1, 3, 1, 1)) / std)
    np.testing.assert_array_equal(dx, dy / std)


# --- Huge pages for large blobs (patch 0007) -----------------------------------------------
def _vma_flags(address: int) -> dict[str, str]:
    """The /proc/self/smaps fields of the mapping that holds ``address``."""
    fields, inside = {}, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= address < hi
            elif inside:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    return fields


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_large_blobs_are_2mb_aligned_and_ask_for_huge_pages(tmp_path):
    net = _net(tmp_path, (1, 2, 1024, 1024), "")  # 8 MB
    address = net.blobs["data"].data.ctypes.data
    assert address % (2 << 20) == 0
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = thp.read_text() if thp.exists() else "[never]"
    if "[never]" not in mode:  # madvise or always: the blob's mapping asked for huge pages
        # "hg" is VM_HUGEPAGE, set by madvise(MADV_HUGEPAGE): what the patch does.
        # (THPeligible also depends on the process's state and was seen 0 inside a long
        # pytest run while this flag was set.)
        assert "hg" in _vma_flags(address).get("VmFlags", "").split()


# --- Max pooling --------------------------------------------------------------------------
def _maxpool_ref(x, k, s, out_side):
    """Caffe's scan: first strict maximum in row-major window order; -1 never happens here."""
    n, c, h, w = x.shape
    y = np.empty((n, c, out_side, out_side), np.float32)
    idx = np.empty((n, c, out_side, out_side), np.int64)
    for ph in range(out_side):
        for pw in range(out_side):
            h0, w0 = ph * s, pw * s
            win = x[:, :, h0 : min(h0 + k, h), w0 : min(w0 + k, w)]
            ww = win.shape[3]
            flat = win.reshape(n, c, -1)
            arg = flat.argmax(axis=2)  # first maximum, as Caffe's strict '>'
            y[:, :, ph, pw] = flat.max(axis=2)
            idx[:, :, ph, pw] = (h0 + arg // ww) * w + (w0 + arg % ww)
    return y, idx


@pytest.mark.parametrize(
    ("kernel", "stride", "side", "out_side"), [(2, 2, 53, 27), (2, 2, 64, 32), (3, 2, 41, 20)]
)
def test_max_pooling_values_ties_and_gradient(tmp_path, rng, kernel, stride, side, out_side):
    shape = (2, 8, side, side)
    x = rng.integers(-2, 3, size=shape).astype(np.float32)  # many ties
    dy = _ints(rng, (2, 8, out_side, out_side))
    net = _net(
        tmp_path,
        shape,
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "out" '
        f"pooling_param {{ pool: MAX kernel_size: {kernel} stride: {stride} }} }}",
    )
    y, dx = _run(net, x, dy)
    assert y.shape == (2, 8, out_side, out_side)  # ceiling rounding, e.g. 53 -> 27
    ref, idx = _maxpool_ref(x, kernel, stride, out_side)
    np.testing.assert_array_equal(y, ref)
    # the gradient goes to the first maximum of each window, summed where windows overlap
    dref = np.zeros_like(x).reshape(2, 8, -1)
    for ph in range(out_side):
        for pw in range(out_side):
            np.add.at(
                dref,
                (np.arange(2)[:, None], np.arange(8)[None, :], idx[:, :, ph, pw]),
                dy[:, :, ph, pw],
            )
    np.testing.assert_array_equal(dx, dref.reshape(x.shape))


# --- Convolution (im2col / col2im) --------------------------------------------------------
def _conv_ref(x, w, b, pad, stride, dil):
    """Direct convolution in float64 and its gradients' operators."""
    n, _, h, wd = x.shape
    o, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1

    def window(i, j):
        r0, c0 = i * dil[0], j * dil[1]
        return (
            slice(None),
            slice(None),
            slice(r0, r0 + stride[0] * (oh - 1) + 1, stride[0]),
            slice(c0, c0 + stride[1] * (ow - 1) + 1, stride[1]),
        )

    y = np.zeros((n, o, oh, ow)) + b.reshape(1, o, 1, 1)
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[window(i, j)])

    def backward(dy):
        dxp = np.zeros_like(xp)
        dw = np.zeros(w.shape)
        for i in range(kh):
            for j in range(kw):
                dxp[window(i, j)] += np.einsum("oc,nohw->nchw", w[:, :, i, j], dy)
                dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, xp[window(i, j)])
        dx = dxp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd]
        return dx, dw, dy.sum(axis=(0, 2, 3))

    return y, backward


CONV_CASES = {
    # name: (input shape, num_output, (kh, kw), pad, stride, dilation, group)
    "published_3x3": ((2, 8, 64, 64), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "published_9x9": ((2, 1, 60, 60), 4, (9, 9), (0, 0), (1, 1), (1, 1), 1),
    "stride_2_rect": ((2, 3, 33, 37), 5, (3, 2), (1, 0), (2, 2), (1, 1), 1),
    "dilated": ((1, 2, 30, 30), 3, (3, 3), (2, 2), (1, 1), (2, 2), 1),
    "wide_pad": ((1, 2, 12, 12), 2, (3, 3), (4, 3), (1, 1), (1, 1), 1),
    # Patch 0005's blocked forward path: column matrix above 1 MB, <= 32 outputs per group.
    "blocked_9x9": ((2, 1, 70, 70), 4, (9, 9), (0, 0), (1, 1), (1, 1), 1),
    "blocked_9x9_odd": ((2, 1, 69, 75), 3, (9, 9), (0, 0), (1, 1), (1, 1), 1),
    "blocked_3x3": ((2, 16, 48, 48), 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "blocked_3x3_odd": ((2, 16, 45, 77), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "blocked_3x3_32": ((1, 16, 50, 44), 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "blocked_stride_2": ((2, 16, 97, 95), 6, (3, 3), (1, 1), (2, 2), (1, 1), 1),
    "blocked_dilated": ((1, 16, 50, 50), 4, (3, 3), (2, 2), (1, 1), (2, 2), 1),
    "blocked_groups": ((1, 32, 40, 40), 16, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    "blocked_over_1mb": ((1, 64, 33, 34), 4, (2, 2), (0, 0), (1, 1), (1, 1), 1),
    # just outside the blocked path: 33 outputs, or a column matrix of 1 MB exactly
    "unblocked_33_outputs": ((1, 16, 50, 44), 33, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "unblocked_1mb": ((1, 64, 33, 33), 4, (2, 2), (0, 0), (1, 1), (1, 1), 1),
}

# Patch 0005 (src/caffe/layers/base_conv_layer.cpp): with MKL, the forward pass is blocked
# when the column matrix (kernel_dim * group x output pixels, float32) is larger than 1 MB
# and the layer has at most 32 output channels per group (2-D, not 1x1). With OpenBLAS the
# "blocked" cases take the unblocked path and must pass just the same.
BLOCKED_MIN_COL_BYTES = 1 << 20
BLOCKED_MAX_OUT_CHANNELS = 32


def _conv_geometry(case):
    """(output height and width, column matrix bytes, whether patch 0005 blocks it)."""
    shape, o, (kh, kw), pad, stride, dil, group = CONV_CASES[case]
    oh = (shape[2] + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (shape[3] + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    col_bytes = 4 * shape[1] * kh * kw * oh * ow
    blocked = (
        col_bytes > BLOCKED_MIN_COL_BYTES
        and o // group <= BLOCKED_MAX_OUT_CHANNELS
        and (kh, kw, pad, stride) != (1, 1, (0, 0), (1, 1))
    )
    return (oh, ow), col_bytes, blocked


def test_conv_cases_cover_the_blocked_path_and_its_edges():
    blocked = {case for case in CONV_CASES if _conv_geometry(case)[2]}
    assert {case for case in CONV_CASES if case.startswith("blocked")} <= blocked
    assert not {case for case in CONV_CASES if case.startswith("unblocked")} & blocked
    assert len(blocked) < len(CONV_CASES) - 2  # the small cases keep the unblocked path
    assert _conv_geometry("unblocked_1mb")[1] == BLOCKED_MIN_COL_BYTES
    assert _conv_geometry("blocked_over_1mb")[1] > BLOCKED_MIN_COL_BYTES


def _conv_net(tmp_path, case):
    shape, o, (kh, kw), pad, stride, dil, group = CONV_CASES[case]
    return _net(
        tmp_path,
        shape,
        f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "out" '
        f"convolution_param {{ num_output: {o} kernel_h: {kh} kernel_w: {kw} "
        f"pad_h: {pad[0]} pad_w: {pad[1]} stride_h: {stride[0]} stride_w: {stride[1]} "
        f"dilation: {dil[0]} group: {group} }} }}",
    )


def _grouped_conv_ref(x, w, b, pad, stride, dil, group):
    """_conv_ref per group, concatenated along the channel axis."""
    xs, ws, bs = (np.split(a, group, axis=ax) for a, ax in ((x, 1), (w, 0), (b, 0)))
    parts = [_conv_ref(xs[g], ws[g], bs[g], pad, stride, dil) for g in range(group)]
    y = np.concatenate([p[0] for p in parts], axis=1)

    def backward(dy):
        grads = [p[1](d) for p, d in zip(parts, np.split(dy, group, axis=1), strict=True)]
        dx, dw, db = zip(*grads, strict=True)
        return np.concatenate(dx, axis=1), np.concatenate(dw), np.concatenate(db)

    return y, backward


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_exact_on_integer_data(tmp_path, rng, case):
    shape, o, (kh, kw), pad, stride, dil, group = CONV_CASES[case]
    x = _ints(rng, shape)
    w = _ints(rng, (o, shape[1] // group, kh, kw))
    b = _ints(rng, (o,))
    ref_y, backward = _grouped_conv_ref(x, w, b, pad, stride, dil, group)
    assert ref_y.shape[2:] == _conv_geometry(case)[0]
    dy = _ints(rng, ref_y.shape)
    net = _conv_net(tmp_path, case)
    net.params["conv"][0].data[...] = w
    net.params["conv"][1].data[...] = b
    y, dx = _run(net, x, dy)
    ref_dx, ref_dw, ref_db = backward(dy.astype(np.float64))
    # every product and sum is a small integer, so float32 is exact in any order
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(dx, ref_dx)
    np.testing.assert_array_equal(net.params["conv"][0].diff, ref_dw)
    np.testing.assert_array_equal(net.params["conv"][1].diff, ref_db)


# the blocked cases and the two just outside the blocked path
@pytest.mark.parametrize("case", [c for c in sorted(CONV_CASES) if "blocked" in c])
def test_convolution_random_data_matches_numpy(tmp_path, rng, case):
    shape, o, (kh, kw), pad, stride, dil, group = CONV_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((o, shape[1] // group, kh, kw)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    ref_y, backward = _grouped_conv_ref(x, w, b, pad, stride, dil, group)
    dy = rng.standard_normal(ref_y.shape).astype(np.float32)
    net = _conv_net(tmp_path, case)
    net.params["conv"][0].data[...] = w
    net.params["conv"][1].data[...] = b
    y, dx = _run(net, x, dy)
    ref_dx, ref_dw, _ = backward(dy.astype(np.float64))
    # sums of up to a few thousand float32 products: compare relative to each array's scale
    for got, ref in ((y, ref_y), (dx, ref_dx), (net.params["conv"][0].diff, ref_dw)):
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max())


# --- Thread count does not change anything ------------------------------------------------
_BLOCK_NET = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 }
                      bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "out"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""

_CHILD = """
import json, sys
import numpy as np
from deadnet_caffe.caffe_env import import_caffe
caffe = import_caffe(); caffe.set_mode_cpu(); caffe.set_random_seed(7)
net = caffe.Net(sys.argv[1], caffe.TRAIN)
rng = np.random.default_rng(3)
net.blobs["data"].data[...] = rng.standard_normal(net.blobs["data"].data.shape)
net.forward()
net.blobs["out"].diff[...] = rng.standard_normal(net.blobs["out"].diff.shape)
net.backward()
arrays = {"y": net.blobs["out"].data, "dx": net.blobs["data"].diff}
for name, blobs in net.params.items():
    for i, blob in enumerate(blobs):
        arrays[f"{name}{i}"] = blob.diff
np.savez(sys.argv[2], **arrays)
"""


@pytest.mark.slow
@pytest.mark.parametrize("channels", [4, 16])  # 16: a 2.4 MB column matrix, patch 0005's path
def test_one_and_two_openmp_threads_give_identical_bits(tmp_path, channels):
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: 2 dim: {channels} dim: 64 dim: 64 }} }} }}\n" + _BLOCK_NET
    )
    results = {}
    for threads in ("1", "2"):
        # Only the patches' OpenMP loops change with OMP_NUM_THREADS; BLAS (MKL or
        # OpenBLAS, whichever build.sh linked) stays on 1.
        env = dict(
            os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"
        )
        out = tmp_path / f"t{threads}.npz"
        subprocess.run(
            [sys.executable, "-c", _CHILD, str(tmp_path / "net.prototxt"), str(out)],
            env=env,
            check=True,
            capture_output=True,
        )
        results[threads] = dict(np.load(out))
    assert sorted(results["1"]) == sorted(results["2"])
    mismatched = [k for k in results["1"] if not np.array_equal(results["1"][k], results["2"][k])]
    assert not mismatched, json.dumps(mismatched)
