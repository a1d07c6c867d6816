"""Augmentation steps of paper section 2.3, and the crop rule.

Steps (paper letters): w = thin-plate-spline warp (:mod:`data_prep.tps`), r = the 8
rotations/mirrors, b = Gaussian blur with sigma ~ U(1.1, 1.5) px, c = 256 px crops at stride
128, t = a window of time-lapse frames, n = additive Gaussian noise (sigma 0.5) after the
per-crop variance normalisation (:func:`data_prep.core.normalize.variance_normalize`).

Crop rule (c): :func:`data_prep.core.grids.crop_grid` (54 crops of a 1344 x 1024 image).

Blur commutes with the 8 rotations/mirrors (isotropic kernel, mirrored border), so it is
applied before them: each (w, b) pair is blurred once and then rotated 8 ways.

Test sets get cropping and normalisation only (and, for Data Set B, all 10 frames of each
annotated crop, which are labelled images rather than augmented copies).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from data_prep.core.grids import crop_grid
from data_prep.core.normalize import variance_normalize
from data_prep.core.paper import (
    BLUR_SIGMA_RANGE_PX,
    CROP_PX,
    N_ROTATIONS_MIRRORS,
    NOISE_SIGMA,
)


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0-7) of the dihedral group D4 acting on the last two axes.

    ``k % 4`` quarter turns (counter-clockwise), then a left-right mirror if ``k >= 4``.
    k = 0 is the identity. Returns a view (use ``np.ascontiguousarray`` to copy).
    """
    if not 0 <= k < N_ROTATIONS_MIRRORS:
        raise ValueError(f"dihedral index {k} is not in 0..7")
    out = np.rot90(image, k % 4, axes=(-2, -1))
    return out[..., ::-1] if k >= 4 else out


def blur_sigmas(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` blur sigmas drawn from U(1.1, 1.5) px (section 2.3 b), float64."""
    lo, hi = BLUR_SIGMA_RANGE_PX
    return rng.uniform(lo, hi, size=n)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a (H, W) float32 image with a mirrored border (kernel to 4 sigma)."""
    half = int(np.ceil(4.0 * sigma))
    return cv2.GaussianBlur(
        image, (2 * half + 1, 2 * half + 1), sigma, borderType=cv2.BORDER_REFLECT_101
    )


def crops(image: np.ndarray, size: int = CROP_PX) -> np.ndarray:
    """All crops of a (H, W) image by :func:`crop_grid`, as (n, size, size) float32."""
    grid = crop_grid(*image.shape[-2:], size=size)
    out = np.empty((len(grid), size, size), dtype=np.float32)
    for i, (y, x) in enumerate(grid):
        out[i] = image[y : y + size, x : x + size]
    return out


def normalized_crops(image: np.ndarray, size: int = CROP_PX) -> np.ndarray:
    """Crop then variance-normalise each crop: (n, size, size) float32, mean 0, std 1."""
    return variance_normalize(crops(image, size))


def add_noise(z: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """z + N(0, sigma^2) per pixel (section 2.3 n, after normalisation); float32."""
    return (z + rng.normal(0.0, sigma, size=z.shape).astype(np.float32)).astype(np.float32)


def dihedral_copies(image: np.ndarray, count: int) -> Iterator[tuple[int, np.ndarray]]:
    """The first ``count`` (1-8) dihedral transforms of ``image``: (k, view) pairs."""
    for k in range(count):
        yield k, dihedral(image, k)
