"""From cells to an optical path difference (OPD) map and a label image.

Each cell of a :meth:`data_prep.sim.biology.Population.snapshot` becomes a thickness map
(shared/reference/phase-contrast-and-cells.md, "U2OS cells"): a thin lamella inside a
polygonal outline ``r_b(theta) = R (1 + sum_n a_n cos(n theta - p_n))``, n = 2..7, a thicker cell
body, an oval nucleus with 2-5 nucleoli, perinuclear granules, a few vacuoles and a granular
texture. The OPD is ``sum (n_part - n_medium) * thickness`` (um), which :mod:`optics` turns into
a phase-contrast image. The visible phenotype follows the cell's ``stress`` and ``roundness``
(paper 3.2 and the reference, "What photodamage looks like"):

- stress (early, subtle): loss of spreading (radius down ``spread_loss``, body thicker), a
  less polygonal outline, up to ``aggregates_max`` dark aggregates along the boundary, up to
  ``fibres_max`` retraction fibres left where the edge was;
- roundness (mitosis, dying): a spherical cap ``rounded_um`` tall; dying cells bleb, and
  dead cells shrink and condense (``dead_condensation``) until they detach.

The phenotype parameters are in :class:`data_prep.sim.params.Biology`.

Only pixels inside a cell's bounding box are touched, so the cost is proportional to the
covered area. Static per-cell features (granule and nucleolus positions, texture offset) come
from the cell's own ``seed``, so a cell keeps its look from frame to frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_prep.sim.params import Biology, Optics

_TEXTURE_SIDE = 1024
_N_ANGLES = 720


def texture_tile(rng: np.random.Generator) -> np.ndarray:
    """(1024, 1024) float32 band-limited noise (~1 um grain), unit variance: cytoplasm texture."""
    tex = rng.standard_normal((_TEXTURE_SIDE, _TEXTURE_SIDE)).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), 1.6)
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

    def render(self, snap: dict[str, np.ndarray], step: int) -> tuple[np.ndarray, np.ndarray]:
        """Render one frame.

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
            Cell id per pixel (0 = no cell); where cells overlap, the thicker one owns it.
        """
        o = self.o
        h, w = self.shape
        opd = np.zeros((h, w), np.float32)
        thick = np.zeros((h, w), np.float32)  # thickest cell so far, for the labels
        labels = np.zeros((h, w), np.uint16)
        points = np.zeros((h, w), np.float32)  # impulses: granules, aggregates, fibres
        dn_c = o.n_cytoplasm - o.n_medium
        for i in range(len(snap["id"])):
            self._cell(snap, i, step, opd, thick, labels, points, dn_c)
        opd += cv2.GaussianBlur(points, (0, 0), 1.1)
        return opd, labels

    def _cell(self, s, i, step, opd, thick, labels, points, dn_c) -> None:
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
        amp = s["shape_amp"][i] * (1 - b.outline_smoothing * stress) * (1 - rnd)
        bleb = b.bleb_amplitude * rnd if (rnd > 0 and not mitosis and not dead) else 0.0
        reach = reff * (1 + amp.sum() + bleb) + 4
        x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 1)
        y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        crng = np.random.default_rng(int(s["seed"][i]))
        dx = np.broadcast_to(
            (np.arange(x0, x1, dtype=np.float32) - cx)[None, :], (y1 - y0, x1 - x0)
        )
        dy = np.broadcast_to(
            (np.arange(y0, y1, dtype=np.float32) - cy)[:, None], (y1 - y0, x1 - x0)
        )
        r, theta = cv2.cartToPolar(
            np.ascontiguousarray(dx), np.ascontiguousarray(dy), angleInDegrees=True
        )
        # outline (a lookup table over angle): polygonal when spread, smoother when stressed,
        # round when rounded; dying cells bleb, differently from frame to frame
        ang = np.linspace(0, 2 * np.pi, _N_ANGLES, endpoint=False)
        ns = np.arange(2, 2 + len(amp))[:, None]
        table = 1.0 + (amp[:, None] * np.cos(ns * ang - s["shape_phase"][i][:, None])).sum(0)
        table = np.maximum(table, 0.35)  # never a negative or vanishing radius
        if bleb:
            brng = np.random.default_rng([int(s["seed"][i]), step])
            for c in brng.uniform(0, 2 * np.pi, 6):
                table += bleb * np.exp(-(np.angle(np.exp(1j * (ang - c))) ** 2) / 0.03)
        rb = table.astype(np.float32)[(theta * (_N_ANGLES / 360.0)).astype(np.int32) % _N_ANGLES]
        rho = r / (reff * rb)
        inside = rho < 1.0
        if not inside.any():
            return
        # thickness (um): lamella + body + nucleus (spread) blended with a spherical cap (round)
        edge = np.clip((1 - rho) * reff / 2.5, 0, 1)
        body_r = 0.55 * reff
        body = np.clip(1 - (r / body_r) ** 2, 0, None) ** 1.5
        thicker = 1 + b.thickening * stress
        rim = np.exp(-(((1 - rho) * reff / 3.0) ** 2))  # the thicker cortical rim at the edge
        t_spread = edge * thicker * (o.lamella_um + o.edge_rim_um * rim + o.body_um * body)
        nr = min(float(s["nuc_r"][i]) * (1 - 0.15 * stress), 0.5 * reff)  # daughters: smaller
        ncx = cx + float(s["nuc_dx"][i]) * reff
        ncy = cy + float(s["nuc_dy"][i]) * reff
        q2 = ((dx + (cx - ncx)) / (1.15 * nr)) ** 2 + ((dy + (cy - ncy)) / (0.9 * nr)) ** 2
        nuc = np.where(inside, np.sqrt(np.clip(1 - q2, 0, None)) * (1 - rnd), 0)
        cap = np.sqrt(np.clip(1 - rho * rho, 0, None)) * o.rounded_um * (0.8 if dead else 1.0)
        t = (1 - rnd) * t_spread + rnd * cap
        t = np.where(inside, t, 0).astype(np.float32)
        dn = dn_c * (b.dead_condensation if dead else 1.0)  # condensed cytoplasm
        cell_opd = dn * t + (o.n_nucleus - o.n_cytoplasm) * (o.nucleus_um - o.body_um) * nuc
        # granular texture, moving with the cell
        tx, ty = (int(s["seed"][i]) % 300), (int(s["seed"][i]) // 300 % 300)
        tex = self.texture[ty : ty + (y1 - y0), tx : tx + (x1 - x0)]
        cell_opd = cell_opd + 0.006 * tex * np.minimum(t / o.body_um, 1.0)
        # vacuoles (healthy feature): near-medium index, lower OPD
        n_vac = int(crng.integers(0, 3)) if stress < 0.5 and rnd < 0.5 else 0
        vac = crng.uniform([0, 0.25, 2.0], [2 * np.pi, 0.6, 4.0], (2, 3))
        dv = -0.6 * (o.n_cytoplasm - o.n_vacuole) * o.body_um * (1 - rnd)
        for a, rr, vr in vac[:n_vac]:
            _stamp(
                cell_opd, cy - y0 + rr * reff * np.sin(a), cx - x0 + rr * reff * np.cos(a), vr, dv
            )
        # nucleoli (2-5): dark dots inside the nucleus
        nuc_pts = crng.uniform([0, 0, 1.8], [2 * np.pi, 0.55, 3.0], (int(crng.integers(2, 6)), 3))
        dnn = (o.n_nucleolus - o.n_nucleus) * 3.0 * (1 - rnd)
        for a, rr, sg in nuc_pts:
            _stamp(
                cell_opd, ncy - y0 + rr * nr * np.sin(a), ncx - x0 + rr * nr * np.cos(a), sg, dnn
            )
        opd[y0:y1, x0:x1] += cell_opd
        own = inside & (t > thick[y0:y1, x0:x1])
        labels[y0:y1, x0:x1][own] = int(s["id"][i])
        thick[y0:y1, x0:x1] = np.maximum(thick[y0:y1, x0:x1], t)
        self._points(crng, cx, cy, reff, R, stress, rnd, float(s["heading"][i]), points)

    def _points(self, crng, cx, cy, reff, R, stress, rnd, heading, points) -> None:
        """Granules (perinuclear), boundary aggregates and retraction fibres as impulses."""
        o = self.o
        dn_g = (o.n_granule - o.n_cytoplasm) * 0.8  # um OPD of a ~0.8 um granule
        n = int(crng.integers(30, 90))
        a = crng.uniform(0, 2 * np.pi, n)
        rr = np.sqrt(crng.uniform(0.01, 0.6, n)) * reff
        amps = dn_g * crng.exponential(1.2, n) * (1 - 0.5 * rnd)
        ys, xs, vals = [cy + rr * np.sin(a)], [cx + rr * np.cos(a)], [amps]
        n_max, f_max = self.bio.aggregates_max, self.bio.fibres_max
        n_agg = round(n_max * stress * (1 - rnd))
        if n_agg:
            a = crng.uniform(0, 2 * np.pi, n_max)[:n_agg]
            rr = crng.uniform(0.82, 0.97, n_max)[:n_agg] * reff
            ys.append(cy + rr * np.sin(a))
            xs.append(cx + rr * np.cos(a))
            vals.append(2.2 * dn_g * crng.uniform(0.7, 1.3, n_max)[:n_agg])
        n_fib = round(f_max * stress)
        if n_fib and reff < R:
            a = heading + np.pi + crng.normal(0, 0.9, f_max)[:n_fib]
            length = crng.uniform(0.15, 0.45, f_max)[:n_fib] * R
            for ai, li in zip(a, length, strict=True):
                t = np.arange(0.0, li, 1.0)
                ys.append(cy + (0.9 * reff + t) * np.sin(ai))
                xs.append(cx + (0.9 * reff + t) * np.cos(ai))
                vals.append(np.full(t.size, 0.2 * dn_g))
        _splat(points, np.concatenate(ys), np.concatenate(xs), np.concatenate(vals))
