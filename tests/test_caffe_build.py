"""The Caffe build itself, with known answers (issue: Foundation).

Each test builds a tiny net from prototxt text and checks pycaffe against arithmetic done
by hand: forward values, gradients against finite differences, one SGD update, pooling
rounding, and the LMDB Data layer.
"""

from __future__ import annotations

import os
import subprocess
import sys

import lmdb
import numpy as np
import pytest

from deadnet_caffe.caffe_env import import_caffe

caffe = import_caffe()
caffe.set_mode_cpu()
from caffe.proto import caffe_pb2  # noqa: E402  (after the import check above)


def _net(tmp_path, text: str, phase=caffe.TEST, weights: str | None = None):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    if weights:
        return caffe.Net(str(path), phase, weights=weights)
    return caffe.Net(str(path), phase)


LINEAR = """
name: "linear"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "out" }
"""


def test_import_and_tool_binary():
    assert caffe.__version__ == "1.0.0"
    assert caffe_pb2.PoolingParameter.FLOOR == 1
    tool = os.path.join(os.path.dirname(sys.executable), "caffe")
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
    assert "caffe version 1.0.0" in out.stdout + out.stderr


def test_forward_matches_hand_computation(tmp_path):
    net = _net(tmp_path, LINEAR)
    w = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]], dtype=np.float32)
    b = np.array([0.25, -3.0], dtype=np.float32)
    net.params["ip"][0].data[...] = w
    net.params["ip"][1].data[...] = b
    x = np.array([[1.0, 2.0, 4.0], [-1.0, 0.5, 0.0]], dtype=np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward()["out"]
    # by hand: row 0: [1-4+2+0.25, 2-4-3] = [-0.75, -5] -> relu [0, 0]
    #          row 1: [-1-1+0+0.25, 0.5-0-3] = [-1.75, -2.5] -> relu [0, 0]; change x to see >0
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.0, 0.0]])
    net.blobs["data"].data[...] = np.array([[3.0, 0.0, 0.0], [0.0, 4.0, 1.0]], np.float32)
    out = net.forward()["out"]
    # row 0: [3+0.25, 0-3] = [3.25, -3] -> [3.25, 0]; row 1: [-8+0.5+0.25, 4-1-3] -> [0, 0]
    np.testing.assert_allclose(out, [[3.25, 0.0], [0.0, 0.0]])


CONV_LOSS = """
name: "convloss"
force_backward: true
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1
          weight_filler { type: "gaussian" std: 0.5 }
          bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { use_global_stats: false } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv"
        scale_param { bias_term: true filler { type: "constant" value: 1.3 }
                      bias_filler { type: "constant" value: 0.2 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "score"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_backward_matches_finite_differences(tmp_path, rng):
    caffe.set_random_seed(7)
    net = _net(tmp_path, CONV_LOSS, phase=caffe.TRAIN)
    x = rng.normal(size=(2, 1, 6, 6)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = [0, 1]

    def loss_at(xv):
        net.blobs["data"].data[...] = xv
        return float(net.forward()["loss"])

    loss_at(x)
    net.backward()
    analytic_x = net.blobs["data"].diff.copy()
    analytic_w = net.params["conv"][0].diff.copy()
    eps = 1e-2
    for idx in [(0, 0, 1, 2), (1, 0, 5, 5), (0, 0, 3, 0)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        numeric = (loss_at(xp) - loss_at(xm)) / (2 * eps)
        assert numeric == pytest.approx(float(analytic_x[idx]), rel=0.05, abs=2e-3)
    w = net.params["conv"][0].data
    for idx in [(0, 0, 1, 1), (2, 0, 0, 2)]:
        orig = float(w[idx])
        w[idx] = orig + eps
        lp = loss_at(x)
        w[idx] = orig - eps
        lm = loss_at(x)
        w[idx] = orig
        numeric = (lp - lm) / (2 * eps)
        assert numeric == pytest.approx(float(analytic_w[idx]), rel=0.05, abs=2e-3)


def test_one_sgd_step_follows_the_update_rule(tmp_path):
    """Caffe's SGD: v = momentum v - lr (grad + decay w); w += v. First step: v = -lr (g + d w)."""
    net_path = tmp_path / "net.prototxt"
    net_path.write_text(
        """
name: "sgd"
layer { name: "data" type: "DummyData" top: "data" top: "target"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 1 }
          data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 1 bias_term: false
          weight_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""
    )
    solver_path = tmp_path / "solver.prototxt"
    lr, decay = 0.05, 0.01
    solver_path.write_text(
        f'net: "{net_path}"\nbase_lr: {lr}\nlr_policy: "fixed"\nmomentum: 0.9\n'
        f'weight_decay: {decay}\ntype: "SGD"\nmax_iter: 10\nsnapshot_after_train: false\n'
    )
    solver = caffe.get_solver(str(solver_path))
    w0 = solver.net.params["ip"][0].data.copy()  # 0.1 everywhere
    solver.step(1)
    w1 = solver.net.params["ip"][0].data.copy()
    # EuclideanLoss = 1/(2N) sum_n (y_n - t)^2 with y_n = 3 * 0.5 * 0.1 = 0.15 for all N rows,
    # so dL/dw_j = sum_n (y_n - t) / N * x_nj = (y - t) * 0.5.
    y, t = 0.15, 2.0
    grad = np.full_like(w0, (y - t) * 0.5)
    expected = w0 - lr * (grad + decay * w0)
    np.testing.assert_allclose(w1, expected, rtol=1e-6)


POOL = """
name: "pool"
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: 1 dim: 1 dim: 53 dim: 53 }} }} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 {extra} }} }}
"""


@pytest.mark.parametrize(
    ("extra", "side"), [("", 27), ("round_mode: CEIL", 27), ("round_mode: FLOOR", 26)]
)
def test_pooling_round_mode(tmp_path, extra, side):
    net = _net(tmp_path, POOL.format(extra=extra))
    assert net.blobs["pool"].data.shape == (1, 1, side, side)


def test_data_layer_reads_lmdb_written_from_python(tmp_path, rng):
    db = tmp_path / "toy.lmdb"
    values = rng.normal(size=(3, 1, 4, 5)).astype(np.float32)
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            d = caffe_pb2.Datum(channels=1, height=4, width=5, label=i % 2)
            d.float_data.extend(v.ravel().tolist())
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()
    net = _net(
        tmp_path,
        f"""
name: "lmdb"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "{db}" backend: LMDB batch_size: 3 }}
        transform_param {{ scale: 2.0 }} }}
""",
    )
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, 2.0 * values, rtol=1e-6)
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 0])
