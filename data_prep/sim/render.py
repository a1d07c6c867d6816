"""From cells to an optical path difference (OPD) map and a label image.

Each cell of a :meth:`data_prep.sim.biology.Population.snapshot` becomes a thickness map
(shared/reference/phase-contrast-and-cells.md, "U2OS cells"): an elongated, irregular outline
(an ellipse of the cell's own aspect along its own axis, ``footprint`` x the radius, times
``1 + sum_n a_n cos(n theta - p_n)``, n = 3..7), pulled out into 3-4 tapering tips with
concave flanks, drawn out into 1-3 thin processes and widened by a lamellipodium towards the
direction of migration, whose leading edge carries thick ruffles; a thin lamella and a rim
along the edge, a cell body that fills the cell but for a thin margin, the ends of its tips,
its processes and its lamellipodium, as a smooth dome (its broad middle shades
off to the background's grey, its steep sides near the outline make the bright halo), an oval
nucleus along the cell's axis with 2-5 nucleoli, dense granules ~1 um across gathered on one
side of the nucleus, vacuoles as sharp-edged spheres of near-medium index (bright discs that
the optics ring with a dark halo), and a granular texture (smoothed over the nucleus). The OPD is
``sum (n_part - n_medium) * thickness`` (um), which :mod:`optics` turns into a phase-contrast
image; the halo follows the thickness (thin lamellae faint, ruffles, cell bodies and rounded
cells bright-haloed). Overlapping cells lie one on another: each pixel belongs to one cell
(occlusion, see :meth:`CellRenderer.render`), so cells never show through each other, and
the free glass between them stays free.

The visible phenotype follows the cell's ``stress``, ``roundness`` and time since death, each
cue with its own parameter in :class:`data_prep.sim.params.Biology` (paper 3.2 and the
reference, "What photodamage looks like"):

- stress (early, local, graded): loss of spreading (``spread_loss``, ``thickening``), a
  smoother outline (``outline_smoothing``), the lamellipodium withdrawn (``lamella_loss``), a
  dark boundary (``boundary_darkening``), dark aggregates along it (``aggregates_max``),
  retraction fibres where the edge was (``fibres_max``), vacuoles (``stress_vacuoles_max``);
- roundness (mitosis, dying): a spherical cap ``rounded_um`` tall; dying cells bleb
  (``bleb_amplitude``); dead cells shrink and condense (``dead_condensation``), then lose
  their phase contrast (``dead_fade_h``) until they detach.

Only pixels inside a cell's bounding box are touched, so the cost is proportional to the
covered area. Static per-cell features (outline, granule and nucleolus positions, texture
offset) come from the cell's own ``seed``, so a cell keeps its look from frame to frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_prep.sim.params import Biology, Optics

_TEXTURE_SIDE = 1024
_N_ANGLES = 720
_BODY_EXTENT = 0.9  # the body's dome reaches this share of the way to the outline (tuned)
_TIPS = (3, 5)  # spread cells are drawn out into this many tapering tips (integers(low, high))
_TIP_REACH = (0.4, 1.0)  # ... each this far beyond the body (x the ellipse's radius; tuned)
_TIP_WIDTH = (0.15, 0.35)  # ... falling off as exp(-|angle| / width) on both flanks (rad; tuned)
_TIP_CORE = 0.8  # the outline between the tips (x the ellipse's radius; keeps the cell's area)
_TIP_BODY = 1.3  # the body reaches into the tips up to this (x the ellipse's radius; tuned)
_VACUOLES = (4, 12)  # healthy cells carry this many vacuoles (numpy's integers(low, high))
_VACUOLE_DEPTH = 0.7  # a vacuole's OPD deficit, as a share of the body's cytoplasm (tuned)
_VACUOLE_PX = (2.8, 5.2)  # ... and its radius (px; a sphere 1.8-3.4 um across)
_VACUOLE_RING = (1.05, 2.0)  # ... at this distance from the nucleus' centre (x its radius)
_GRANULES = (50, 120)  # perinuclear granules per cell (integers(low, high))
_GRANULE_SPREAD = 0.7  # ... gathered on one side of the nucleus, this spread in angle (rad)
_GRANULE_PX = 1.4  # granules and aggregates ~1 um across: their Gaussian radius (px; tuned)
_FIBRE_PX = 0.9  # retraction fibres: the Gaussian radius of their line (px)


def texture_tile(rng: np.random.Generator) -> np.ndarray:
    """(1024, 1024) float32 band-limited noise (~1 um grain), unit variance: cytoplasm texture."""
    tex = rng.standard_normal((_TEXTURE_SIDE, _TEXTURE_SIDE)).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), 2.2)
    return tex / tex.std()


def debris_map(rng: np.random.Generator, shape: tuple[int, int], n: float) -> np.ndarray:
    """(H, W) float32 OPD (um) of specks and debris on the glass, fixed for a position."""
    out = np.zeros(shape, np.float32)
    k = rng.poisson(n)
    ys, xs = rng.uniform(0, shape[0], k), rng.uniform(0, shape[1], k)
    amps = rng.normal(0.0, 0.05, k) + 0.03
    _splat(out, ys, xs, amps)
    sizes = rng.choice([1.0, 2.0, 4.0], k, p=[0.6, 0.3, 0.1])
    small = cv2.GaussianBlur(out, (0, 0), 1.0)
    big = np.zeros_like(out)
    _splat(big, ys[sizes > 1], xs[sizes > 1], 3 * amps[sizes > 1])
    mottle = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), 4.0)
    mottle *= 0.0008 / max(float(mottle.std()), 1e-9)  # faint film on the glass
    return small + cv2.GaussianBlur(big, (0, 0), 3.0) + mottle


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _stamp(img: np.ndarray, y: float, x: float, sigma: float, amp: float) -> None:
    """Add a Gaussian spot of peak ``amp`` at (y, x) to ``img`` in place (local window only)."""
    h, w = img.shape
    rad = int(3 * sigma) + 1
    y0, y1 = max(0, int(y) - rad), min(h, int(y) + rad + 1)
    x0, x1 = max(0, int(x) - rad), min(w, int(x) + rad + 1)
    if y0 >= y1 or x0 >= x1:
        return
    gy = np.exp(-((np.arange(y0, y1) - y) ** 2) / (2 * sigma * sigma))[:, None]
    gx = np.exp(-((np.arange(x0, x1) - x) ** 2) / (2 * sigma * sigma))[None, :]
    img[y0:y1, x0:x1] += (amp * gy * gx).astype(img.dtype)


def _sphere(img: np.ndarray, y: float, x: float, radius: float, amp: float) -> None:
    """Add a sphere's projected thickness profile ``amp sqrt(1 - (r / radius)^2)`` at (y, x)
    to ``img`` in place: a sharp-edged disc, unlike :func:`_stamp`'s Gaussian, so the optics
    ring it with a halo. Each pixel is sampled 4 x 4 times (no stair-stepped edge)."""
    h, w = img.shape
    rad = int(radius) + 2
    y0, y1 = max(0, int(y) - rad), min(h, int(y) + rad + 1)
    x0, x1 = max(0, int(x) - rad), min(w, int(x) + rad + 1)
    if y0 >= y1 or x0 >= x1:
        return
    sub = (np.arange(4) - 1.5) / 4
    yy = (np.arange(y0, y1)[:, None] + sub[None, :] - y).reshape(-1, 1)
    xx = (np.arange(x0, x1)[:, None] + sub[None, :] - x).reshape(1, -1)
    prof = np.sqrt(np.clip(1 - (yy * yy + xx * xx) / (radius * radius), 0, None))
    prof = prof.reshape(y1 - y0, 4, x1 - x0, 4).mean((1, 3))
    img[y0:y1, x0:x1] += (amp * prof).astype(img.dtype)


def _splat(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, amps: np.ndarray) -> None:
    """Add point impulses at sub-pixel positions (bilinear weights), in place; clips to img."""
    h, w = img.shape
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, dx, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(img, (yy[ok], xx[ok]), (amps * wt)[ok])


class CellRenderer:
    """Renders snapshots of one position into OPD maps and label images.

    Parameters
    ----------
    optics : Optics
        Refractive indices and thicknesses.
    bio : Biology
        The phenotype parameters (how stress, rounding and death look).
    shape : (H, W)
        Frame size in pixels.
    pixel_size_um : float
    rng : numpy Generator
        For the static texture only.
    """

    def __init__(
        self,
        optics: Optics,
        bio: Biology,
        shape: tuple[int, int],
        pixel_size_um: float,
        rng: np.random.Generator,
    ):
        self.o, self.bio, self.shape, self.px = optics, bio, shape, pixel_size_um
        self.texture = texture_tile(rng)
        self.layers: np.ndarray | None = None  # (H, W) uint8 of the last frame, see render()

    def render(self, snap: dict[str, np.ndarray], step: int) -> tuple[np.ndarray, np.ndarray]:
        """Render one frame.

        Each pixel belongs to at most one cell (neighbours do not show through each other):
        cells are drawn in painter's order, spread ones by a depth of their own (from their
        ``seed``), rounded (mitotic, dying, dead) ones last, and the cell on top owns its whole
        outline; along its tapering edge the thicker optical path of it and the cell below
        shows, so its edge casts no dark gap. :attr:`layers` counts, per pixel, the cells whose
        optical path is summed there (0 or 1 here; 2 or more would be see-through overlap).

        Parameters
        ----------
        snap : dict
            :meth:`Population.snapshot` (frame coordinates).
        step : int
            The 8-min step index (varies blebs from frame to frame).

        Returns
        -------
        opd : (H, W) float32
            Optical path difference to the medium in um.
        labels : (H, W) uint16
            Cell id per pixel (0 = no cell): the cell that owns the pixel.
        """
        h, w = self.shape
        opd = np.zeros((h, w), np.float32)
        labels = np.zeros((h, w), np.uint16)
        pts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []
        # painter's order: spread cells by their own depth, rounded ones on top
        depth = np.array([np.random.default_rng(int(sd)).random() for sd in snap["seed"]])
        for i in np.lexsort((depth, np.asarray(snap["roundness"]) > 0)):
            self._cell(snap, int(i), step, opd, labels, pts)
        self.layers = (labels > 0).astype(np.uint8)
        fibres = np.zeros((h, w), np.float32)  # impulses: retraction fibres (thin lines)
        grains = np.zeros((h, w), np.float32)  # ... granules and aggregates (~1 um)
        if pts:
            ys, xs, vals, ids = (np.concatenate(a) for a in zip(*pts, strict=True))
            # a cell's granules show only where the cell is on top (fibres: on bare glass too)
            iy = np.clip(ys.astype(int), 0, h - 1)
            ix = np.clip(xs.astype(int), 0, w - 1)
            lab = labels[iy, ix]
            keep = (lab == ids) | ((lab == 0) & (vals < 0))
            fib, gr = keep & (vals < 0), keep & (vals > 0)
            _splat(fibres, ys[fib], xs[fib], -vals[fib])
            # a granule's amplitude is its peak OPD before the blur to _FIBRE_PX: the wider
            # blur keeps that peak
            _splat(grains, ys[gr], xs[gr], vals[gr] * (_GRANULE_PX / _FIBRE_PX) ** 2)
        opd += cv2.GaussianBlur(fibres, (0, 0), _FIBRE_PX)
        opd += cv2.GaussianBlur(grains, (0, 0), _GRANULE_PX)
        return opd, labels

    def _outline(
        self, s, i: int, crng, stress: float, rnd: float, step: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outline radius relative to ``reff``, the lamellipodium's weight and the share of the
        outline that the body reaches, per angle.

        All three are (A,) float32 over :data:`_N_ANGLES` angles.

        Spread: an ellipse of the cell's own elongation along its own axis (the 2nd harmonic's
        amplitude and phase), of the area of the circle of radius ``reff``, made irregular by
        harmonics 3-7, pulled out into tips (:meth:`_tips`), drawn out into 1-3 thin
        processes and widened by a lamellipodium towards the heading; stress smooths the
        outline, withdraws the tips, shortens the processes and withdraws the lamellipodium;
        rounded cells are round, and dying ones bleb, differently from frame to frame.
        """
        b = self.bio
        ang = np.linspace(0, 2 * np.pi, _N_ANGLES, endpoint=False)
        amp = s["shape_amp"][i] * (1 - b.outline_smoothing * stress)
        axis = 0.5 * float(s["shape_phase"][i][0])
        e = 1 + min(float(amp[0]), 1.5)  # the semi-axes are e and 1/e (aspect e^2)
        along, across = np.cos(ang - axis), np.sin(ang - axis)
        table = b.footprint / np.sqrt((along / e) ** 2 + (across * e) ** 2)
        ns = np.arange(3, 2 + len(amp))[:, None]
        table = table * (
            1.0 + (amp[1:, None] * np.cos(ns * ang - s["shape_phase"][i][1:, None])).sum(0)
        )
        core = table  # the cell body's side of the outline, before processes and lamellipodium
        table = self._tips(crng, ang, core, axis, stress)
        core = np.minimum(table, _TIP_BODY * core)
        n_proc = int(crng.integers(1, 4))
        pa = axis + np.pi * crng.integers(0, 2, n_proc) + crng.normal(0, 0.35, n_proc)
        plen = (
            crng.uniform(0.3, 0.9, n_proc) * b.process_length * (1 - b.outline_smoothing * stress)
        )
        pw = crng.uniform(0.06, 0.14, n_proc)
        for a, ln, wd in zip(pa, plen, pw, strict=True):
            table = table + ln * np.exp(-(_wrap(ang - a) ** 2) / (2 * wd * wd))
        toward = _wrap(ang - float(s["heading"][i]))
        lobe = np.exp(-(toward**2) / (2 * 0.5**2))
        table = table + b.lamellipodium * (1 - b.lamella_loss * stress) * lobe
        table = np.maximum(table, 0.3)  # never a negative or vanishing radius
        table = (1 - rnd) * table + rnd
        inner = np.minimum(((1 - rnd) * core + rnd) / table, 1.0)
        if rnd > 0 and not s["mitosis"][i] and not s["dead"][i]:
            bleb = b.bleb_amplitude * rnd
            brng = np.random.default_rng([int(s["seed"][i]), step])
            for c in brng.uniform(0, 2 * np.pi, 6):
                table += bleb * np.exp(-(_wrap(ang - c) ** 2) / 0.03)
        return table.astype(np.float32), lobe.astype(np.float32), inner.astype(np.float32)

    def _tips(
        self, crng, ang: np.ndarray, core: np.ndarray, axis: float, stress: float
    ) -> np.ndarray:
        """The outline drawn out into 3-4 tapering tips, (A,) relative to ``reff``.

        Spread U2OS and T98G cells hold on at a few points and are pulled out there into
        pointed tips with concave, partly straight flanks between them (the real frames in
        shared/data/real). Each tip adds ``reach exp(-|angle - tip| / width)`` to the radius:
        a cusp, whose flanks fall off concavely into the body's outline. The tips lie roughly
        evenly around the cell, starting from its long axis; stress withdraws them
        (``outline_smoothing``), so a stressed cell rounds its outline.
        """
        n = int(crng.integers(*_TIPS))
        ta = axis + np.linspace(0, 2 * np.pi, n, endpoint=False) + crng.normal(0, 0.3, n)
        reach = crng.uniform(*_TIP_REACH, n) * (1 - self.bio.outline_smoothing * stress)
        width = crng.uniform(*_TIP_WIDTH, n)
        cusp = reach[:, None] * np.exp(-np.abs(_wrap(ang[None, :] - ta[:, None])) / width[:, None])
        return core * (_TIP_CORE + cusp.sum(0))

    def _cell(self, s, i, step, opd, labels, pts) -> None:
        o, b = self.o, self.bio
        h, w = self.shape
        stress, rnd, dead = float(s["stress"][i]), float(s["roundness"][i]), bool(s["dead"][i])
        mitosis = bool(s["mitosis"][i])
        R = float(s["R"][i])
        r_spread = R * (1 - b.spread_loss * stress)
        r_round = (
            b.mitotic_radius_um if mitosis else (b.dead_radius_um if dead else b.dying_radius_um)
        ) / self.px
        reff = (1 - rnd) * r_spread + rnd * r_round
        cx, cy = float(s["x"][i]), float(s["y"][i])
        crng = np.random.default_rng(int(s["seed"][i]))
        table, lobe, inner = self._outline(s, i, crng, stress, rnd, step)
        # the bounding box of the outline (elongated cells: much smaller than the circle's)
        ang = np.linspace(0, 2 * np.pi, _N_ANGLES, endpoint=False)
        ox, oy = reff * table * np.cos(ang), reff * table * np.sin(ang)
        x0, x1 = max(0, int(cx + ox.min() - 4)), min(w, int(cx + ox.max() + 4) + 1)
        y0, y1 = max(0, int(cy + oy.min() - 4)), min(h, int(cy + oy.max() + 4) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        dx = np.broadcast_to(
            (np.arange(x0, x1, dtype=np.float32) - cx)[None, :], (y1 - y0, x1 - x0)
        )
        dy = np.broadcast_to(
            (np.arange(y0, y1, dtype=np.float32) - cy)[:, None], (y1 - y0, x1 - x0)
        )
        r, theta = cv2.cartToPolar(
            np.ascontiguousarray(dx), np.ascontiguousarray(dy), angleInDegrees=True
        )
        # the outline between two of its angles, linearly (the nearest angle alone would
        # make a stair-stepped, zipper-like edge where the outline runs steeply)
        fa = theta * (_N_ANGLES / 360.0)
        ai = fa.astype(np.int32) % _N_ANGLES
        wa = fa - np.floor(fa)
        rb = table[ai] * (1 - wa) + table[(ai + 1) % _N_ANGLES] * wa
        rho = r / (reff * rb)
        own = rho < 1.0  # drawn over the cells below it (occlusion)
        if not own.any():
            return
        # thickness (um): lamella + rim + body + nucleus (spread) blended with a cap (round).
        # The rim (cortex, ruffles) is thickest along the lamellipodium's leading edge.
        depth_px = (1 - rho) * reff * rb  # distance inside the outline along the ray
        edge = np.clip(depth_px * (self.px / o.edge_taper_um), 0, 1)
        # the body fills the cell but for a thin margin, its processes and its lamellipodium,
        # as a smooth dome: its broad middle shades off to the background's grey, and only its
        # steep sides, near the outline, make halos
        body = np.clip(1 - (rho / (_BODY_EXTENT * inner[ai])) ** 2, 0, 1)
        thicker = 1 + b.thickening * stress
        ruffle = 1 + b.ruffle * (1 - b.lamella_loss * stress) * lobe[ai]
        rim = np.exp(-((depth_px * (self.px / o.rim_width_um)) ** 2)) * ruffle
        t_spread = edge * thicker * (o.lamella_um + o.edge_rim_um * rim + o.body_um * body)
        # the nucleus: an oval along the cell's axis, off centre along it, inside its width
        axis = 0.5 * float(s["shape_phase"][i][0])
        ca, sa = np.cos(axis), np.sin(axis)
        width = reff * float(
            table[
                [round(_N_ANGLES * (axis / (2 * np.pi) + k / 4)) % _N_ANGLES for k in (1, 3)]
            ].min()
        )
        nr = min(float(s["nuc_r"][i]) * (1 - 0.7 * b.spread_loss * stress), 0.5 * reff, 0.8 * width)
        shift = (float(s["nuc_dx"][i]) * ca + float(s["nuc_dy"][i]) * sa) * reff
        ncx, ncy = cx + shift * ca, cy + shift * sa
        u, v = dx + (cx - ncx), dy + (cy - ncy)
        q2 = ((u * ca + v * sa) / (1.15 * nr)) ** 2 + ((v * ca - u * sa) / (0.9 * nr)) ** 2
        nuc = np.clip(1 - q2, 0, None) ** 1.5 * (1 - rnd)  # a smooth dome
        cap = np.sqrt(np.clip(1 - rho * rho, 0, None)) * o.rounded_um * (0.6 if dead else 1.0)
        t = ((1 - rnd) * t_spread + rnd * cap).astype(np.float32)
        # dead cells shrink and condense, then lose their phase contrast as the membrane leaks
        # (a faint ghost remains until detachment; its granules fade with it)
        dn_c = o.n_cytoplasm - o.n_medium
        ghost = 1.0
        if dead:
            ghost = 0.15 + 0.85 * np.exp(-float(s["since_dead_h"][i]) / b.dead_fade_h)
        dn = dn_c * (b.dead_condensation * ghost if dead else 1.0)
        cell_opd = dn * t + (o.n_nucleus - o.n_cytoplasm) * (o.nucleus_um - o.body_um) * nuc
        # dark cell boundary: dense material along the cortex, growing with stress
        dark_rim = np.exp(-((depth_px * (self.px / 1.0)) ** 2))  # ~1 um band
        cell_opd += (dn_c * b.boundary_darkening * stress * (1 - rnd)) * dark_rim
        # granular texture, moving with the cell
        tx, ty = (int(s["seed"][i]) % 300), (int(s["seed"][i]) // 300 % 300)
        tex = self.texture[ty : ty + (y1 - y0), tx : tx + (x1 - x0)]
        cell_opd = cell_opd + o.texture_um * tex * np.minimum(t / o.body_um, 1.0) * (
            1 - 0.9 * np.minimum(3 * nuc, 1)
        )
        # vacuoles: near-medium index, so lower OPD (bright), around the nucleus: 4-11 in
        # healthy cells, more as stress builds up (stress-induced vacuolisation)
        n_vac = int(crng.integers(*_VACUOLES)) if rnd < 0.5 else 0
        n_vac += round(b.stress_vacuoles_max * stress * (1 - rnd))
        n_slots = b.stress_vacuoles_max + _VACUOLES[1] - 1
        vac = crng.uniform(
            [0, _VACUOLE_RING[0], _VACUOLE_PX[0]],
            [2 * np.pi, _VACUOLE_RING[1], _VACUOLE_PX[1]],
            (n_slots, 3),
        )
        dv = -_VACUOLE_DEPTH * (o.n_cytoplasm - o.n_vacuole) * o.body_um * (1 - rnd)
        for a, rr, vr in vac[:n_vac]:
            vy, vx = ncy - y0 + rr * nr * np.sin(a), ncx - x0 + rr * nr * np.cos(a)
            _sphere(cell_opd, vy, vx, vr, dv)
        # nucleoli (2-5): dark dots inside the nucleus
        nuc_pts = crng.uniform([0, 0, 1.8], [2 * np.pi, 0.55, 3.0], (int(crng.integers(2, 6)), 3))
        dnn = (o.n_nucleolus - o.n_nucleus) * 1.5 * (1 - rnd)  # ~1.5 um thick
        for a, rr, sg in nuc_pts:
            _stamp(
                cell_opd, ncy - y0 + rr * nr * np.sin(a), ncx - x0 + rr * nr * np.cos(a), sg, dnn
            )
        # where this cell's tapering edge lies over a cell below, the thicker of the two shows
        # (no dark gap along the edge); elsewhere the cell below is hidden
        under = opd[y0:y1, x0:x1]
        opd[y0:y1, x0:x1][own] = np.where(edge < 1, np.maximum(cell_opd, under), cell_opd)[own]
        labels[y0:y1, x0:x1][own] = int(s["id"][i])
        pts.append(self._points(crng, s, i, (cx, cy, reff, R), (ncx, ncy, nr), stress, rnd, ghost))

    def _points(self, crng, s, i, cell, nucleus, stress, rnd, ghost):
        """Granules (perinuclear), boundary aggregates and retraction fibres as impulses
        (:meth:`render` blurs granules and aggregates to ``_GRANULE_PX``, fibres to
        ``_FIBRE_PX``).

        ``cell`` is (x, y, current radius, spread radius) and ``nucleus`` (x, y, radius), px;
        ``ghost`` scales the granules of a dead cell as it loses its phase contrast.

        Returns ys, xs, amplitudes (um OPD; negative for retraction fibres, which lie on the
        glass outside the cell) and the cell id per impulse.
        """
        o, b = self.o, self.bio
        (cx, cy, reff, R), (ncx, ncy, nr) = cell, nucleus
        dn_g = (o.n_granule - o.n_cytoplasm) * 0.8  # um OPD of a ~0.8 um granule
        n = int(crng.integers(*_GRANULES))
        # perinuclear, gathered on one side of the nucleus (the Golgi and the ER beside it);
        # as the cell rounds, they disperse all over it
        side = crng.uniform(0, 2 * np.pi) + crng.normal(0, _GRANULE_SPREAD, n)
        a = (1 - rnd) * side + rnd * crng.uniform(0, 2 * np.pi, n)
        rr = (1 - rnd) * crng.uniform(1.0, 2.4, n) * nr + rnd * crng.uniform(0, 0.8, n) * reff
        # many faint granules make a mottle; few reach the dark tail (tuned)
        amps = dn_g * crng.exponential(1.08, n) * (1 - 0.5 * rnd) * ghost
        ys, xs, vals = [ncy + rr * np.sin(a)], [ncx + rr * np.cos(a)], [amps]
        n_max, f_max = b.aggregates_max, b.fibres_max
        n_agg = round(n_max * stress * (1 - rnd))
        if n_agg:
            a = crng.uniform(0, 2 * np.pi, n_max)[:n_agg]
            rr = crng.uniform(0.82, 0.97, n_max)[:n_agg] * reff
            ys.append(cy + rr * np.sin(a))
            xs.append(cx + rr * np.cos(a))
            vals.append(2.2 * dn_g * crng.uniform(0.7, 1.3, n_max)[:n_agg])
        n_fib = round(f_max * stress)
        if n_fib and reff < R:
            heading = float(s["heading"][i])
            a = heading + np.pi + crng.normal(0, 0.9, f_max)[:n_fib]
            length = crng.uniform(0.15, 0.45, f_max)[:n_fib] * R
            for ai, li in zip(a, length, strict=True):
                t = np.arange(0.0, li, 1.0)
                ys.append(cy + (0.9 * reff + t) * np.sin(ai))
                xs.append(cx + (0.9 * reff + t) * np.cos(ai))
                vals.append(np.full(t.size, -0.2 * dn_g))
        ys_, xs_, vals_ = np.concatenate(ys), np.concatenate(xs), np.concatenate(vals)
        return ys_, xs_, vals_, np.full(ys_.size, int(s["id"][i]))
