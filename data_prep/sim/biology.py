"""The agent model: U2OS-like cells that migrate, divide and respond to a light dose.

Kept apart from the rendering (:mod:`data_prep.sim.render`, :mod:`data_prep.sim.optics`): a
:class:`Population` is stepped every 8 minutes (paper 2.1) whether or not the frame is rendered,
so the biology of a position is the same for any ``render_every``, and stepping costs
microseconds per cell. All per-cell quantities are numpy arrays (one entry per cell).

Photodamage (paper 2.1-2.2; shared/reference/phase-contrast-and-cells.md): a dose of ``D`` s
gives cell ``i`` the hit ``h_i = D / dose_ref * s_i``. The sensitivity
``s_i = floor + (1 - floor) exp(sigma z_i)`` has a floor (no cell survives 200 s, paper 2.1)
and a long tail of sensitive cells; ``z_i`` mixes a per-cell and a spatially smooth regional
term (so that at lower doses whole regions die while others persist, paper 2.2). Right after
exposure the damage is ``min(prompt * h_i, prompt_max)`` (the early, subtle signs). Then,
with a stress load ``L`` cleared with time constant ``load_decay``::

    dd/dt = rate * L * (1 + amplification * d) - repair * d,     dL/dt = -L / load_decay

A cell whose damage reaches ``commit_damage`` is committed: over ``dying_h`` (log-normal per
cell) it rounds, blebs and dies, and ``detach_h`` later it detaches and leaves empty area.
Cells below commitment are repaired and recover. Any cell may, with probability
``spontaneous_per_cell`` over 24 h, be hit for other reasons (the ~10% of unexposed crops that
experts called sick, paper 3.1).

States (the ground truth): ``healthy`` (d < stressed_damage), ``stressed`` (not committed),
``dying`` (committed, not dead), ``dead`` (until detachment). The visible phenotype
(:meth:`Population.stress`) ramps up from ``visible_damage`` (below ``stressed_damage``) to
commitment, so a cell called stressed already shows some of it.
"""

from __future__ import annotations

import numpy as np

from data_prep.sim.params import Biology, Layout

STATES = ("healthy", "stressed", "dying", "dead")
HEALTHY, STRESSED, DYING, DEAD = range(4)
MARGIN_PX = 200  # cells live in the frame plus this margin, so cells enter and leave the field
N_HARMONICS = 6  # shape harmonics 2..7
_FLOAT_FIELDS = (
    *("x", "y", "heading", "R", "R0", "nuc_r", "nuc_dx", "nuc_dy", "age", "cycle"),
    *("mitosis_left", "s", "load", "d", "t_commit", "dying", "t_dead", "detach", "spont_t"),
)


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], scale_px: float, coarse: int = 8
) -> np.ndarray:
    """A smooth Gaussian random field, zero mean and unit variance.

    Parameters
    ----------
    shape : (H, W)
    scale_px : float
        Correlation length in pixels (the field is white noise on a grid of this spacing,
        interpolated bicubically).

    Returns
    -------
    (H, W) float32
    """
    import cv2

    gh = max(2, int(np.ceil(shape[0] / scale_px)) + 2)
    gw = max(2, int(np.ceil(shape[1] / scale_px)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    out = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    out -= out.mean()
    return out / max(float(out.std()), 1e-6)


class Population:
    """The cells of one stage position, stepped every ``layout.frame_interval_min``.

    Parameters
    ----------
    bio, layout : the settings
    dose_s : float
        Seconds of 395 nm light given before the time-lapse (paper 2.1).
    rng : numpy Generator
        Drives the biology only (the renderer has its own streams).
    """

    def __init__(self, bio: Biology, layout: Layout, dose_s: float, rng: np.random.Generator):
        self.bio, self.layout, self.dose_s, self.rng = bio, layout, float(dose_s), rng
        self.px = layout.pixel_size_um
        self.dt_h = layout.frame_interval_min / 60.0
        self.t_h = 0.0
        self.step_index = 0
        self.domain = (layout.height + 2 * MARGIN_PX, layout.width + 2 * MARGIN_PX)
        self.region = smooth_field(rng, self.domain, bio.regional_scale_um / self.px)
        crops = self.domain[0] * self.domain[1] / 256.0**2
        self.max_cells = int(bio.max_cells_per_crop * crops)
        n = int(rng.poisson(bio.initial_cells_per_crop * crops))
        self.next_id = 1
        self.c: dict[str, np.ndarray] = {}
        self._add(n, rng.uniform(0, self.domain[1], n), rng.uniform(0, self.domain[0], n))
        self.c["age"] = rng.uniform(0, 1, n) * self.c["cycle"]
        self.c["R"] = self.c["R0"].copy()
        h = self.dose_s / bio.dose_ref_s * self.c["s"]
        self.c["load"] = h
        self.c["d"] = np.minimum(bio.prompt_damage * h, bio.prompt_max)
        self._commit()

    # -- cells --------------------------------------------------------------------------------
    def _add(self, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Append ``n`` new cells at ``(x, y)``; returns their indices."""
        bio, rng = self.bio, self.rng
        r0 = bio.radius_um / self.px
        new = {k: np.zeros(n) for k in _FLOAT_FIELDS}
        new["x"], new["y"] = np.asarray(x, float), np.asarray(y, float)
        new["heading"] = rng.uniform(0, 2 * np.pi, n)
        new["R0"] = r0 * np.exp(bio.radius_cv * rng.standard_normal(n))
        new["R"] = new["R0"]
        new["nuc_r"] = bio.nucleus_radius_um / self.px * np.exp(0.1 * rng.standard_normal(n))
        new["nuc_dx"], new["nuc_dy"] = rng.normal(0, 0.12, (2, n))
        new["cycle"] = bio.cycle_h * np.exp(bio.cycle_cv * rng.standard_normal(n))
        iy = np.clip(new["y"].astype(int), 0, self.domain[0] - 1)
        ix = np.clip(new["x"].astype(int), 0, self.domain[1] - 1)
        w = bio.regional_fraction
        z = np.sqrt(1 - w) * rng.standard_normal(n) + np.sqrt(w) * self.region[iy, ix]
        floor = bio.sensitivity_floor
        new["s"] = floor + (1 - floor) * np.exp(bio.sensitivity_sigma * z)
        new["t_commit"] = np.full(n, np.inf)
        new["t_dead"] = np.full(n, np.inf)
        new["dying"] = bio.dying_h * np.exp(0.35 * rng.standard_normal(n))
        new["detach"] = bio.detach_h * np.exp(0.6 * rng.standard_normal(n))
        spont = rng.random(n) < bio.spontaneous_per_cell * self.layout.hours / 24.0
        new["spont_t"] = np.where(spont, rng.uniform(-2.0, self.layout.hours, n), np.inf)
        ints = {
            "id": np.arange(self.next_id, self.next_id + n),
            "seed": rng.integers(0, 2**31, n),
            "shape_amp": rng.standard_normal((n, N_HARMONICS)),
            "shape_phase": rng.uniform(0, 2 * np.pi, (n, N_HARMONICS)),
        }
        amps = np.array([bio.elongation] + [bio.polygonality] * (N_HARMONICS - 1))
        ints["shape_amp"] = (
            np.minimum(np.abs(ints["shape_amp"]), 2.0)
            * amps
            / np.sqrt(np.arange(1, N_HARMONICS + 1))
        )
        self.next_id += n
        start = len(self.c["x"]) if self.c else 0
        for k, v in {**new, **ints}.items():
            self.c[k] = v if k not in self.c else np.concatenate([self.c[k], v])
        return np.arange(start, start + n)

    def _keep(self, mask: np.ndarray) -> None:
        for k in self.c:
            self.c[k] = self.c[k][mask]

    def _commit(self) -> None:
        c = self.c
        newly = (c["d"] >= self.bio.commit_damage) & ~np.isfinite(c["t_commit"])
        c["t_commit"][newly] = self.t_h

    # -- dynamics -----------------------------------------------------------------------------
    def step(self) -> None:
        """Advance by one frame interval (8 min): damage, death, motion, division."""
        bio, c, dt = self.bio, self.c, self.dt_h
        self.t_h += dt
        self.step_index += 1
        t = self.t_h
        # spontaneous insults (paper 3.1: ~10% of unexposed crops were called sick)
        hit = (c["spont_t"] <= t) & np.isfinite(c["spont_t"])
        c["load"][hit] += 1.6
        c["spont_t"][hit] = np.inf
        # damage (module docstring)
        alive = ~np.isfinite(c["t_commit"])
        d, load = c["d"], c["load"]
        dd = bio.damage_rate_per_h * load * (1 + bio.amplification * d) - bio.repair_rate_per_h * d
        c["d"] = np.where(alive, np.clip(d + dt * dd, 0.0, None), d)
        c["load"] = load * np.exp(-dt / bio.load_decay_h)
        self._commit()
        committed = np.isfinite(c["t_commit"])
        prog = np.clip((t - c["t_commit"]) / c["dying"], 0.0, 1.0)
        cd = bio.commit_damage
        c["d"] = np.where(committed, np.maximum(c["d"], cd + (1 - cd) * prog), c["d"])
        newly_dead = committed & (prog >= 1.0) & ~np.isfinite(c["t_dead"])
        c["t_dead"][newly_dead] = t
        self._keep(~(t - c["t_dead"] >= c["detach"]))
        self._move()
        self._divide()

    def _move(self) -> None:
        bio, rng, c, dt = self.bio, self.rng, self.c, self.dt_h
        n = len(c["x"])
        if n == 0:
            return
        c["heading"] += rng.normal(0, np.sqrt(2 * dt / bio.persistence_h), n)
        stress = self.stress()
        speed = bio.speed_um_per_min * 60.0 / self.px * (1 - stress) * (c["mitosis_left"] == 0)
        vx, vy = speed * np.cos(c["heading"]), speed * np.sin(c["heading"])
        # soft repulsion between overlapping cells (contact inhibition of locomotion)
        dx = c["x"][:, None] - c["x"][None, :]
        dy = c["y"][:, None] - c["y"][None, :]
        dist = np.hypot(dx, dy) + np.eye(n) * 1e9
        reach = 0.8 * (c["R"][:, None] + c["R"][None, :])
        push = np.clip(reach - dist, 0, None) / reach
        vx += 60.0 * (push * dx / dist).sum(1) * (1 - stress)
        vy += 60.0 * (push * dy / dist).sum(1) * (1 - stress)
        c["x"] = (c["x"] + vx * dt) % self.domain[1]
        c["y"] = (c["y"] + vy * dt) % self.domain[0]
        c["R"] += (c["R0"] - c["R"]) * (1 - np.exp(-dt / 2.0))

    def _divide(self) -> None:
        bio, rng, c, dt = self.bio, self.rng, self.c, self.dt_h
        healthy = (c["d"] < bio.stressed_damage) & ~np.isfinite(c["t_commit"])
        c["age"] += dt * healthy
        in_mitosis = c["mitosis_left"] > 0
        c["mitosis_left"] = np.where(in_mitosis & healthy, c["mitosis_left"] - 1, c["mitosis_left"])
        crowded = len(c["x"]) >= self.max_cells
        start = healthy & ~in_mitosis & (c["age"] >= c["cycle"]) & (not crowded)
        c["mitosis_left"][start] = np.ceil(bio.mitosis_min / self.layout.frame_interval_min)
        c["age"][start & crowded] = 0.0
        done = np.flatnonzero(in_mitosis & (c["mitosis_left"] <= 0))
        if done.size == 0:
            return
        axis = rng.uniform(0, 2 * np.pi, done.size)
        off = 0.35 * c["R0"][done]
        x, y = c["x"][done], c["y"][done]
        kids = self._add(done.size, x - off * np.cos(axis), y - off * np.sin(axis))
        c = self.c
        c["x"][done] = (x + off * np.cos(axis)) % self.domain[1]
        c["y"][done] = (y + off * np.sin(axis)) % self.domain[0]
        c["x"][kids] %= self.domain[1]
        c["y"][kids] %= self.domain[0]
        for k in ("s", "load", "d", "R0"):  # daughters inherit the mother's condition
            c[k][kids] = c[k][done]
        for idx in (done, kids):
            c["R"][idx] = 0.5 * c["R0"][idx]
            c["age"][idx] = 0.0
            c["mitosis_left"][idx] = 0.0
            c["heading"][idx] = axis + (np.pi if idx is kids else 0.0)

    # -- observables --------------------------------------------------------------------------
    def stress(self) -> np.ndarray:
        """Visible stress in [0, 1] per cell: 0 healthy, 1 committed (for motion and looks)."""
        bio, c = self.bio, self.c
        s = (c["d"] - bio.visible_damage) / (bio.commit_damage - bio.visible_damage)
        s = np.clip(s, 0.0, 1.0)
        return np.where(np.isfinite(c["t_commit"]), 1.0, s)

    def states(self) -> np.ndarray:
        """Ground-truth state per cell (indices into :data:`STATES`), int8."""
        c = self.c
        st = np.where(c["d"] >= self.bio.stressed_damage, STRESSED, HEALTHY)
        st = np.where(np.isfinite(c["t_commit"]), DYING, st)
        return np.where(np.isfinite(c["t_dead"]), DEAD, st).astype(np.int8)

    def snapshot(self) -> dict[str, np.ndarray]:
        """What the renderer needs, in frame coordinates (x, y in pixels of the frame).

        Returns a dict of per-cell arrays: ``id``, ``seed``, ``x``, ``y``, ``R`` (spread radius),
        ``stress`` and ``roundness`` in [0, 1], ``dead`` (bool), ``mitosis`` (bool), ``state``,
        ``d`` (damage), ``since_dead_h`` (0 while alive), ``heading``, ``shape_amp``/``shape_phase``
        (n, 6), ``nuc_*``.
        """
        c, t = self.c, self.t_h
        committed = np.isfinite(c["t_commit"])
        round_dying = np.clip((t - c["t_commit"]) / (0.6 * c["dying"]), 0.0, 1.0) ** 2
        mitosis = c["mitosis_left"] > 0
        roundness = np.where(committed, round_dying, 0.0)
        roundness = np.where(mitosis, 1.0, roundness)
        snap = {k: v.copy() for k, v in c.items()}
        snap.update(
            x=c["x"] - MARGIN_PX,
            y=c["y"] - MARGIN_PX,
            stress=np.minimum(1.0, self.stress() * self.bio.phenotype_gain),
            roundness=roundness,
            dead=np.isfinite(c["t_dead"]),
            since_dead_h=np.where(np.isfinite(c["t_dead"]), t - c["t_dead"], 0.0),
            mitosis=mitosis,
            state=self.states(),
        )
        return snap
