"""Class model visualisation (section 2.6, eq. 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from infer_nets import phase_like, write_net

from deadnet_caffe.classmodel import (
    ClassModelSettings,
    ScoreGradient,
    class_model,
    laplacian,
    update,
)
from deadnet_caffe.cli import main
from deadnet_caffe.infer import DeployNet, crop_to_input


def test_laplacian_known_images():
    yy, xx = np.mgrid[0:20, 0:30].astype(np.float64)
    lap = laplacian(xx**2 + yy**2)
    np.testing.assert_allclose(lap[1:-1, 1:-1], 4.0)
    delta = np.zeros((5, 5))
    delta[2, 2] = 1.0
    got = laplacian(delta)
    assert got[2, 2] == -4.0 and got[1, 2] == got[2, 3] == 1.0 and got[0, 0] == 0.0
    assert laplacian(np.full((4, 4), 3.0)).tolist() == np.zeros((4, 4)).tolist()


def test_update_step_with_the_paper_parameters():
    delta = np.zeros((5, 5), np.float32)
    delta[2, 2] = 1.0
    zero = np.zeros_like(delta)
    smooth = update(delta, zero, ClassModelSettings())
    # 1 + 10 (-0.01 * 1 + 0.001 * (-4)) = 0.86; neighbours 10 * 0.001 * 1 = 0.01
    assert smooth[2, 2] == pytest.approx(0.86) and smooth[1, 2] == pytest.approx(0.01)
    literal = update(delta, zero, ClassModelSettings(laplacian_sign="literal"))
    assert literal[2, 2] == pytest.approx(0.94) and literal[1, 2] == pytest.approx(-0.01)
    grad = np.full_like(delta, 0.5)
    assert update(zero, grad, ClassModelSettings())[0, 0] == pytest.approx(5.0)


def test_ascent_on_a_linear_score_converges_to_w_over_lambda1():
    """S_c = <w_c, I>: eq. 4 without smoothness is I <- (1 - eps l1) I + eps w_c, whose limit
    is w_c / l1; after 500 steps (0.9^500 ~ 1e-23) each image is there, whatever its start,
    and each on its own class's w_c (the images ascend side by side, not together)."""
    w = np.random.default_rng(0).normal(size=(2, 220, 220)).astype(np.float32)

    def linear(imgs, classes):
        wc = w[np.asarray(classes)]
        return (wc * imgs).sum(axis=(1, 2)).astype(np.float64), wc

    start = np.full((220, 220), 3.0, np.float32)
    imgs, scores = class_model(linear, [1, 0, 1], [None, None, start],
                               settings=ClassModelSettings(lambda2=0.0))  # fmt: skip
    for img, c in zip(imgs, (1, 0, 1), strict=True):
        np.testing.assert_allclose(img, w[c] / 0.01, rtol=1e-4)
    assert scores.shape == (3, 501) and scores[0, 0] == 0.0 == scores[1, 0]
    assert scores[2, 0] == pytest.approx(3.0 * float(w[1].sum()), rel=1e-5)
    assert np.all(scores[:, -1] > scores[:, 1])


@pytest.fixture(scope="module")
def net_files(tmp_path_factory):
    return write_net(tmp_path_factory.mktemp("net"), seed=2)


def test_input_gradient_matches_finite_differences(net_files, rng):
    net = DeployNet(*net_files, force_backward=True)
    grad_fn = ScoreGradient(net)
    img = crop_to_input(phase_like(rng, 256, 256))

    def score(x):
        return float(grad_fn(x[None], [1])[0][0])

    g = grad_fn(img[None], [1])[1][0]
    # directional derivative along the gradient (well conditioned in float32): |g|
    d = g / np.linalg.norm(g)
    for t in (0.005, 0.002):
        fd = (score(img + t * d) - score(img - t * d)) / (2 * t)
        assert fd == pytest.approx(np.linalg.norm(g), rel=1e-2)
    assert np.any(g != 0) and g.shape == (220, 220)


def test_a_batch_gives_each_image_its_own_score_and_gradient(net_files, rng):
    """Caffe's deploy net in one batch of three (two classes) against each image alone."""
    net = DeployNet(*net_files, force_backward=True)
    grad_fn = ScoreGradient(net)
    imgs = np.stack([crop_to_input(phase_like(rng, 256, 256)) for _ in range(3)])
    classes = [0, 1, 1]
    scores, grads = grad_fn(imgs, classes)
    assert scores.shape == (3,) and grads.shape == (3, 220, 220)
    for j, c in enumerate(classes):
        alone_score, alone_grad = grad_fn(imgs[j : j + 1], [c])
        probs = net.forward(imgs[j : j + 1])[0]
        logits = net.net.blobs[net.score].data.reshape(-1)
        assert alone_score[0] == pytest.approx(float(logits[c]), rel=1e-6)
        assert probs[c] == pytest.approx(np.exp(logits[c]) / np.exp(logits).sum(), rel=1e-5)
        assert scores[j] == pytest.approx(alone_score[0], rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(grads[j], alone_grad[0], rtol=1e-3, atol=1e-6 * np.abs(
            alone_grad).max())  # fmt: skip
    assert not np.allclose(grads[1], grads[2])  # different images, different gradients


def test_classmodel_cli(tmp_path, net_files, rng):
    import tifffile

    model, weights = net_files
    for name in ("healthy.tif", "sick.tif"):
        tifffile.imwrite(tmp_path / name, phase_like(rng, 260, 270))
    out = tmp_path / "cm"
    args = ["classmodel", "--out", str(out), "--iterations", "4", "--epsilon", "1"]
    args += ["--figure-format", "png,pdf"]
    args += ["--init-image", str(tmp_path / "healthy.tif"), str(tmp_path / "sick.tif")]
    assert main([*args, "--model", str(model), "--weights", str(weights)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"healthy_from_zeros", "healthy_from_opposing", "sick_from_zeros",
                            "sick_from_opposing"}  # fmt: skip
    for v in summary.values():  # gradient ascent raises the class score
        assert v["score_end"] > v["score_start"]
    with np.load(out / "classmodels.npz") as f:
        assert f["sick_from_zeros_image"].shape == (220, 220)
        assert len(f["sick_from_zeros_scores"]) == 5
    assert (out / "classmodel.png").is_file()
    assert (out / "classmodel.pdf").read_bytes()[:5] == b"%PDF-"
