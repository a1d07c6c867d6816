"""Thin-plate-spline warps for augmentation step w (paper section 2.3, after ref. [14]).

Control points sit on a regular grid at 128 px intervals that covers the whole image; each
is displaced by N(0, sigma^2 I) with sigma = 10 px. The warp is the exact thin-plate spline
through those displacements (Bookstein 1989): f(p) = a0 + a1 x + a2 y + sum_i w_i U(|p - c_i|)
with U(r) = r^2 log r, fitted by solving the (n + 3) x (n + 3) linear system once per warp.
Evaluating f at every pixel costs n kernel evaluations per pixel, so :func:`tps_maps`
evaluates it exactly on a coarse lattice (every ``step`` px, both image corners included)
and interpolates bilinearly; tests/test_data_augment.py checks that the interpolated maps
stay within 0.25 px of the dense evaluation. The image is then resampled with
``cv2.remap`` (bilinear, mirrored border).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from data_prep.core.paper import TPS_DISPLACEMENT_SIGMA_PX, TPS_GRID_PX

#: Lattice spacing (px) of the exact TPS evaluation; bilinear interpolation in between.
LATTICE_STEP_PX = 4
#: Largest allowed distance (px) between interpolated and exact maps (checked in tests).
MAX_INTERPOLATION_ERROR_PX = 0.25
_CHUNK = 2048


def _kernel(r2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r written with r^2: 0.5 r^2 log r^2, and U(0) = 0 (in place)."""
    r2 = np.asarray(r2, dtype=np.float64)
    out = np.log(np.maximum(r2, 1e-300))
    out *= r2
    out *= 0.5
    return out


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m, n) squared distances between points a (m, 2) and b (n, 2)."""
    dx = a[:, 0:1] - b[None, :, 0]
    dx *= dx
    dy = a[:, 1:2] - b[None, :, 1]
    dy *= dy
    dx += dy
    return dx


def control_grid(height: int, width: int, spacing: int = TPS_GRID_PX) -> np.ndarray:
    """Control points on a ``spacing`` px grid covering a ``height`` x ``width`` image.

    Returns
    -------
    (n, 2) float64
        (x, y) of every grid node, x = 0, spacing, ... up to the first node at or beyond
        the last column (and likewise y), so that the whole image lies inside the grid.
    """
    nx = -(-(width - 1) // spacing) + 1
    ny = -(-(height - 1) // spacing) + 1
    xs, ys = np.meshgrid(np.arange(nx) * spacing, np.arange(ny) * spacing)
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)


@dataclass(frozen=True)
class ThinPlateSpline:
    """A fitted 2-D thin-plate spline f: R^2 -> R^2 with f(c_i) = t_i exactly.

    Attributes
    ----------
    centers : (n, 2) float64
        Control points c_i as (x, y).
    weights : (n, 2) float64
        Kernel weights w_i for the x and y components.
    affine : (3, 2) float64
        a0, a1, a2 for the x and y components.
    """

    centers: np.ndarray
    weights: np.ndarray
    affine: np.ndarray

    @classmethod
    def fit(cls, source: np.ndarray, target: np.ndarray) -> ThinPlateSpline:
        """Fit the interpolating TPS that maps ``source`` (n, 2) points onto ``target`` (n, 2)."""
        src = np.asarray(source, dtype=np.float64)
        n = len(src)
        d2 = _sq_dist(src, src)
        p = np.hstack([np.ones((n, 1)), src])
        a = np.zeros((n + 3, n + 3))
        a[:n, :n] = _kernel(d2)
        a[:n, n:] = p
        a[n:, :n] = p.T
        b = np.zeros((n + 3, 2))
        b[:n] = np.asarray(target, dtype=np.float64)
        sol = np.linalg.solve(a, b)
        return cls(centers=src, weights=sol[:n], affine=sol[n:])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Evaluate f at ``points`` (m, 2) (x, y); returns (m, 2) float64 (x, y)."""
        pts = np.asarray(points, dtype=np.float64)
        out = self.affine[0] + pts @ self.affine[1:]
        for i in range(0, len(pts), _CHUNK):  # chunks keep the (m, n) temporaries in cache
            out[i : i + _CHUNK] += (
                _kernel(_sq_dist(pts[i : i + _CHUNK], self.centers)) @ self.weights
            )
        return out


def random_tps(
    height: int,
    width: int,
    rng: np.random.Generator,
    sigma: float = TPS_DISPLACEMENT_SIGMA_PX,
    spacing: int = TPS_GRID_PX,
) -> ThinPlateSpline:
    """A TPS taking each grid node c_i to c_i + d_i, d_i ~ N(0, sigma^2 I) (section 2.3 w)."""
    grid = control_grid(height, width, spacing)
    return ThinPlateSpline.fit(grid, grid + rng.normal(0.0, sigma, size=grid.shape))


def dense_maps(tps: ThinPlateSpline, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact f at every pixel (slow: n kernel terms per pixel; the benchmark's baseline).

    Returns
    -------
    map_x, map_y : (height, width) float32
        Source coordinates for ``cv2.remap``.
    """
    ys, xs = np.mgrid[0:height, 0:width]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    out = tps(pts)
    return (
        out[:, 0].reshape(height, width).astype(np.float32),
        out[:, 1].reshape(height, width).astype(np.float32),
    )


def tps_maps(
    tps: ThinPlateSpline, height: int, width: int, step: int = LATTICE_STEP_PX
) -> tuple[np.ndarray, np.ndarray]:
    """f evaluated exactly every ``step`` px and bilinearly interpolated to every pixel.

    Returns
    -------
    map_x, map_y : (height, width) float32
        Source coordinates for ``cv2.remap``; within 0.25 px of :func:`dense_maps` for the
        paper's grid and displacement scale (tested).
    """
    lattice = control_grid(height, width, step)
    ny = -(-(height - 1) // step) + 1
    nx = -(-(width - 1) // step) + 1
    # Interpolate the displacement f(p) - p, not f itself: it varies slowly, so the 1/32 px
    # fixed-point weights of cv2.remap cost almost nothing.
    coarse = (tps(lattice) - lattice).astype(np.float32).reshape(ny, nx, 2)
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    mx, my = np.meshgrid(xs / step, ys / step)
    fine = cv2.remap(coarse, mx, my, interpolation=cv2.INTER_LINEAR)
    return fine[..., 0] + xs[None, :], fine[..., 1] + ys[:, None]


def warp(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Resample ``image`` (H, W) float32 at (map_x, map_y): out[y, x] = image[f(x, y)]."""
    return cv2.remap(
        image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
