"""The three crop grids, side by side: where 256 px windows sit on a frame, and why.

=================  ===============================  =============================  =======
grid               origins along an axis of L px    1344 x 1024 frame              used by
=================  ===============================  =============================  =======
training crops     ``range(0, L - 256, 128)``       9 x 6 = 54 (paper section 2.3)  dataset
                   (:func:`crop_origins`)
inference windows  0, 128, ... plus one flush with  10 x 7 = 70, every pixel       classify,
                   the far edge (:func:`window_     covered                        heat maps,
                   starts`, :class:`Grid`)                                         Grad-CAM
annotation tiles   non-overlapping, centred         5 x 4 = 20 at x0 = 32, 288, ...  annotate
                   (:func:`centred_tiles`)
=================  ===============================  =============================  =======

Training crops. A 256 px window at stride 128 fits 9 x 7 = 63 times in a 1344 x 1024 image,
but the paper reports 54 = 9 x 6. Origins ``range(0, L - 256, 128)`` give 54: a window never
ends exactly on the far edge (9 origins along 1344 px since 1344 - 256 = 1088 is not a
multiple of 128, 6 along 1024 px where the 7th window would end on the edge). It is the loop
bound a straightforward implementation writes, and the only simple rule found that yields
9 x 6. Crops are taken after the rotation (order w, r, b, c), so a rotated image (1024 x
1344) gets 6 x 9 = 54 crops too.

Inference windows cover the whole frame (a heat map needs every pixel), so one more window
flush with the far edge is added where the stride does not reach it; frames smaller than
256 px use one window of their shorter side.

Annotation tiles do not overlap (an expert votes on each region once, section 2.2); the
margins narrower than 256 px are split evenly between the two sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.core.paper import CROP_PX, CROP_STRIDE_PX

# --- Training crops -------------------------------------------------------------------------


def crop_origins(length: int, size: int = CROP_PX, stride: int = CROP_STRIDE_PX) -> list[int]:
    """Window origins along one axis: ``range(0, length - size, stride)``, or ``[0]`` if the
    axis is exactly one crop long. 1344 -> 9 origins, 1024 -> 6 (module docstring)."""
    if length < size:
        raise ValueError(f"an axis of {length} px is smaller than one {size} px crop")
    return list(range(0, length - size, stride)) or [0]


def crop_grid(height: int, width: int, size: int = CROP_PX) -> list[tuple[int, int]]:
    """(y0, x0) of every training crop of a (height, width) image, row by row: 54 for
    1024 x 1344."""
    return [(y, x) for y in crop_origins(height, size) for x in crop_origins(width, size)]


# --- Inference windows ----------------------------------------------------------------------


def window_starts(n: int, window: int, stride: int) -> np.ndarray:
    """Top-left offsets of windows along one axis of length ``n``.

    Windows start at 0, stride, 2 stride, ...; if the last one does not reach the far edge,
    one more window flush with the edge is added, so every pixel is covered.

    Returns
    -------
    (M,) int64, ascending, all in ``[0, n - window]``.
    """
    if n < window:
        raise ValueError(f"axis of {n} px is shorter than the {window} px window")
    if stride < 1:
        raise ValueError("stride must be >= 1")
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return np.asarray(starts, dtype=np.int64)


def window_size(height: int, width: int) -> int:
    """The inference window: 256 px (training crops, section 2.3), or the shorter side if
    smaller."""
    return int(min(CROP_PX, height, width))


@dataclass(frozen=True)
class Grid:
    """Inference windows over one frame: ``window`` px squares at rows ``ys``, columns ``xs``."""

    height: int
    width: int
    window: int
    stride: int
    ys: np.ndarray
    xs: np.ndarray

    @classmethod
    def over(cls, height: int, width: int, stride: int = CROP_STRIDE_PX) -> Grid:
        w = window_size(height, width)
        return cls(
            height,
            width,
            w,
            stride,
            window_starts(height, w, stride),
            window_starts(width, w, stride),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Window centres in pixel coordinates (pixel i spans [i - 0.5, i + 0.5]): (M,), (L,)."""
        half = (self.window - 1) / 2.0
        return self.ys + half, self.xs + half

    def offsets(self) -> list[tuple[int, int]]:
        """(y, x) top-left corners, row-major (the order inference feeds the net)."""
        return [(int(y), int(x)) for y in self.ys for x in self.xs]


# --- Annotation tiles -----------------------------------------------------------------------


def centred_tiles(length: int, size: int = CROP_PX) -> range:
    """Starts of the non-overlapping ``size`` px tiles along an axis, centred: 1344 -> 32,
    288, 544, 800, 1056."""
    n = length // size
    offset = (length - n * size) // 2
    return range(offset, offset + n * size, size)
