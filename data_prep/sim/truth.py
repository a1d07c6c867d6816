"""Ground truth of a simulated position: label images, sick masks and the cell table.

Written per position into ``ground_truth/<well>_<position>/`` (the manifest's ``ground_truth``
column points there):

- ``labels.tif``: (T, H, W) uint16, one page per rendered frame: the cell id of each pixel,
  0 where there is no cell (each pixel belongs to one cell: neighbours abut, and a rounded
  cell lies on top of a spread one; see :meth:`data_prep.sim.render.CellRenderer.render`);
- ``sick.tif``: (T, H, W) uint8: :data:`SICK_HEALTHY` (0) on healthy cells, :data:`SICK_SICK`
  (1) on stressed, dying or dead cells, :data:`SICK_NONE` (255) where there is no cell. This is
  ``labels`` mapped through the state of each cell in ``cells.csv`` (:func:`sick_mask`); heat
  maps are scored on the cell pixels (0/1) and the 255 pixels are left out;
- ``cells.csv``: one row per cell and rendered frame, columns :data:`CELL_COLUMNS`: ``frame``
  (page index in the TIFF), ``step`` (8-min step), ``time_h``, ``id``, ``state`` (healthy,
  stressed, dying, dead; see :mod:`data_prep.sim.biology`), ``damage`` (continuous, 0 healthy,
  >= 1 dead), ``centroid_x``/``centroid_y`` (pixels, of the visible label area), ``area_px``.
"""

from __future__ import annotations

import functools

import numpy as np

from data_prep.sim.biology import DEAD, DYING, HEALTHY, STATES

SICK_HEALTHY, SICK_SICK, SICK_NONE = 0, 1, 255
CELL_COLUMNS = (
    "frame",
    "step",
    "time_h",
    "id",
    "state",
    "damage",
    "centroid_x",
    "centroid_y",
    "area_px",
)


def sick_mask(labels: np.ndarray, ids: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Per-pixel sick mask from a label image and the states of its cells.

    Parameters
    ----------
    labels : (H, W) uint16
        Cell ids, 0 = no cell.
    ids, states : (N,) int
        Cell ids and their state indices (:data:`data_prep.sim.biology.STATES`).

    Returns
    -------
    (H, W) uint8
        0 healthy cell, 1 sick cell (stressed, dying or dead), 255 no cell.
    """
    lut = np.full(int(max(int(labels.max()), int(ids.max(initial=0)))) + 1, SICK_HEALTHY, np.uint8)
    lut[0] = SICK_NONE
    lut[ids.astype(np.int64)] = np.where(states == HEALTHY, SICK_HEALTHY, SICK_SICK)
    return lut[labels]


@functools.lru_cache(maxsize=2)
def pixel_coords(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel, flattened (for centroids by bincount)."""
    h, w = shape
    return np.repeat(np.arange(h, dtype=np.float64), w), np.tile(np.arange(w, dtype=np.float64), h)


def cell_rows(
    labels: np.ndarray, snap: dict[str, np.ndarray], frame: int, step: int, time_h: float
) -> list[list]:
    """Rows of ``cells.csv`` for one frame: the cells with at least one visible pixel."""
    n = int(max(int(labels.max()), int(snap["id"].max(initial=0)))) + 1
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n)
    ys, xs = pixel_coords(labels.shape)
    sum_y = np.bincount(flat, weights=ys, minlength=n)
    sum_x = np.bincount(flat, weights=xs, minlength=n)
    rows = []
    for i in np.argsort(snap["id"]):
        cid = int(snap["id"][i])
        if area[cid] == 0:
            continue
        rows.append(
            [
                frame,
                step,
                f"{time_h:.4f}",
                cid,
                STATES[int(snap["state"][i])],
                f"{float(snap['d'][i]):.4f}",
                f"{sum_x[cid] / area[cid]:.2f}",
                f"{sum_y[cid] / area[cid]:.2f}",
                int(area[cid]),
            ]
        )
    return rows


def dead_at_end(labels: np.ndarray, snap: dict[str, np.ndarray]) -> bool:
    """Data Set A's sick criterion (paper 2.2): every visible cell is dying or dead.

    A field left empty by detached cells counts as dead.
    """
    visible = np.isin(snap["id"], np.unique(labels[labels > 0]))
    return bool(np.all(np.isin(snap["state"][visible], (DYING, DEAD))))


def crop_sick_fraction(sick: np.ndarray, crop: int) -> np.ndarray:
    """Fraction of cell pixels that are sick in each non-overlapping ``crop`` px tile.

    Parameters
    ----------
    sick : (H, W) uint8, from :func:`sick_mask`

    Returns
    -------
    (H // crop, W // crop) float32; NaN for a tile without cells.
    """
    gh, gw = sick.shape[0] // crop, sick.shape[1] // crop
    tiles = sick[: gh * crop, : gw * crop].reshape(gh, crop, gw, crop)
    n_sick = (tiles == SICK_SICK).sum(axis=(1, 3))
    n_cell = n_sick + (tiles == SICK_HEALTHY).sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_cell > 0, n_sick / np.maximum(n_cell, 1), np.nan).astype(np.float32)
