"""Parameters of the simulator, with defaults, units and sources, and the presets.

Three groups, kept apart as the model is: :class:`Biology` (the agent model), :class:`Optics`
(phase-contrast image formation and camera) and :class:`Layout` (plate, doses, frames).
Sources: "paper" is the DeadNet paper (section 2.1), "ref" is
shared/reference/phase-contrast-and-cells.md (typical values for U2OS cells, Zernike phase
contrast and the ORCA-ER camera); "tuned" means chosen so that the simulated experiment shows
what the paper reports (see docs/simulator.md). Every group rejects unknown keys, so a typo in
a settings file is an error rather than a silently ignored value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from data_prep.core import paper
from data_prep.core.errors import UserError


def _from_dict(cls, doc: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise UserError(f"{where}: unknown {cls.__name__} setting(s) {', '.join(unknown)}.")
    return cls(**doc)


@dataclass(frozen=True)
class Biology:
    """The agent model of U2OS cells and their photodamage (units in the names)."""

    # --- Cells (ref, "U2OS cells") ---
    radius_um: float = 22.0  # spread cell radius; 30-60 um across -> 100-200 px (ref)
    radius_cv: float = 0.18  # cell-to-cell variation of the radius (tuned)
    polygonality: float = 0.08  # amplitude of harmonics 3-7: irregular outlines (tuned)
    elongation: float = 0.75  # the cell's elongation (aspect up to ~6; tuned to the real frames)
    footprint: float = 1.0  # the spread outline's scale: free glass between neighbours (tuned)
    process_length: float = 1.2  # thin processes drawn out of spread cells (x radius; tuned)
    nucleus_radius_um: float = 8.5  # nucleus 15-20 um across (ref)
    speed_um_per_min: float = 0.4  # migration 0.3-0.5 um/min (ref)
    persistence_h: float = 1.5  # direction persistence of the random walk (tuned)
    cycle_h: float = 27.0  # doubling 25-30 h (ref)
    cycle_cv: float = 0.12  # cell-to-cell variation of the cycle length (tuned)
    mitosis_min: float = 50.0  # rounding 45-60 min (ref)
    initial_cells_per_crop: float = 3.0  # cells per 256 px crop at t=0; 1-6 per crop (paper 2.2)
    max_cells_per_crop: float = 5.0  # contact inhibition: no division beyond this density
    # --- Photodamage (tuned; paper 2.1-2.2 and ref "What photodamage looks like") ---
    dose_ref_s: float = 123.0  # the hit h = dose / dose_ref * sensitivity; median death ~80 s
    sensitivity_sigma: float = 0.78  # log-normal spread of the sensitivity above its floor
    sensitivity_floor: float = 0.5  # no cell survives 200 s (paper 2.1: mass death at 200 s)
    regional_fraction: float = 0.5  # share of the log-variance that is regional (paper 2.2)
    regional_scale_um: float = 110.0  # correlation length of the regional susceptibility
    prompt_damage: float = 0.25  # damage right after exposure per unit hit (early subtle signs)
    prompt_max: float = 0.4  # ... capped below commitment: no cell is dying at frame 0
    load_decay_h: float = 5.0  # clearance of the light-induced stress load
    damage_rate_per_h: float = 0.16  # damage production per unit load
    repair_rate_per_h: float = 0.20  # first-order repair (recovery at low dose)
    amplification: float = 3.0  # self-amplification of damage (commitment at high dose)
    commit_damage: float = 0.5  # damage at which a cell is committed to die
    dying_h: float = 8.0  # median time from commitment to death (rounding, blebbing)
    detach_h: float = 8.0  # median time from death to detachment
    spontaneous_per_cell: float = 0.05  # chance per 24 h that a cell is sick for other reasons
    stressed_damage: float = 0.2  # damage from which a cell counts as stressed (ground truth)
    visible_damage: float = 0.1  # damage from which the stressed phenotype starts to show
    phenotype_gain: float = 1.0  # scales how visible the stressed phenotype is (tuned for A)
    # --- Phenotype: how stress and death look (ref, "What photodamage looks like"; tuned) ---
    spread_loss: float = 0.22  # loss of spreading: radius lost at full stress
    thickening: float = 0.35  # ... and the cell thickens by this much (volume is kept)
    outline_smoothing: float = 0.5  # share of elongation, irregularity, processes lost
    aggregates_max: int = 14  # dark aggregates along the boundary at full stress
    fibres_max: int = 5  # retraction fibres at full stress
    mitotic_radius_um: float = 8.4  # rounded mitotic cell, ~17 um across (ref: 10-15 um tall)
    dying_radius_um: float = 7.1  # rounded dying cell
    dead_radius_um: float = 5.2  # shrunken dead cell
    bleb_amplitude: float = 0.12  # outline bumps of dying cells (relative to the radius)
    dead_condensation: float = 1.5  # refractive-index contrast of dead (condensed) cytoplasm
    dead_fade_h: float = 6.0  # dead cells lose phase contrast (leaky membrane) with this time
    boundary_darkening: float = 1.2  # dark cortex along the boundary at full stress (x lamella)
    stress_vacuoles_max: int = 4  # vacuoles that appear with stress (vacuolisation)
    lamellipodium: float = 0.25  # extension of the outline towards the heading (spread cells)
    lamella_loss: float = 1.0  # share of the lamellipodium (and its ruffles) lost at full stress
    ruffle: float = 7.0  # extra rim thickness along the lamellipodium's leading edge

    @classmethod
    def from_dict(cls, doc: dict, where: str = "settings") -> Biology:
        return _from_dict(cls, doc, where)


@dataclass(frozen=True)
class Optics:
    """Zernike phase contrast (ref, "Phase-contrast image formation") and the camera."""

    wavelength_um: float = 0.55  # green transmitted light (ref)
    na: float = 0.75  # 20x/0.75 Plan Apo Ph2 (paper 2.1)
    ring_radius_na: float = 0.25  # Ph2 condenser annulus NA 0.2-0.3 (ref)
    ring_width_na: float = 0.09  # a fraction of the radius (ref); sets halo and shade-off
    ring_transmission: float = 0.22  # amplitude 0.15-0.3 (ref); 0.22: nearer real (stop 33)
    annulus_fraction: float = 1.0  # condenser annulus' image width / phase ring width (<= 1)
    n_medium: float = 1.335  # (ref)
    n_cytoplasm: float = 1.365  # 1.36-1.37 (ref)
    n_nucleus: float = 1.375  # 1.36-1.39 (ref)
    n_nucleolus: float = 1.385  # 1.38-1.40 (ref)
    n_granule: float = 1.42  # lipid droplets and dense granules (ref: "higher")
    n_vacuole: float = 1.338  # close to the medium (ref)
    lamella_um: float = 0.2  # 0.1-1 um (ref)
    edge_rim_um: float = 0.2  # thicker rim along the edge (tuned to the real frames)
    rim_width_um: float = 1.5  # ... its width (tuned)
    edge_taper_um: float = 2.5  # the cell thins to nothing over this distance to its edge
    body_um: float = 1.3  # 2-4 um (ref); below it: real frames show faint cell bodies (tuned)
    nucleus_um: float = 2.4  # 4-6 um over the nucleus (ref); less: grey nuclei as in real frames
    rounded_um: float = 12.0  # rounded mitotic or dying cell 10-15 um tall (ref)
    texture_um: float = 0.002  # OPD of the granular cytoplasm texture (tuned)
    illumination_variation: float = 0.12  # smooth, 5-20 % across the field (ref)
    focus_drift_um: float = 0.4  # standard deviation of the slow focus drift (tuned)
    background_electrons: float = 3000.0  # "a few thousand electrons" (ref)
    read_noise_electrons: float = 8.0  # 5-10 e- (ref)
    electrons_per_adu: float = 4.5  # ORCA-ER full well ~18000 e- over 12 bits
    offset_adu: float = 100.0  # camera bias (typical CCD)
    adc_bits: int = 12  # 12-bit readout stored as 16-bit (ref)
    debris_per_frame: float = 150.0  # out-of-focus specks and debris on the glass (ref)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "settings") -> Optics:
        made = _from_dict(cls, doc, where)
        if not 0 < made.annulus_fraction <= 1:
            raise UserError(
                f"{where}: annulus_fraction must be in (0, 1] (the annulus' image lies within "
                f"the phase ring), not {made.annulus_fraction}."
            )
        return made


@dataclass(frozen=True)
class Layout:
    """The plate: wells with one dose each, positions per well, frames (paper 2.1)."""

    plate: str = "sim"
    doses_s: tuple[float, ...] = (0.0, 0.0, 20.0, 40.0, 80.0, 120.0, 200.0, 200.0)
    positions_per_well: int = 3  # 3-4 (paper 2.1)
    hours: float = 18.0  # 18-24 h time-lapse (paper 2.1)
    frame_interval_min: float = paper.FRAME_INTERVAL_MIN  # biology always steps at 8 min
    render_every: int = 1  # render every k-th 8-min frame (the TIFF's interval is k x 8 min)
    width: int = paper.FRAME_WIDTH_PX
    height: int = paper.FRAME_HEIGHT_PX
    pixel_size_um: float = paper.PIXEL_SIZE_UM
    votes: bool = True  # simulated expert votes for Data Set B (0-80 s positions)

    @property
    def n_steps(self) -> int:
        """Biology steps (8-min frames) in the time-lapse, including frame 0."""
        return round(self.hours * 60.0 / self.frame_interval_min) + 1

    @property
    def n_frames(self) -> int:
        """Frames rendered and written per position."""
        return (self.n_steps - 1) // self.render_every + 1

    def check(self) -> None:
        if not self.doses_s:
            raise UserError("--doses: give at least one dose.")
        if any(d < 0 for d in self.doses_s):
            raise UserError("--doses: doses are seconds of light and cannot be negative.")
        if self.positions_per_well < 1 or self.render_every < 1 or self.hours < 0:
            raise UserError("--positions, --render-every must be >= 1 and --hours >= 0.")
        if self.width < 256 or self.height < 256:
            raise UserError("--size: frames must be at least 256 x 256 px (one crop).")

    @classmethod
    def from_dict(cls, doc: dict, where: str = "settings") -> Layout:
        doc = dict(doc)
        if "doses_s" in doc:
            doc["doses_s"] = tuple(float(d) for d in doc["doses_s"])
        return _from_dict(cls, doc, where)


@dataclass(frozen=True)
class Settings:
    """Everything one simulation uses; saved as JSON next to its output."""

    layout: Layout = field(default_factory=Layout)
    biology: Biology = field(default_factory=Biology)
    optics: Optics = field(default_factory=Optics)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict, where: str = "settings") -> Settings:
        """The settings :meth:`to_dict` wrote (other top-level keys, such as those a
        simulation adds to its settings.json, are ignored)."""
        parts = {"layout": Layout, "biology": Biology, "optics": Optics}
        if not isinstance(doc, dict) or any(not isinstance(doc.get(k), dict) for k in parts):
            raise UserError(f"{where}: expected the simulator's layout, biology and optics.")
        try:
            seed = int(doc.get("seed", 0))
        except (TypeError, ValueError):
            raise UserError(f"{where}: the seed is not an integer.") from None
        made = {k: c.from_dict(doc[k], where) for k, c in parts.items()}
        return cls(**made, seed=seed)

    def with_layout(self, **changes) -> Settings:
        return replace(self, layout=replace(self.layout, **changes))


# Presets. tiny: tests (seconds); demo: ``make demo`` (a minute or two on 2 cores, enough Data
# Set A material); paper: the full layout of section 2.1 (24-well plate, 4 positions per well,
# 24 h at 8 min), streamed to disk.
PRESETS: dict[str, Layout] = {
    "tiny": Layout(doses_s=(0.0, 200.0), positions_per_well=2, hours=18.0, render_every=27),
    "demo": Layout(
        doses_s=(0.0, 0.0, 20.0, 40.0, 80.0, 120.0, 200.0, 200.0),
        positions_per_well=3,
        hours=18.0,
        render_every=6,
    ),
    "paper": Layout(
        doses_s=tuple(float(d) for d in (0, 10, 20, 40, 60, 80, 120, 200) * 3),
        positions_per_well=4,
        hours=24.0,
        render_every=1,
    ),
}
