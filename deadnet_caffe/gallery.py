"""Galleries of test crops, Figure 3c (misclassified) and 3d (correctly classified).

One row per true class; each tile is the centre crop the net saw (z-scored values, grey,
clipped to [-3, 3]) titled with P(sick). Errors are shown most confident first; correct
crops most confident first, as the clearest examples.
"""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np

from data_prep.core import paper
from data_prep.core.datum import read_datum
from data_prep.core.figures import subplots
from deadnet_caffe.figout import save_figure

MISCLASSIFIED_PNG = "figure3c_misclassified.png"
CORRECT_PNG = "figure3d_correct.png"


def pick(labels: np.ndarray, probs: np.ndarray, n: int, wrong: bool) -> dict[int, np.ndarray]:
    """Per true class, indices of up to ``n`` wrong (or correct) crops, most confident first.

    Parameters
    ----------
    labels : (N,) int
    probs : (N,) float, P(sick)
    """
    pred = (probs >= 0.5).astype(int)
    out = {}
    for c in (0, 1):
        idx = np.flatnonzero((labels == c) & ((pred != c) if wrong else (pred == c)))
        confidence = np.abs(probs[idx] - 0.5)
        out[c] = idx[np.argsort(-confidence, kind="stable")][:n]
    return out


def draw(
    crops: dict[int, list[np.ndarray]],
    titles: dict[int, list[str]],
    path: Path,
    title: str,
    formats: tuple[str, ...] = ("png",),
) -> Path:
    """Draw rows of (H, W) crops, one row per class, into ``path`` (with each suffix of
    ``formats``, :mod:`deadnet_caffe.figout`)."""
    n = max(1, *(len(v) for v in crops.values()))
    fig, axes = subplots(
        2, n, figsize=(1.6 * n + 0.8, 4.2), dpi=100, squeeze=False, layout="constrained"
    )
    for c in (0, 1):
        for j in range(n):
            ax = axes[c][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(crops[c]):
                ax.imshow(np.clip(crops[c][j], -3, 3), cmap="gray", vmin=-3, vmax=3)
                ax.set_title(titles[c][j], fontsize=7)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(f"true {paper.LABELS[c]}", fontsize=8)
                if not crops[c]:
                    ax.axis("on")
                    ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, formats, dpi=100)
    return path


def draw_galleries(
    out: Path,
    dataset: Path,
    rec,
    probs: np.ndarray,
    transform,
    n: int,
    formats: tuple[str, ...] = ("png",),
) -> list[str]:
    """Figure 3c,d for the test records ``rec`` and their P(sick) ``probs``, in each of
    ``formats``.

    Returns the file names written in ``out`` in the first format (the report links them).
    """
    names = []
    path = dataset / "test.lmdb"
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        for wrong, fname, what in (
            (True, MISCLASSIFIED_PNG, "c) misclassified"),
            (False, CORRECT_PNG, "d) correctly classified"),
        ):
            chosen = pick(rec.labels, probs, n, wrong)
            crops, titles = {}, {}
            for c, idx in chosen.items():
                crops[c] = [
                    transform(read_datum(txn, path, rec.keys[i].encode())[0])[0] for i in idx
                ]
                titles[c] = [f"P(sick) {probs[i]:.2f}" for i in idx]
            path = draw(crops, titles, out / fname, f"Figure 3{what} test crops", formats)
            names.append(path.with_suffix(f".{formats[0]}").name)
    env.close()
    return names
