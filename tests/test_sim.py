"""The simulator (issue 4): biology, optics, ground truth, output format, votes."""

from __future__ import annotations

import itertools
from dataclasses import replace

import cv2
import numpy as np
import pytest
import tifffile

from data_prep.core import paper
from data_prep.core.manifest import read_manifest
from data_prep.core.stack import check_stack
from data_prep.sim.annotators import TARGET_DISAGREEMENT, disagreement, simulate_votes
from data_prep.sim.biology import DEAD, DYING, Population
from data_prep.sim.optics import PhaseContrast
from data_prep.sim.params import PRESETS, Biology, Layout, Optics
from data_prep.sim.render import CellRenderer
from data_prep.sim.truth import SICK_NONE, crop_sick_fraction, sick_mask
from data_prep.votes_csv import Item, read_votes
from deadnet_caffe.cli import main

LAYOUT = Layout(hours=18.0)
DEAD_BOUND_DOSE0 = 0.10  # at most 10% of cells dying or dead at the end without light
DEAD_BOUND_DOSE200 = 0.95  # at least 95% at 200 s (paper 2.1: mass death)
VOTE_BAND = (0.14, 0.23)  # around the paper's 49 / 263 = 18.6% (section 3.1)


def _run(dose: float, seed: int, layout: Layout = LAYOUT) -> list[np.ndarray]:
    pop = Population(Biology(), layout, dose, np.random.default_rng(seed))
    states = [pop.states()]
    for _ in range(layout.n_steps - 1):
        pop.step()
        states.append(pop.states())
    return states


def _dying_fraction(states: np.ndarray) -> float:
    return float(np.isin(states, (DYING, DEAD)).mean()) if states.size else 1.0


def test_dead_fraction_at_end_bounds():
    for seed in (1, 2):
        assert _dying_fraction(_run(0.0, seed)[-1]) < DEAD_BOUND_DOSE0
        assert _dying_fraction(_run(200.0, seed)[-1]) > DEAD_BOUND_DOSE200


def test_onset_is_monotone_in_dose():
    """Onset: first step at which 20% of the cells are sick (dying/dead); later at lower dose."""

    def onset(dose):
        fr = [_dying_fraction(s) for s in _run(dose, 3)]
        hit = [i for i, f in enumerate(fr) if f >= 0.2]
        return hit[0] if hit else np.inf

    onsets = [onset(d) for d in (20.0, 80.0, 120.0, 200.0)]
    assert all(a >= b for a, b in itertools.pairwise(onsets)), onsets
    assert onsets[-1] < onsets[1] and np.isfinite(onsets[-1])


def test_edge_profile_of_a_flat_cell_shows_the_bright_halo():
    """A flat disc (the default body thickness) images dark inside with a bright halo just
    outside its edge; the more opaque the phase ring, the darker the disc."""
    o = Optics(focus_drift_um=0.0)
    shape, px = (256, 256), paper.PIXEL_SIZE_UM
    yy, xx = np.mgrid[0:256, 0:256]
    r = np.hypot(yy - 128, xx - 128)
    opd = np.where(r < 50, (o.n_cytoplasm - o.n_medium) * o.body_um, 0.0).astype(np.float32)
    pc = PhaseContrast(o, shape, px, np.random.default_rng(0), n_steps=1)
    img = pc.intensity(opd, 0)
    profile = img[128, 128:]  # centre to the right border
    far = float(np.median(img[r > 110]))
    # positive phase contrast: the cell is dark (the real T98G frames' 5th percentile is 0.85
    # of their median)
    assert profile[:40].mean() < 0.85 * far
    assert profile[50:58].max() > 1.15 * far  # bright halo within ~2.5 um outside the edge
    assert abs(profile[100:120].mean() / far - 1) < 0.1  # back to background further out
    inside = []
    for t in (0.15, 0.3):  # the reference's range of ring transmissions
        ring = replace(o, ring_transmission=t)
        dim = PhaseContrast(ring, shape, px, np.random.default_rng(0), n_steps=1).intensity(opd, 0)
        inside.append(dim[128, 128:168].mean() / np.median(dim[r > 110]))
    assert inside[0] < profile[:40].mean() / far < inside[1]


def test_a_narrower_annulus_shades_broad_objects_off():
    """The annulus' image (half the ring's width) stays on the ring for shifts up to a quarter
    of the ring's width: O = 1 there, where the ring's own autocorrelation has already fallen;
    so a broad flat disc's middle comes closer to the background."""
    from data_prep.sim.optics import ring_overlap

    shape, px = (512, 512), paper.PIXEL_SIZE_UM
    same, half = Optics(focus_drift_um=0.0), Optics(focus_drift_um=0.0, annulus_fraction=0.5)
    step = 1 / (shape[1] * px)  # one FFT bin along x, cycles per um
    flat = int(0.25 * half.ring_width_na / half.wavelength_um / step)  # bins within w / 4
    assert flat >= 5
    o_same, o_half = ring_overlap(shape, px, same), ring_overlap(shape, px, half)
    assert o_same[0, 0] == pytest.approx(1.0) and o_half[0, 0] == pytest.approx(1.0)
    assert np.allclose(o_half[0, : flat + 1], 1.0, atol=1e-5)
    assert o_same[0, 1] < 0.99 and o_same[0, flat] < 0.9
    yy, xx = np.mgrid[0:512, 0:512]
    r = np.hypot(yy - 256, xx - 256)
    opd = np.where(r < 110, (same.n_cytoplasm - same.n_medium) * same.body_um, 0.0)
    middle = {}
    for name, o in (("same", same), ("half", half)):
        img = PhaseContrast(o, shape, px, np.random.default_rng(0), n_steps=1).intensity(
            opd.astype(np.float32), 0
        )
        middle[name] = abs(float(img[r < 40].mean()) / float(np.median(img[r > 200])) - 1)
    assert middle["half"] < 0.5 * middle["same"], middle


def test_label_images_match_the_rendered_cells():
    lay = replace(LAYOUT, width=512, height=384)
    pop = Population(Biology(), lay, 0.0, np.random.default_rng(4))
    snap = pop.snapshot()
    renderer = CellRenderer(
        Optics(), Biology(), (384, 512), lay.pixel_size_um, np.random.default_rng(5)
    )
    opd, labels = renderer.render(snap, 0)
    ids = np.unique(labels[labels > 0])
    assert ids.size >= 3
    assert np.median(opd[labels > 0]) > 0.005  # cells delay the light (um)
    assert np.percentile(np.abs(opd[labels == 0]), 90) < 0.002  # background does not
    whole = 0
    for cid in ids:
        i = int(np.flatnonzero(snap["id"] == cid)[0])
        ys, xs = np.nonzero(labels == cid)
        inside = 0 <= snap["x"][i] < 512 and 0 <= snap["y"][i] < 384
        clipped = min(ys.min(), xs.min()) == 0 or ys.max() == 383 or xs.max() == 511
        if inside and not clipped and ys.size > 2000:  # a whole cell: its label is centred on it
            whole += 1
            assert labels[int(snap["y"][i]), int(snap["x"][i])] in (cid, *ids)
            assert np.hypot(xs.mean() - snap["x"][i], ys.mean() - snap["y"][i]) < snap["R"][i]
    assert whole >= 1


def test_sick_mask_and_crop_fractions_known_answer():
    labels = np.zeros((4, 4), np.uint16)
    labels[0, :2] = 3
    labels[1, :2] = 7
    mask = sick_mask(labels, np.array([3, 7]), np.array([0, 2]))
    assert mask[0, 0] == 0 and mask[1, 0] == 1 and mask[3, 3] == SICK_NONE
    frac = crop_sick_fraction(mask, 2)
    assert frac[0, 0] == 0.5 and np.isnan(frac[1, 1])


def _simulate(out, seed=1, extra=()):
    argv = ["simulate", "--preset", "tiny", "--seed", str(seed), "--out", str(out), "--no-progress"]
    return main([*argv, "--size", "384", "256", "--hours", "2", "--render-every", "5", *extra])


def test_output_round_trips_and_is_deterministic(tmp_path):
    assert _simulate(tmp_path / "a") == 0
    assert _simulate(tmp_path / "b", extra=("--jobs", "2")) == 0  # same bytes in parallel
    positions = read_manifest(tmp_path / "a")
    assert [(p.well, p.position, p.dose_s) for p in positions] == [
        ("A1", "p1", 0.0),
        ("A1", "p2", 0.0),
        ("A2", "p1", 200.0),
        ("A2", "p2", 200.0),
    ]
    for p in positions:
        assert p.n_frames == 4 and p.frame_interval_min == 40.0
        assert p.pixel_size_um == pytest.approx(paper.PIXEL_SIZE_UM)
        with tifffile.TiffFile(p.path) as tf:  # the ImageJ metadata
            assert tf.is_imagej and tf.series[0].axes == "TYX"
            assert tf.imagej_metadata["finterval"] == pytest.approx(40 * 60.0)
            num, den = tf.pages[0].tags["XResolution"].value
            assert num / den == pytest.approx(1 / paper.PIXEL_SIZE_UM, rel=1e-4)
        stack = check_stack(p, range(p.n_frames)).frames()  # the toolkit's one reader
        assert stack.shape == (4, 256, 384) and stack.dtype == np.uint16
        for truth in ("labels.tif", "sick.tif"):  # calibrated like the movie
            with tifffile.TiffFile(p.ground_truth / truth) as tf:
                assert tf.series[0].axes == "TYX" and tf.imagej_metadata["unit"] == "um"
                assert tf.imagej_metadata["finterval"] == pytest.approx(40 * 60.0)
                num, den = tf.pages[0].tags["XResolution"].value
                assert num / den == pytest.approx(1 / paper.PIXEL_SIZE_UM, rel=1e-4)
        labels = tifffile.imread(p.ground_truth / "labels.tif")
        assert labels.shape == (4, 256, 384)
        assert stack.std() > 0 and stack.max() < 2**12  # 12-bit counts in 16 bits
    for rel in ("images/A2_p1.tif", "ground_truth/A2_p1/cells.csv", "manifest.csv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_bad_settings_file_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "s.json"
    bad.write_text('{"biology": {"no_such_rate": 1}}')
    assert _simulate(tmp_path / "out", extra=("--settings", str(bad))) == 2
    assert "no_such_rate" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    bad.write_text('{"optics": {"annulus_fraction": 1.5}}')  # wider than the ring
    assert _simulate(tmp_path / "out", extra=("--settings", str(bad))) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "annulus_fraction" in err
    assert not (tmp_path / "out").exists()


def test_vote_disagreement_lies_in_band(tmp_path):
    rng = np.random.default_rng(0)
    n = 1500  # like the paper's ~1300 annotated items
    truth = np.concatenate([np.zeros(n // 2), rng.uniform(0, 1, n // 4), np.ones(n - 3 * n // 4)])
    items = [Item("sim/A1/p1", 0, 256 * (i % 4), 256 * (i // 4)) for i in range(n)]
    votes, _ = simulate_votes(items, truth, rng)
    from data_prep.votes_csv import write_votes

    back = read_votes(write_votes(tmp_path / "votes.csv", votes))
    d = disagreement(back)
    assert VOTE_BAND[0] <= d <= VOTE_BAND[1]
    assert abs(d - TARGET_DISAGREEMENT) < 0.03
    assert {v.label for v in back} == {"healthy", "sick", "unsure"}
    assert len({v.annotator for v in back}) == 4
    overlap = sum(v.overlap for v in back) / len(back)
    assert 0.15 < overlap < 0.25  # every 5th item is from the already-scored pool


def test_presets_have_a_healthy_and_a_mass_death_well():
    for lay in PRESETS.values():
        assert 0.0 in lay.doses_s and max(lay.doses_s) >= 200.0
        assert (lay.width, lay.height) == (paper.FRAME_WIDTH_PX, paper.FRAME_HEIGHT_PX)


def test_a_frame_is_the_same_whatever_is_rendered_around_it():
    """Biology steps every 8 min and each step has its own noise stream (streamed rendering)."""
    from data_prep.sim.params import Settings
    from data_prep.sim.plate import PositionSim

    lay = replace(PRESETS["tiny"], width=256, height=256, hours=1.0)
    every3 = [img for _, img, _, _ in PositionSim(Settings(replace(lay, render_every=3)), 0, 0, 80)]
    every6 = [img for _, img, _, _ in PositionSim(Settings(replace(lay, render_every=6)), 0, 0, 80)]
    assert len(every3) == 3 and len(every6) == 2
    np.testing.assert_array_equal(every3[2], every6[1])  # step 6
    assert not np.array_equal(every3[0], every3[1])


def test_vote_items_are_10_frame_crops_of_low_dose_positions(tmp_path):
    from data_prep.core.manifest import Position
    from data_prep.sim.plate import vote_items

    def pos(well, dose):
        return Position("sim", well, "p1", dose, 8.0, 0.3225, 25, tmp_path / f"{well}.tif")

    tiles = [np.full((2, 3), 0.5, np.float32)] * 25  # 25 frames of a 768 x 512 px frame
    items, truth = vote_items([pos("A1", 0.0), pos("A2", 80.0), pos("A3", 200.0)], [tiles] * 3)
    assert len(items) == 2 * 2 * 6  # 2 positions x 2 whole 10-frame windows x 6 crops
    assert {i.position_key for i in items} == {"sim/A1/p1", "sim/A2/p1"}
    assert {i.t0 for i in items} == {0, 10}
    assert {(i.y0, i.x0) for i in items} == {(y, x) for y in (0, 256) for x in (0, 256, 512)}
    assert np.allclose(truth, 0.5)


def test_statistic_functions_known_answers():
    """Moments, tails, PSD slope, edge energy, halo and overlap against hand-computed answers."""
    from data_prep.sim.compare import (
        contrast,
        edge_energy,
        halo,
        moments,
        overlap_fraction,
        psd_slope,
        psd_slope_common,
    )

    # 100 pixels: 99 zeros and a single 1. Mean 0.01, variance 0.0099; third central moment
    # (99 (-0.01)^3 + 0.99^3) / 100 = 0.009702 -> skewness 0.009702 / 0.0099^1.5 = 9.849;
    # fourth (99e-8 + 0.99^4) / 100 = 0.00960597 -> kurtosis 0.00960597 / 0.0099^2 - 3 = 95.01
    img = np.zeros((10, 10))
    img[3, 4] = 1.0
    m = moments(img)
    assert m["skewness"] == pytest.approx(9.849, abs=1e-3)
    assert m["kurtosis"] == pytest.approx(95.01, abs=1e-2)
    assert m["bright_tail"] == pytest.approx(0.01)  # the 1 is 9.95 SD above the mean
    assert m["dark_tail"] == 0.0
    assert moments(-img)["dark_tail"] == pytest.approx(0.01)
    # a ramp along x, 1 unit per pixel: z has gradient 1 / SD per pixel; px 0.4 um (the common
    # scale, no resampling) -> 2.5 / SD per um
    ramp = np.tile(np.arange(64, dtype=np.float64), (8, 1))
    assert edge_energy(ramp, 0.4) == pytest.approx((2.5 / ramp.std()) ** 2)
    # a sine of period 20 um standardises to sqrt(2) sin(k x): mean |dz/dx|^2 = k^2 per um^2,
    # whether it was sampled at 0.2 or 0.5 um per pixel (measured at the common 0.4 um)
    k = 2 * np.pi / 20.0
    for px in (0.2, 0.5):
        x = np.arange(round(200 / px)) * px  # ten periods
        wave = np.tile(np.sin(k * x), (16, 1))
        assert edge_energy(wave, px) == pytest.approx(k * k, rel=0.03)
    # a field whose radial power falls as f^-2 (amplitude f^-1, random phases): slope -2
    rng = np.random.default_rng(0)
    f = np.hypot(np.fft.fftfreq(512)[:, None], np.fft.fftfreq(512)[None, :])
    spec = np.where(f > 0, 1 / np.maximum(f, 1e-9), 0) * np.exp(2j * np.pi * rng.random(f.shape))
    field = np.fft.ifft2(spec).real
    assert psd_slope(field) == pytest.approx(-2.0, abs=0.15)
    # taken as 1 um per pixel, the common slope is the field's own; the same field sampled
    # 2 and 4 times as finely (its Fourier series, zero-padded: the very same values at every
    # 2nd / 4th pixel) gives one common slope whatever the sampling, near -2 (the area
    # averaging back to 1 um per pixel damps the top of the band a little)
    assert psd_slope_common(field, 1.0) == pytest.approx(psd_slope(field), abs=1e-6)  # float32
    spec1, half = np.fft.fft2(field), 256
    common = []
    for up in (2, 4):
        fine = np.zeros((512 * up, 512 * up), complex)
        for rows in (slice(0, half), slice(-half, None)):
            for cols in (slice(0, half), slice(-half, None)):
                fine[rows, cols] = spec1[rows, cols]
        fine = np.fft.ifft2(fine).real * up * up
        assert np.allclose(fine[::up, ::up], field)
        common.append(psd_slope_common(fine, 1.0 / up))
    assert common[0] == pytest.approx(common[1], abs=0.05)
    assert common[0] == pytest.approx(-2.0, abs=0.15)
    d = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 4.0])
    assert halo(d, np.array([0.9, 0.95, 1.0, 1.3, 1.1, 2.0])) == {
        "halo_peak": 1.3,
        "halo_at_um": 1.0,
    }  # the 2.0 at 4 um is beyond reach
    # 1..100 over an offset of 100: median 50.5, SD sqrt((100^2 - 1) / 12) = 28.866; numpy's
    # linear percentiles 1 + 0.01 * 99 = 1.99, 1 + 0.05 * 99 = 5.95, 1 + 0.999 * 99 = 99.901
    counts = (np.arange(1, 101, dtype=np.float64) + 100).reshape(10, 10)
    c = contrast(counts, offset=100)
    assert c["sd_over_median"] == pytest.approx(28.866 / 50.5, rel=1e-4)
    want = (1.99 / 50.5, 5.95 / 50.5, 99.901 / 50.5)
    assert (c["p1"], c["p5"], c["p99_9"]) == pytest.approx(want)
    assert np.isnan(contrast(counts, offset=200)["p5"])  # no light left: not a ratio
    layers = np.array([[0, 1, 1, 2], [1, 1, 3, 0]], np.uint8)  # 6 cell pixels, 2 overlapped
    assert overlap_fraction(layers) == pytest.approx(2 / 6)


def _demo_frame0(size=(640, 512), seed=0):
    from data_prep.sim.params import Settings
    from data_prep.sim.plate import PositionSim

    lay = replace(PRESETS["demo"], hours=0.0, width=size[0], height=size[1])
    sim = PositionSim(Settings(lay, seed=seed), 0, 0, 0.0)
    img, labels, snap = sim.render(0)
    return img, labels, snap, sim.renderer.layers


def test_unexposed_frame0_meets_the_real_envelope():
    """Issue 15's targets on frame 0 of an unexposed position with the demo preset's optics."""
    from data_prep.sim.compare import envelope, meets_targets

    for seed in (0, 1):
        img, _, _, layers = _demo_frame0(seed=seed)
        s = envelope(img, paper.PIXEL_SIZE_UM, layers)
        assert s["skewness"] >= 1.0, s
        assert s["bright_tail"] >= 0.01 and s["bright_tail"] >= 1.5 * s["dark_tail"], s
        assert -2.5 <= s["psd_slope"] <= -2.0, s
        assert s["overlap"] <= 0.02, s
        assert all(meets_targets(s).values())
        assert s["halo_peak"] > 1.05  # a bright halo near the cell boundaries


def test_neighbours_abut_without_showing_through():
    """Overlapping cells: one lies on top and hides the other where they overlap; each pixel
    carries one cell's optical path (the owner in the labels)."""
    from data_prep.sim.render import CellRenderer

    lay = replace(LAYOUT, width=256, height=256)
    pop = Population(Biology(), lay, 0.0, np.random.default_rng(0))
    snap = pop.snapshot()
    keep = np.arange(2)  # two cells of the same size, 60% of a radius apart
    snap = {k: v[keep].copy() if isinstance(v, np.ndarray) else v for k, v in snap.items()}
    snap["x"][:] = (128 - 0.3 * 60, 128 + 0.3 * 60)
    snap["y"][:] = 128
    snap["R"][:] = 60
    renderer = CellRenderer(
        Optics(), Biology(), (256, 256), lay.pixel_size_um, np.random.default_rng(1)
    )
    both, labels = renderer.render(snap, 0)
    assert renderer.layers.max() == 1
    alone = []
    for k in range(2):
        one = {key: v[[k]] if isinstance(v, np.ndarray) else v for key, v in snap.items()}
        alone.append(renderer.render(one, 0))
    ids = [int(c) for c in snap["id"]]
    fp = [lab > 0 for _, lab in alone]
    assert (fp[0] & fp[1]).sum() > 2000  # they do overlap
    # the cell on top keeps its whole footprint; the other shows only outside it
    top = [k for k in range(2) if ((labels == ids[k]) == fp[k]).all()]
    assert len(top) == 1
    t, u = top[0], 1 - top[0]
    np.testing.assert_array_equal(labels == ids[u], fp[u] & ~fp[t])
    # the optical path is the owner's own: exactly for the cell below; for the one on top, but
    # along its tapering edge (2.5 um, 8 px) where the thicker of the two shows
    owned = labels == ids[u]
    np.testing.assert_allclose(both[owned], alone[u][0][owned], atol=0.02)
    owned = labels == ids[t]
    assert (both[owned] >= alone[t][0][owned] - 0.02).all()
    inner = cv2.erode(owned.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
    assert inner.sum() > 1000
    np.testing.assert_allclose(both[inner], alone[t][0][inner], atol=0.02)


def test_spread_outlines_have_tips_with_concave_flanks_that_stress_withdraws():
    """A spread cell's outline is drawn out into 3-4 tips with concave flanks (a circle or an
    ellipse has none); stress withdraws the tips in proportion to ``outline_smoothing``."""
    ang = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    circle = np.ones(720)

    def outline(bio, stress, seed):
        renderer = CellRenderer(Optics(), bio, (64, 64), 0.3225, np.random.default_rng(0))
        return renderer._tips(np.random.default_rng(seed), ang, circle, 0.3, stress)

    for seed in range(5):
        r = outline(Biology(), 0.0, seed)
        peaks = (r > np.roll(r, 1)) & (r >= np.roll(r, -1))
        assert peaks.sum() in (3, 4), peaks.sum()
        # signed curvature of a polar curve: r^2 + 2 r'^2 - r r'' < 0 where it bends inwards
        d = ang[1]
        r1 = (np.roll(r, -1) - np.roll(r, 1)) / (2 * d)
        r2 = (np.roll(r, -1) - 2 * r + np.roll(r, 1)) / (d * d)
        concave = (r * r + 2 * r1 * r1 - r * r2) < 0
        assert concave.mean() > 0.3, concave.mean()
        # stress withdraws the tips: all of them where outline_smoothing is 1, leaving the
        # body's outline (here a circle, a little smaller), and half of each at the default 0.5
        flat = outline(replace(Biology(), outline_smoothing=1.0), 1.0, seed)
        base = float(flat[0])
        np.testing.assert_allclose(flat, base, atol=1e-12)
        assert 0.7 < base < 1.0 and r.min() > base
        half = outline(Biology(), 1.0, seed)
        np.testing.assert_allclose(half - base, 0.5 * (r - base), atol=1e-9)


def test_a_vacuole_is_a_sharp_edged_sphere():
    """A vacuole's OPD is a sphere's projected thickness ``amp sqrt(1 - (r / a)^2)``: its
    integral is the hemisphere's (2/3) pi a^2 amp, it peaks at ``amp`` and ends at ``a``
    (a Gaussian spot has no edge for the optics to ring)."""
    from data_prep.sim.render import _sphere

    for radius, (y, x) in ((3.0, (20.0, 20.0)), (4.7, (20.3, 19.6))):
        img = np.zeros((41, 41), np.float32)
        _sphere(img, y, x, radius, -0.5)
        assert img.sum() == pytest.approx(-0.5 * 2 / 3 * np.pi * radius**2, rel=0.02)
        assert img.min() == pytest.approx(-0.5, abs=0.03)
        yy, xx = np.mgrid[0:41, 0:41]
        beyond = np.hypot(yy - y, xx - x) > radius + 1  # a pixel's corner can reach within
        assert not img[beyond].any()


def test_granules_gather_on_one_side_of_the_nucleus_and_disperse_as_cells_round():
    """Perinuclear granules lie on one side of a spread cell's nucleus (their mean direction's
    resultant length near exp(-spread^2 / 2), that of a wrapped normal) and all round a
    rounded cell (near 0)."""
    from data_prep.sim.render import _GRANULE_SPREAD

    lay = replace(LAYOUT, width=128, height=128)
    pop = Population(Biology(), lay, 0.0, np.random.default_rng(2))
    snap = {k: v[:1].copy() for k, v in pop.snapshot().items()}
    renderer = CellRenderer(
        Optics(), Biology(), (128, 128), lay.pixel_size_um, np.random.default_rng(0)
    )
    expected = np.exp(-(_GRANULE_SPREAD**2) / 2)
    for rnd, lo, hi in ((0.0, expected - 0.15, expected + 0.15), (1.0, 0.0, 0.3)):
        lengths = []
        for seed in range(20):
            crng = np.random.default_rng(seed)
            nucleus = (60.0, 64.0, 8.0)  # x, y, radius (px); an unstressed cell: granules only
            ys, xs, _, _ = renderer._points(crng, snap, 0, (64, 64, 30, 30), nucleus, 0, rnd, 1)
            ang = np.arctan2(ys - nucleus[1], xs - nucleus[0])
            lengths.append(np.hypot(np.cos(ang).mean(), np.sin(ang).mean()))
        assert lo < np.mean(lengths) < hi, (rnd, np.mean(lengths))


def test_damage_cues_grow_with_stress():
    """Each cue follows the damage with its own parameter: a stressed cell differs from the
    same cell healthy, more so at full stress; without the cue parameters it does not."""
    from data_prep.sim.render import CellRenderer

    lay = replace(LAYOUT, width=256, height=256)
    pop = Population(Biology(), lay, 0.0, np.random.default_rng(2))
    snap = {k: v[:1].copy() for k, v in pop.snapshot().items()}
    snap["x"][:], snap["y"][:], snap["R"][:] = 128, 128, 55

    def opd(stress, bio=None):
        bio = bio or Biology()
        s = {k: v.copy() for k, v in snap.items()}
        s["stress"][:] = stress
        r = CellRenderer(Optics(), bio, (256, 256), lay.pixel_size_um, np.random.default_rng(3))
        return r.render(s, 0)

    healthy, lab0 = opd(0.0)
    half, lab5 = opd(0.5)
    full, lab1 = opd(1.0)
    assert (lab0 > 0).sum() > (lab5 > 0).sum() > (lab1 > 0).sum()  # loss of spreading

    # dark boundary: the OPD along the inner edge of the outline rises with stress
    def rim_opd(o, lab):
        inner = (lab > 0) & ~(np.roll(lab, 3, 0) == 0) & ~(np.roll(lab, -3, 0) == 0)
        edge = (lab > 0) & ~inner
        return float(o[edge].mean())

    assert rim_opd(healthy, lab0) < rim_opd(half, lab5) < rim_opd(full, lab1)
    off = Biology(
        boundary_darkening=0,
        spread_loss=0,
        thickening=0,
        outline_smoothing=0,
        lamellipodium=0,
        aggregates_max=0,
        lamella_loss=0,
        fibres_max=0,
        stress_vacuoles_max=0,
    )
    np.testing.assert_allclose(opd(1.0, off)[0], opd(0.0, off)[0], atol=1e-6)


def test_dead_cells_lose_phase_contrast_over_time():
    from data_prep.sim.render import CellRenderer

    lay = replace(LAYOUT, width=128, height=128)
    pop = Population(Biology(), lay, 0.0, np.random.default_rng(2))
    snap = {k: v[:1].copy() for k, v in pop.snapshot().items()}
    snap["x"][:], snap["y"][:] = 64, 64
    snap["roundness"][:], snap["dead"][:], snap["stress"][:] = 1.0, True, 1.0
    r = CellRenderer(Optics(), Biology(), (128, 128), lay.pixel_size_um, np.random.default_rng(3))
    bio = Biology()
    means = []
    for hours in (0.0, 6.0, 24.0):
        snap["since_dead_h"][:] = hours
        opd, labels = r.render(snap, 0)
        means.append(float(opd[labels > 0].mean()))
        # contrast falls to a 15% ghost: 0.15 + 0.85 exp(-t / dead_fade_h), granules too
        expected = 0.15 + 0.85 * np.exp(-hours / bio.dead_fade_h)
        assert means[-1] / means[0] == pytest.approx(expected, rel=0.1)
    assert means[2] > 0  # a faint ghost until it detaches


def test_simulate_compare_prints_the_envelope(real_frames_dir, tmp_path, capsys):
    real = sorted(real_frames_dir.glob("*.tif"))[0]
    argv = ["simulate", "--preset", "tiny", "--size", "384", "256", "--compare", str(real)]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skew" in out and "psd slope" in out and "overlap" in out
    assert out.count("sim A1_p") == 2  # the tiny preset's two unexposed positions
    assert (tmp_path / "simulator-vs-real.png").stat().st_size > 10_000
    assert main([*argv[:-1], str(tmp_path / "missing.tif"), "--out", str(tmp_path)]) == 2


def test_compare_takes_the_real_frames_pixel_size_from_its_calibration(
    real_frames_dir, tmp_path, capsys
):
    frame = tifffile.imread(sorted(real_frames_dir.glob("*.tif"))[0])
    calibrated = tmp_path / "calibrated.tif"  # 0.5 um per pixel, ImageJ style
    tifffile.imwrite(calibrated, frame, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um"})  # fmt: skip
    in_cm = tmp_path / "in_cm.tif"  # plain resolution tags: 4000 px per cm = 2.5 um per px
    tifffile.imwrite(in_cm, frame, resolution=(4000.0, 4000.0), resolutionunit="CENTIMETER")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.repeat((frame[..., None] >> 8).astype(np.uint8), 3, axis=2))
    argv = ["simulate", "--preset", "tiny", "--size", "384", "256", "--compare"]
    capsys.readouterr()
    for path, extra, said in (
        (calibrated, [], "0.5 um/px (its TIFF calibration)"),
        (in_cm, [], "2.5 um/px (its TIFF calibration)"),
        (calibrated, ["--real-px", "0.25"], "0.25 um/px (--real-px)"),
        (sorted(real_frames_dir.glob("*.tif"))[0], [], "0.4333 um/px (assumed"),
    ):
        out = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        assert main([*argv, str(path), *extra, "--out", str(out)]) == 0
        assert said in capsys.readouterr().out
    assert main([*argv, str(rgb), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert str(rgb) in err and "RGB" in err and not (tmp_path / "bad").exists()


def test_settings_and_well_names_round_trip():
    import json

    from data_prep.sim.params import Settings
    from data_prep.sim.plate import well_index, well_name

    s = Settings(layout=PRESETS["demo"], optics=Optics(ring_transmission=0.25), seed=5)
    doc = json.loads(json.dumps({**s.to_dict(), "jobs": 2}))  # as settings.json holds it
    assert Settings.from_dict(doc) == s
    assert [well_index(well_name(i)) for i in range(24)] == list(range(24))
    assert [well_index(n) for n in ("", "A0", "A7", "a2", "Z1", "B")] == [-1, -1, -1, 1, 150, -1]


def test_compare_takes_frame0_from_an_experiment_folder(real_frames_dir, tmp_path, capsys):
    real = str(sorted(real_frames_dir.glob("*.tif"))[0])
    exp = tmp_path / "exp"
    assert _simulate(exp) == 0
    rendered = ["simulate", "--preset", "tiny", "--seed", "1", "--size", "384", "256",
                "--hours", "2", "--render-every", "5", "--compare", real]  # fmt: skip
    capsys.readouterr()
    assert main([*rendered, "--out", str(tmp_path / "c1")]) == 0
    by_render = capsys.readouterr().out
    from_exp = ["simulate", "--compare", real, "--experiment", str(exp)]
    assert main([*from_exp, "--out", str(tmp_path / "c2")]) == 0
    by_file = capsys.readouterr().out
    sim_rows = [ln for ln in by_file.splitlines() if ln.startswith("sim ")]
    assert len(sim_rows) == 2 and sim_rows == [
        ln for ln in by_render.splitlines() if ln.startswith("sim ")
    ]  # the written frame 0 is the rendered one, and its overlap is counted (0.00%)
    assert all(ln.split()[-1] == "0.00%" for ln in sim_rows) and "not counted" not in by_file
    # a frame 0 the simulator does not render so: compared as written, overlap not counted
    path = exp / "images" / "A1_p1.tif"
    with tifffile.TiffFile(path) as tf:
        stack, meta = tf.asarray(), tf.imagej_metadata
    stack[0] = stack[0, ::-1]
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "TYX", "unit": meta["unit"]})
    assert main([*from_exp, "--out", str(tmp_path / "c3")]) == 0
    out = capsys.readouterr().out
    assert "overlap not counted for A1_p1" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("sim A1_p1"))
    assert row.split()[-1] == "-"
    # --experiment needs --compare, and a simulated experiment
    assert main(["simulate", "--experiment", str(exp), "--out", str(tmp_path / "c4")]) == 2
    assert main([*from_exp[:-1], str(tmp_path / "c1"), "--out", str(tmp_path / "c5")]) == 2
    err = capsys.readouterr().err
    assert "not a simulated experiment" in err and not (tmp_path / "c5").exists()
