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

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.core.datum import sample_crops
from data_prep.core.errors import UserError
from data_prep.core.outdir import output_dir
from data_prep.core.paper import (
    CLASSMODEL_EPSILON,
    CLASSMODEL_ITERATIONS,
    CLASSMODEL_LAMBDA1,
    CLASSMODEL_LAMBDA2,
    LABELS,
    NET_INPUT_PX,
)
from data_prep.core.progress import progress_bar
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import read_stack
from deadnet_caffe.figout import save_figure
from deadnet_caffe.infer import DEFAULT_BATCH, DEFAULT_MODEL, DeployNet, centre_input


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
    """``S_c`` and ``dS_c/dI`` of a deploy net (built with ``force_backward=True``), for a
    batch of images, each with its own class.

    The images go through the net as one batch: a deploy net (TEST phase: BatchNorm's stored
    statistics, no dropout) treats the images of a batch independently, so each one's score
    and gradient are what it would get alone, and one pass of N images costs less than N
    passes of one on a CPU.
    """

    def __init__(self, net: DeployNet) -> None:
        self.net = net
        self.score_layer = net.layer_of_top(net.score)

    def __call__(self, images: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images: (N, 220, 220) float32, classes: (N,) -> (S_c (N,) float64, dS_c/dI of
        shape (N, 220, 220) float32)."""
        classes = np.asarray(classes, dtype=int)
        self.net.forward(images)
        n = self.net.net
        out = n.blobs[self.net.score]
        rows = np.arange(len(classes))
        scores = out.data.reshape(len(classes), -1)[rows, classes].astype(np.float64)
        seed = np.zeros_like(out.data)
        seed.reshape(len(classes), -1)[rows, classes] = 1.0
        out.diff[...] = seed
        n.backward(start=self.score_layer)
        return scores, n.blobs[self.net.input].diff[:, 0].copy()


def class_model(
    grad_fn,
    classes: list[int],
    inits: list[np.ndarray | None],
    settings: ClassModelSettings | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ascent on the class score (eq. 4), for several images side by side.

    Each image follows eq. 4 on its own class's score; they share only the passes through
    the net (:class:`ScoreGradient`).

    Parameters
    ----------
    grad_fn : callable (images (N, 220, 220) float32, classes (N,)) -> (scores (N,),
        gradients (N, 220, 220)), e.g. :class:`ScoreGradient`.
    classes : class c of each image (0 healthy, 1 sick).
    inits : each image's (220, 220) start in z units (an image of the opposing class), or
        None for zeros.
    progress : a bar of iterations (None: only on a terminal, :mod:`data_prep.core.progress`).

    Returns
    -------
    images : (N, 220, 220) float32, the class models.
    scores : (N, iterations + 1) float64, S_c before each step and after the last.
    """
    s = settings or ClassModelSettings()
    imgs = np.stack(
        [
            np.zeros((NET_INPUT_PX, NET_INPUT_PX), np.float32)
            if init is None
            else np.asarray(init, dtype=np.float32)
            for init in inits
        ]
    )
    scores = []
    steps = range(s.iterations)
    for _ in progress_bar(steps, desc="class models", unit="step", leave=False, progress=progress):
        score, grad = grad_fn(imgs, classes)
        scores.append(score)
        imgs = np.stack([update(im, g, s) for im, g in zip(imgs, grad, strict=True)])
    scores.append(grad_fn(imgs, classes)[0])
    return imgs, np.stack(scores, axis=1)


#: A panel: (class label, start) -> (image (220, 220) float32, scores (iterations + 1,)),
#: start "zeros" or "opposing" (an image of the other class).
Panels = dict[tuple[int, str], tuple[np.ndarray, np.ndarray]]


def class_models(
    grad_fn,
    inits: dict[int, np.ndarray] | None,
    settings: ClassModelSettings | None = None,
    progress: bool | None = None,
) -> Panels:
    """Both classes' models from zeros and, with ``inits`` (label -> (220, 220) z image),
    from the opposing class's image (Figure 6's 2 x 2 panels), all ascended together."""
    keys = [(c, start) for c in (0, 1) for start in ("zeros", "opposing")]
    keys = [k for k in keys if k[1] == "zeros" or inits is not None]
    starts = [_start(inits, c, start) for c, start in keys]
    imgs, scores = class_model(grad_fn, [c for c, _ in keys], starts, settings, progress)
    return {k: (imgs[j], scores[j]) for j, k in enumerate(keys)}


def draw_class_models(path: Path, panels: Panels, formats: tuple[str, ...] = ("png",)) -> None:
    """Figure 6: one row per class, one column per start, each titled with S_c's change
    (``path`` in each of ``formats``, :mod:`deadnet_caffe.figout`)."""
    from data_prep.core.figures import subplots

    cols = sorted({k[1] for k in panels}, key=["zeros", "opposing"].index)
    fig, axes = subplots(2, len(cols), figsize=(3.2 * len(cols), 6.4), squeeze=False)
    for r, c in enumerate((0, 1)):
        for j, start in enumerate(cols):
            img, scores = panels[(c, start)]
            lim = np.percentile(np.abs(img), 99.5) or 1.0
            axes[r, j].imshow(img, cmap="gray", vmin=-lim, vmax=lim)
            axes[r, j].set_title(
                f"{LABELS[c]} from {start}\nS_c {scores[0]:.2f} -> {scores[-1]:.2f}", fontsize=8
            )
            axes[r, j].axis("off")
    fig.tight_layout()
    save_figure(fig, path, formats, dpi=110)


def _start(inits: dict[int, np.ndarray] | None, cls: int, start: str) -> np.ndarray:
    """The starting image of a panel: zeros, or the opposing class's image."""
    if start == "zeros" or inits is None:
        return np.zeros((NET_INPUT_PX, NET_INPUT_PX), np.float32)
    return inits[1 - cls]


def write_class_models(
    out_dir: Path,
    panels: Panels,
    inits: dict[int, np.ndarray] | None = None,
    formats: tuple[str, ...] = ("png",),
) -> dict:
    """Write ``classmodel.png`` (and the other ``formats``), ``classmodels.npz`` (images and
    score traces) and ``summary.json`` into ``out_dir``; return the summary (per panel: S_c
    at the start and the end, and whether the image never moved from its start, ``inits`` as
    given to :func:`class_models`: dS_c/dI was zero there)."""
    out_dir = Path(out_dir)
    draw_class_models(out_dir / "classmodel.png", panels, formats)
    np.savez_compressed(
        out_dir / "classmodels.npz",
        **{
            f"{LABELS[c]}_from_{s}_{part}": arr
            for (c, s), (img, scores) in panels.items()
            for part, arr in (("image", img), ("scores", scores))
        },
    )
    summary = {
        f"{LABELS[c]}_from_{s}": {
            "score_start": float(sc[0]),
            "score_end": float(sc[-1]),
            "unchanged": bool(np.array_equal(img, _start(inits, c, s))),
        }
        for (c, s), (img, sc) in panels.items()
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass(frozen=True)
class ClassModelRun:
    """What ``deadnet classmodel`` draws (its options, by name); saved in settings.json."""

    weights: Path
    out: Path
    model: Path = DEFAULT_MODEL
    iterations: int = CLASSMODEL_ITERATIONS
    epsilon: float = CLASSMODEL_EPSILON
    lambda1: float = CLASSMODEL_LAMBDA1
    lambda2: float = CLASSMODEL_LAMBDA2
    laplacian_sign: str = "smooth"
    dataset: Path | None = None  # opposing-class starts: a crop of each class from its LMDB
    init_image: tuple[Path, Path] | None = None  # or a healthy and a sick image
    figure_format: tuple[str, ...] = ("png",)
    batch: int = DEFAULT_BATCH
    gpu: int | None = None


def starting_images(r: ClassModelRun) -> dict[int, np.ndarray] | None:
    """Starting image of each class label (crops in z units), or None."""
    if r.init_image:
        return {c: centre_input(read_stack(path)[0]) for c, path in enumerate(r.init_image)}
    if r.dataset:
        for split in ("test.lmdb", "train.lmdb"):
            if (Path(r.dataset) / split).is_dir():
                z, labels = sample_crops(Path(r.dataset) / split, 1, seed=2)
                if set(labels.tolist()) == {0, 1}:
                    return {int(c): z[labels == c][0] for c in (0, 1)}
        raise UserError(f"{r.dataset}: no test.lmdb or train.lmdb with crops of both classes.")
    return None


def write_classmodel(r: ClassModelRun, progress: bool | None = None) -> dict:
    """Write ``r.out``: eq. 4's class models from a zero image and, with starting images,
    from the opposing class (:func:`write_class_models`), and settings.json. Returns the
    summary (see :func:`write_class_models`)."""
    if r.iterations < 1:
        raise UserError("--iterations must be at least 1.")
    inputs = [r.model, r.weights, *(r.init_image or [])]
    if r.dataset:
        inputs.append(r.dataset)
    with output_dir(r.out, "classmodel", inputs) as tmp:
        settings = ClassModelSettings(
            r.epsilon, r.lambda1, r.lambda2, r.iterations, r.laplacian_sign
        )
        inits = starting_images(r)
        net = DeployNet(r.model, r.weights, r.gpu, force_backward=True)
        panels = class_models(ScoreGradient(net), inits, settings, progress)
        summary = write_class_models(tmp, panels, inits, r.figure_format)
        write_settings(tmp, asdict(r))
    return summary
