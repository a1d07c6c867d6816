"""Known answers for the augmentation steps of paper section 2.3 and the TPS warp."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from data_prep import augment, tps
from data_prep.concordance import concordance
from data_prep.core import grids
from data_prep.core.normalize import variance_normalize


def test_crop_rule_gives_54_per_paper_frame_and_positions():
    assert grids.crop_origins(1344) == [0, 128, 256, 384, 512, 640, 768, 896, 1024]
    assert grids.crop_origins(1024) == [0, 128, 256, 384, 512, 640]
    assert grids.crop_origins(256) == [0]
    grid = grids.crop_grid(1024, 1344)
    assert len(grid) == 54 == len(grids.crop_grid(1344, 1024))
    assert grid[0] == (0, 0) and grid[8] == (0, 1024) and grid[-1] == (640, 1024)
    image = np.arange(1024 * 1344, dtype=np.float32).reshape(1024, 1344)
    c = augment.crops(image)
    assert c.shape == (54, 256, 256)
    assert c[10, 0, 0] == image[128, 128] and c[-1, -1, -1] == image[895, 1279]
    with pytest.raises(ValueError):
        grids.crop_origins(255)


def test_dihedral_transforms_are_distinct_and_form_the_group():
    x = np.arange(9).reshape(3, 3)
    elems = [augment.dihedral(x, k) for k in range(8)]
    keys = [e.tobytes() for e in elems]
    assert len(set(keys)) == 8
    np.testing.assert_array_equal(elems[0], x)
    # Closed under composition, and every element has an inverse.
    for a, b in itertools.product(range(8), repeat=2):
        composed = augment.dihedral(augment.dihedral(x, a), b)
        assert composed.tobytes() in keys
    for a in range(8):
        assert any(np.array_equal(augment.dihedral(augment.dihedral(x, a), b), x) for b in range(8))


def test_tps_maps_control_points_exactly(rng):
    grid = tps.control_grid(300, 400)
    assert grid[:, 0].max() >= 399 and grid[:, 1].max() >= 299  # grid covers the image
    assert np.allclose(np.diff(np.unique(grid[:, 0])), 128)
    # Interpolation: a spline fitted to random targets t_i sends each c_i to its t_i.
    targets = grid + rng.normal(0.0, 10.0, size=grid.shape)
    f = tps.ThinPlateSpline.fit(grid, targets)
    np.testing.assert_allclose(f(grid), targets, atol=1e-6)
    # A thin-plate spline reproduces an affine map exactly, also between the control points.
    a, b = np.array([[1.1, 0.2], [-0.1, 0.9]]), np.array([5.0, -3.0])
    affine = tps.ThinPlateSpline.fit(grid, grid @ a.T + b)
    between = rng.uniform(0, [400, 300], size=(50, 2))
    np.testing.assert_allclose(affine(between), between @ a.T + b, atol=1e-6)
    # random_tps displaces the control points by N(0, sigma^2) per coordinate (2.3 w)
    moved = tps.random_tps(300, 400, rng)(grid) - grid
    assert 3.0 < moved.std() < 20.0


def test_tps_lattice_interpolation_error_below_quarter_pixel(rng):
    h, w = 512, 640
    for _ in range(3):
        f = tps.random_tps(h, w, rng)
        mx, my = tps.tps_maps(f, h, w)
        dx, dy = tps.dense_maps(f, h, w)
        assert np.hypot(mx - dx, my - dy).max() < tps.MAX_INTERPOLATION_ERROR_PX


def test_warp_with_identity_maps_returns_image(rng):
    image = rng.normal(size=(300, 280)).astype(np.float32)
    grid = tps.control_grid(300, 280)
    ident = tps.ThinPlateSpline.fit(grid, grid)
    out = tps.warp(image, *tps.tps_maps(ident, 300, 280))
    np.testing.assert_allclose(out, image, atol=1e-4)


def test_blur_sigma_in_range_and_blur_commutes_with_dihedral(rng):
    s = augment.blur_sigmas(rng, 10_000)
    assert s.min() >= 1.1 and s.max() <= 1.5 and abs(s.mean() - 1.3) < 0.01
    image = rng.normal(size=(64, 64)).astype(np.float32)
    for k in range(8):
        a = augment.blur(np.ascontiguousarray(augment.dihedral(image, k)), 1.3)
        b = augment.dihedral(augment.blur(image, 1.3), k)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_normalised_crops_mean0_std1_constant_crop_zero(rng):
    image = (1000 + 50 * rng.normal(size=(512, 640))).astype(np.float32)
    image[:256, :256] = 7.0  # a constant crop
    z = augment.normalized_crops(image)
    assert z.shape == (6, 256, 256) and z.dtype == np.float32
    assert np.all(z[0] == 0) and np.isfinite(z).all()
    np.testing.assert_allclose(z[1:].mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(z[1:].std(axis=(1, 2)), 1, atol=1e-4)
    noisy = augment.add_noise(variance_normalize(image[None, 256:, 256:512]), rng)
    assert abs((noisy - variance_normalize(image[None, 256:, 256:512])).std() - 0.5) < 0.01


def test_paper_concordance_numbers():
    c = concordance(263, 49)
    assert round(100 * c.disagreement, 1) == 18.6
    assert round(100 * c.ambiguous_after, 1) == 22.9
    assert round(100 * c.accuracy_ceiling, 1) == 77.1
    assert c.ambiguous_before == pytest.approx(2 * 49 / 263)
    summary = c.summary()
    for text in ("18.6%", "37.2%", "22.9%", "77.1%"):
        assert text in summary
    assert concordance(0, 0).accuracy_ceiling == 1.0
