"""deadnet_caffe.dense: dense and exact answers paired on the same windows.

Known answer: with a net whose fully convolutional form equals it window by window (no
padding, tests/infer_nets.nopad_deploy) and a frame on which every 256 px square has the same
mean and standard deviation (cosines whose periods divide 256, symmetric about the frame
edges so that the reflected borders of local normalisation continue them), local and
per-window normalisation agree, so dense and exact mode must give the same P(sick) for
every paired window; a pairing off by a few pixels would not.
"""

from __future__ import annotations

import numpy as np
from infer_nets import make_weights, nopad_deploy

from deadnet_caffe.dense import GOALS, holds, window_pairs
from deadnet_caffe.heatmap import DenseNet
from deadnet_caffe.infer import DeployNet


def _frame(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] + 0.5
    return 1000 + 300 * np.cos(2 * np.pi * x / 64) + 200 * np.cos(2 * np.pi * y / 128)


def test_window_pairs_agree_where_the_normalisations_do(tmp_path, rng):
    (tmp_path / "d.prototxt").write_text(nopad_deploy())
    (tmp_path / "f.prototxt").write_text(nopad_deploy(fully_conv=True))
    weights = make_weights(tmp_path / "d.prototxt", tmp_path / "w.caffemodel", seed=3)
    net = DeployNet(tmp_path / "d.prototxt", weights)
    dense = DenseNet.from_deploy(tmp_path / "f.prototxt", net)
    frame = _frame(384, 448)  # multiples of the half periods (32, 64)
    pe, pd, per_window = window_pairs(frame, net, dense, 40, rng)
    assert len(pe) == len(pd) == 40 and per_window > 0
    assert np.ptp(pe) > 1e-3  # the windows differ, so a wrong pairing would show
    np.testing.assert_allclose(pd, pe, atol=1e-4)
    shifted = np.roll(frame, 24, axis=1)  # the same net on other content: pairs no longer agree
    pe2, _, _ = window_pairs(shifted, net, dense, 40, np.random.default_rng(0))
    _, pd2, _ = window_pairs(frame, net, dense, 40, np.random.default_rng(0))
    assert np.abs(pe2 - pd2).max() > 1e-3


def test_goals_checked_on_every_figure():
    ok = {"window_mean_abs_dp": 0.01, "auroc_exact": 0.9, "auroc_dense": 0.895,
          "speed_dense_over_exact": 12.0}  # fmt: skip
    assert holds(ok)
    assert not holds({**ok, "window_mean_abs_dp": GOALS["mean_abs_dp"] + 1e-3})
    assert not holds({**ok, "auroc_dense": 0.9 - GOALS["auroc_gap"] - 1e-3})
    assert not holds({**ok, "speed_dense_over_exact": GOALS["speedup"] - 0.1})
    assert not holds({**ok, "auroc_dense": None})
