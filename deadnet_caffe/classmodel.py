"""Class model visualisation by gradient ascent on a class score (paper section 2.6, eq. 4).

    I <- I + epsilon (dS_c/dI - lambda1 I - lambda2 nabla^2 I)                    (eq. 4)

with epsilon = 10, lambda1 = 0.01, lambda2 = 0.001 and 500 iterations, from a zero image or
from an image of the opposing class. ``I`` lives in the net's input space (z, the
variance-normalised crop), and ``S_c`` is the pre-softmax score.

The sign of the smoothness term: the paper calls it "a smoothness term encouraging local
pixel correlations". With ``nabla^2`` the usual Laplacian (5-point stencil, negative at a
bright isolated pixel) the literal ``- lambda2 nabla^2 I`` would *sharpen*; eq. 4 smooths if
``nabla^2`` is read as the graph Laplacian ``-Delta`` (positive semi-definite), which is the
reading used here: the update adds ``+ lambda2 Delta I`` (``laplacian_sign="smooth"``).
``laplacian_sign="literal"`` applies eq. 4 with the usual Laplacian instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.core.paper import (
    CLASSMODEL_EPSILON,
    CLASSMODEL_ITERATIONS,
    CLASSMODEL_LAMBDA1,
    CLASSMODEL_LAMBDA2,
    NET_INPUT_PX,
)
from deadnet_caffe.infer import DeployNet


def laplacian(image: np.ndarray) -> np.ndarray:
    """The 5-point Laplacian Delta I with replicated edges: (H, W) -> (H, W) float64.

    ``Delta I[y, x] = I[y-1, x] + I[y+1, x] + I[y, x-1] + I[y, x+1] - 4 I[y, x]``; for
    ``I = x^2 + y^2`` it is 4 everywhere inside the image.
    """
    p = np.pad(np.asarray(image, dtype=np.float64), 1, mode="edge")
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * p[1:-1, 1:-1]


@dataclass(frozen=True)
class ClassModelSettings:
    """Eq. 4's parameters (defaults: the paper's, section 2.6)."""

    epsilon: float = CLASSMODEL_EPSILON
    lambda1: float = CLASSMODEL_LAMBDA1
    lambda2: float = CLASSMODEL_LAMBDA2
    iterations: int = CLASSMODEL_ITERATIONS
    laplacian_sign: str = "smooth"

    def __post_init__(self) -> None:
        if self.laplacian_sign not in ("smooth", "literal"):
            raise ValueError("laplacian_sign must be 'smooth' or 'literal'")


def update(image: np.ndarray, grad: np.ndarray, s: ClassModelSettings) -> np.ndarray:
    """One step of eq. 4: (H, W) image and dS_c/dI -> next image, float32."""
    sign = 1.0 if s.laplacian_sign == "smooth" else -1.0
    step = grad - s.lambda1 * image + sign * s.lambda2 * laplacian(image)
    return (image + s.epsilon * step).astype(np.float32)


class ScoreGradient:
    """``S_c`` and ``dS_c/dI`` of a deploy net (built with ``force_backward=True``)."""

    def __init__(self, net: DeployNet) -> None:
        self.net = net
        self.score_layer = net.layer_of_top(net.score)

    def __call__(self, image: np.ndarray, cls: int) -> tuple[float, np.ndarray]:
        """image: (220, 220) float32 -> (S_c, dS_c/dI of shape (220, 220) float32)."""
        self.net.forward(image[None])
        n = self.net.net
        score = float(n.blobs[self.net.score].data.reshape(-1)[cls])
        seed = np.zeros_like(n.blobs[self.net.score].data)
        seed.reshape(-1)[cls] = 1.0
        n.blobs[self.net.score].diff[...] = seed
        n.backward(start=self.score_layer)
        return score, n.blobs[self.net.input].diff[0, 0].copy()


def class_model(
    grad_fn, cls: int, init: np.ndarray | None = None, settings: ClassModelSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ascent on the class score (eq. 4).

    Parameters
    ----------
    grad_fn : callable (image (220, 220) float32, cls) -> (score, gradient (220, 220)),
        e.g. :class:`ScoreGradient`.
    cls : class c (0 healthy, 1 sick).
    init : (220, 220) starting image in z units (an image of the opposing class), or None
        for zeros.

    Returns
    -------
    image : (220, 220) float32, the class model.
    scores : (iterations + 1,) float64, S_c before each step and after the last.
    """
    s = settings or ClassModelSettings()
    img = (
        np.zeros((NET_INPUT_PX, NET_INPUT_PX), np.float32)
        if init is None
        else np.asarray(init, dtype=np.float32).copy()
    )
    scores = []
    for _ in range(s.iterations):
        score, grad = grad_fn(img, cls)
        scores.append(score)
        img = update(img, grad, s)
    scores.append(grad_fn(img, cls)[0])
    return img, np.asarray(scores)
