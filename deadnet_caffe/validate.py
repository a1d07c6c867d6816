"""Validation of heat maps and Grad-CAM against the simulator's ground truth (beyond the paper).

The simulator writes per position ``ground_truth/<well>_<position>/sick.tif``: (T, H, W)
uint8, 0 on healthy cells, 1 on sick (stressed, dying, dead) cells, 255 off cells
(:mod:`data_prep.sim.truth`), one page per frame of the position's TIFF. Scores use the
cell pixels only.

- Heat-map AUROC: P(sick) per pixel against sick / healthy cell pixels (Mann-Whitney U),
  twice: against any damage (stressed, dying or dead cells are sick), and against fate
  (dying or dead cells, which are committed to die, against healthy ones; stressed cells,
  which mostly recover, are left out). The second matches what Data Set A's sick label
  means (section 2.2: positions where every cell ends dead or dying), and needs the
  per-cell states (``labels.tif`` and ``cells.csv`` beside ``sick.tif``).
- Grad-CAM energy: the share of a sick crop's (non-negative) Grad-CAM map that lies on
  sick-cell pixels.
- Pointing game (Zhang et al. 2016): a hit when the map's maximum lies within
  ``tolerance`` px of a sick-cell pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError

SICK_HEALTHY, SICK_SICK, SICK_NONE = 0, 1, 255  # data_prep.sim.truth's values
FATE_STRESSED = 2  # read_fate_masks: a stressed cell, neither healthy nor committed
_FATE_OF_STATE = {
    "healthy": SICK_HEALTHY,
    "stressed": FATE_STRESSED,
    "dying": SICK_SICK,
    "dead": SICK_SICK,
}
POINTING_TOLERANCE_PX = 15  # Zhang et al. 2016's pointing-game tolerance
MAX_AUROC_PIXELS = 2_000_000  # pixels ranked per AUROC (an even subsample beyond this)


def read_sick_masks(ground_truth: Path | None) -> np.ndarray | None:
    """(T, H, W) uint8 sick masks of a position, or None when it has no ground truth."""
    import tifffile

    if ground_truth is None:
        return None
    path = Path(ground_truth) / "sick.tif"
    if not path.is_file():
        return None
    try:
        masks = tifffile.imread(path)
    except (ValueError, OSError, tifffile.TiffFileError) as err:
        raise UserError(f"{path}: cannot read the ground-truth masks ({err}).") from None
    return masks[None] if masks.ndim == 2 else masks


def read_fate_masks(ground_truth: Path | None, frames: list[int]) -> np.ndarray | None:
    """(len(frames), H, W) uint8 fate masks of a position, or None without per-cell truth.

    Values: ``SICK_HEALTHY`` (0) on healthy cells, ``SICK_SICK`` (1) on dying or dead cells
    (committed to die), ``FATE_STRESSED`` (2) on stressed cells, ``SICK_NONE`` (255) off
    cells; from ``labels.tif`` (cell id per pixel) and ``cells.csv`` (state per cell and
    frame) of :mod:`data_prep.sim.truth`.
    """
    import csv

    import tifffile

    if ground_truth is None:
        return None
    gt = Path(ground_truth)
    labels_path, cells_path = gt / "labels.tif", gt / "cells.csv"
    if not (labels_path.is_file() and cells_path.is_file()):
        return None
    fates: dict[int, dict[int, int]] = {t: {} for t in frames}  # frame -> cell id -> fate
    try:
        with cells_path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                t = int(row["frame"])
                if t in fates:
                    fates[t][int(row["id"])] = _FATE_OF_STATE[row["state"]]
        labels = tifffile.imread(labels_path, key=list(frames))
    except (KeyError, ValueError, OSError, tifffile.TiffFileError) as err:
        raise UserError(f"{gt}: cannot read the per-cell ground truth ({err}).") from None
    labels = labels.reshape(len(frames), *labels.shape[-2:])
    out = np.full(labels.shape, SICK_NONE, dtype=np.uint8)
    for i, t in enumerate(frames):
        lut = np.full(int(labels[i].max()) + 1, SICK_NONE, dtype=np.uint8)
        for cell, fate in fates[t].items():
            if cell < lut.size:
                lut[cell] = fate
        out[i] = lut[labels[i]]
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties counted 1/2.

    scores : (N,) float; positive : (N,) bool. NaN when one class is missing.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def heatmap_auroc(probs: np.ndarray, masks: np.ndarray) -> float:
    """AUROC of per-pixel P(sick), (T, H, W), against sick masks of the same shape."""
    if probs.shape != masks.shape:
        raise ValueError(f"heat maps {probs.shape} and masks {masks.shape} differ in shape")
    cell = masks != SICK_NONE
    p, y = probs[cell], masks[cell] == SICK_SICK
    step = max(1, p.size // MAX_AUROC_PIXELS)
    return auroc(p[::step], y[::step])


def cam_energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of a map's total on sick-cell pixels: (H, W) each; NaN for an all-zero map."""
    total = float(cam.sum())
    return float(cam[mask == SICK_SICK].sum() / total) if total > 0 else float("nan")


def pointing_hit(cam: np.ndarray, mask: np.ndarray, tolerance: int = POINTING_TOLERANCE_PX) -> bool:
    """Whether the map's maximum lies within ``tolerance`` px of a sick-cell pixel."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    win = mask[max(0, y - tolerance) : y + tolerance + 1, max(0, x - tolerance) : x + tolerance + 1]
    yy, xx = np.nonzero(win == SICK_SICK)
    dy = yy + max(0, y - tolerance) - y
    dx = xx + max(0, x - tolerance) - x
    return bool(np.any(dy * dy + dx * dx <= tolerance * tolerance))
