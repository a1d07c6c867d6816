"""The per-experiment phototoxicity report (beyond the paper).

For every position the exact sliding-window heat map (section 3.1) of every analysed frame
gives the fraction of the area predicted sick over time; positions, wells and doses are
summarised, and the report says which positions to discard and the highest dose that looks
safe, with a bootstrap interval. With simulated ground truth it also scores the heat maps
(AUROC) and Grad-CAM (energy on sick cells, pointing game); see :mod:`deadnet_caffe.validate`.

Decision rules (this toolkit's, stated in the report):

- a position's *late sick fraction* is its mean sick fraction over its last ``n_late``
  analysed frames;
- the *baseline* is the mean late sick fraction of the dose-0 positions (0 without any);
- a position is flagged for discarding when its late sick fraction exceeds the baseline by
  more than ``margin`` (the paper: "images such as these with large swaths of cells showing
  clear signs of phototoxicity would be thrown out entirely", section 3.1);
- a dose is safe when the mean late sick fraction of its positions is at most baseline +
  margin; the highest safe dose is the largest dose with every dose up to it safe. Its
  uncertainty comes from resampling the positions within each dose (bootstrap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.core.grids import Grid
from data_prep.core.manifest import Position
from data_prep.core.paper import NET_INPUT_PX
from data_prep.core.progress import progress_bar
from data_prep.core.stack import MANIFEST_CHANNEL, read_stack
from data_prep.core.tiffout import Calibration
from deadnet_caffe.figout import save_figure
from deadnet_caffe.gradcam import GradCam
from deadnet_caffe.heatmap import exact_heatmap, sick_fraction, write_maps
from deadnet_caffe.infer import DeployNet, crop_to_input
from deadnet_caffe.validate import (
    SICK_HEALTHY,
    SICK_NONE,
    SICK_SICK,
    auroc,
    cam_energy_inside,
    heatmap_auroc,
    pointing_hit,
    read_fate_masks,
    read_sick_masks,
)

SICK_CLASS = 1
PIXELS_PER_POSITION = 200_000  # cell pixels kept per position for the pooled AUROC


def pooled_auroc(results: list[PositionResult], attr: str = "pixels") -> float:
    """AUROC of P(sick) over the cell pixels of all positions with ground truth together.

    Positions often hold one class only (all healthy at dose 0, all sick at high doses), so
    their own AUROC is undefined; pooling compares sick and healthy cells across positions.
    ``attr`` is ``"pixels"`` (sick = any damage) or ``"fate_pixels"`` (sick = dying or
    dead; stressed cells left out).
    """
    pix = [getattr(r, attr) for r in results if getattr(r, attr) is not None]
    if not pix:
        return float("nan")
    return auroc(np.concatenate([p for p, _ in pix]), np.concatenate([y for _, y in pix]))


@dataclass
class PositionResult:
    """What the report knows about one position."""

    pos: Position
    frames: list[int]
    time_min: np.ndarray
    fraction: np.ndarray
    auroc: float = float("nan")
    cam_energy: list[float] = field(default_factory=list)
    pointing: list[bool] = field(default_factory=list)
    cam_all_zero: int = 0
    pixels: tuple[np.ndarray, np.ndarray] | None = None  # subsampled (P(sick), is sick) of cells
    fate_pixels: tuple[np.ndarray, np.ndarray] | None = None  # (P(sick), is dying or dead)

    def late(self, n_late: int) -> float:
        """Mean sick fraction over the last ``n_late`` analysed frames."""
        return float(np.mean(self.fraction[-n_late:]))


def _gradcam_checks(
    gc: GradCam, frame: np.ndarray, mask: np.ndarray, n_crops: int
) -> tuple[list[float], list[bool], int]:
    """Grad-CAM (eq. 1-2, class sick) of the sickest crops of a frame against its mask.

    Returns the energy shares and pointing hits of the non-zero maps and the number of maps
    that were zero everywhere (which have neither).
    """
    grid = Grid.over(*frame.shape)
    off = (grid.window - NET_INPUT_PX) // 2
    cand = []
    for y, x in grid.offsets():
        m = mask[y + off : y + off + NET_INPUT_PX, x + off : x + off + NET_INPUT_PX]
        cells = m != SICK_NONE
        if cells.mean() > 0.05:
            cand.append(((m == SICK_SICK).sum() / cells.sum(), y, x, m))
    cand = [c for c in sorted(cand, key=lambda c: -c[0]) if c[0] >= 0.5][:n_crops]
    energy, hits, zero = [], [], 0
    for _, y, x, m in cand:
        z = crop_to_input(frame[None, y : y + grid.window, x : x + grid.window])
        cam = gc.upsample(gc.compute(z, SICK_CLASS).cams())[0]
        if cam.max() > 0:
            energy.append(cam_energy_inside(cam, m))
            hits.append(pointing_hit(cam, m))
        else:
            zero += 1
    return energy, hits, zero


def analyse_position(
    pos: Position,
    net: DeployNet,
    gc: GradCam | None,
    stride: int,
    every: int,
    batch: int,
    gradcam_crops: int = 4,
    progress: bool | None = None,
    keep_maps: Path | None = None,
) -> PositionResult:
    """Heat maps of every ``every``-th frame of a position, and the ground-truth checks.

    With ``keep_maps`` (a folder), the heat maps are kept there as calibrated TIFFs
    (:func:`deadnet_caffe.heatmap.write_maps`), named after the position's key.
    """
    frames = read_stack(pos.path, pos.channel, channel_source=MANIFEST_CHANNEL)
    ids = list(range(0, len(frames), every))
    probs = np.stack(
        [
            exact_heatmap(frames[t], net.p_sick, stride, batch)
            for t in progress_bar(ids, desc=pos.key, unit="frame", leave=False, progress=progress)
        ]
    )
    if keep_maps is not None:
        write_position_maps(keep_maps, pos, frames, ids, probs, every)
    return score_position(pos, frames, ids, probs, gc, gradcam_crops)


def write_position_maps(
    folder: Path, pos: Position, frames: np.ndarray, ids: list[int], probs: np.ndarray, every: int
) -> None:
    """Keep a position's heat maps in ``folder`` as calibrated TIFFs named after its key
    (:func:`deadnet_caffe.heatmap.write_maps`).

    Parameters
    ----------
    frames : (T, H, W) the whole time-lapse; ids : the analysed frame indices (n,), every
        ``every``-th; probs : (n, H, W) float32 heat maps of those frames.
    """
    name = pos.key.replace("/", "_")
    write_maps(folder, name, frames[ids], probs, Calibration.of_position(pos, every))


def score_position(
    pos: Position,
    frames: np.ndarray,
    ids: list[int],
    probs: np.ndarray,
    gc: GradCam | None,
    gradcam_crops: int = 4,
) -> PositionResult:
    """A position's result from its heat maps: sick fraction, and the ground-truth checks.

    Parameters
    ----------
    frames : (T, H, W) the whole time-lapse; ids : the analysed frame indices (n,);
    probs : (n, H, W) float32 heat maps of those frames.
    """
    res = PositionResult(pos, ids, np.asarray(ids) * pos.frame_interval_min, sick_fraction(probs))
    masks = read_sick_masks(pos.ground_truth)
    if masks is not None and masks.shape[1:] == frames.shape[1:] and len(masks) == len(frames):
        res.auroc = heatmap_auroc(probs, masks[ids])
        cell = masks[ids] != SICK_NONE
        step = max(1, int(cell.sum()) // PIXELS_PER_POSITION)
        res.pixels = (probs[cell][::step], (masks[ids][cell] == SICK_SICK)[::step])
        fate = read_fate_masks(pos.ground_truth, ids)
        if fate is not None and fate.shape == probs.shape:
            known = (fate == SICK_HEALTHY) | (fate == SICK_SICK)
            step = max(1, int(known.sum()) // PIXELS_PER_POSITION)
            res.fate_pixels = (probs[known][::step], (fate[known] == SICK_SICK)[::step])
        if gc is not None and gradcam_crops > 0:
            # The analysed frame with the most sick-cell pixels: late frames of high doses
            # hold only the scattered remains of dead cells, where the maps (rightly) look
            # at the empty area the dead cells left (paper 3.2, Figure 5).
            t_cam = max(ids, key=lambda t: int((masks[t] == SICK_SICK).sum()))
            res.cam_energy, res.pointing, res.cam_all_zero = _gradcam_checks(
                gc, frames[t_cam], masks[t_cam], gradcam_crops
            )
    return res


def baseline(results: list[PositionResult], n_late: int) -> float:
    """Mean late sick fraction of the dose-0 positions (0 if there are none)."""
    ctrl = [r.late(n_late) for r in results if r.pos.dose_s == 0]
    return float(np.mean(ctrl)) if ctrl else 0.0


def flag_positions(results: list[PositionResult], margin: float, n_late: int) -> dict[str, str]:
    """Positions to discard: ``{key: reason}`` (see the module docstring)."""
    base = baseline(results, n_late)
    return {
        r.pos.key: f"late sick fraction {r.late(n_late):.2f} > baseline {base:.2f} + {margin:.2f}"
        for r in results
        if r.late(n_late) > base + margin
    }


def _highest_safe(doses: dict[float, list[float]], limit: float) -> float | None:
    safe = None
    for d in sorted(doses):
        if np.mean(doses[d]) > limit:
            break
        safe = d
    return safe


def highest_safe_dose(
    results: list[PositionResult], margin: float, n_late: int, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Highest dose whose positions stay within baseline + margin, with a bootstrap interval.

    Returns
    -------
    dict with ``dose`` (None when even the lowest dose is unsafe), ``ci`` (2.5 and 97.5
    percentiles of the bootstrap doses, None entries for "no safe dose"), ``agree``
    (share of bootstrap draws giving the same dose), ``baseline`` and ``limit``.
    """
    groups: dict[float, list[float]] = {}
    for r in results:
        groups.setdefault(r.pos.dose_s, []).append(r.late(n_late))
    base = baseline(results, n_late)
    point = _highest_safe(groups, base + margin)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        g = {d: list(rng.choice(v, size=len(v))) for d, v in groups.items()}
        ctrl = g.get(0.0)
        b = float(np.mean(ctrl)) if ctrl else 0.0
        s = _highest_safe(g, b + margin)
        draws.append(-1.0 if s is None else s)
    draws = np.asarray(draws)
    lo, hi = np.percentile(draws, (2.5, 97.5))
    return {
        "dose": point,
        "ci": [None if lo < 0 else float(lo), None if hi < 0 else float(hi)],
        "agree": float(np.mean(draws == (-1.0 if point is None else point))),
        "baseline": base,
        "limit": base + margin,
        "n_boot": n_boot,
    }


# --- Writing the report ---------------------------------------------------------------------


def _plots(
    out: Path, results: list[PositionResult], n_late: int, limit: float, formats: tuple[str, ...]
) -> None:
    from matplotlib import colormaps

    from data_prep.core.figures import subplots

    doses = sorted({r.pos.dose_s for r in results})
    cmap = colormaps["viridis"]
    fig, ax = subplots(figsize=(6.5, 4))
    for i, d in enumerate(doses):
        rs = [r for r in results if r.pos.dose_s == d]
        for j, r in enumerate(rs):
            ax.plot(
                r.time_min / 60,
                r.fraction,
                color=cmap(i / max(1, len(doses) - 1)),
                alpha=0.7,
                label=f"{d:g} s" if j == 0 else None,
            )
    ax.set_xlabel("time (h)")
    ax.set_ylabel("area predicted sick")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(title="dose", fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "fraction_over_time.png", formats, dpi=120)

    fig, ax = subplots(figsize=(5.5, 4))
    for r in results:
        ax.plot(r.pos.dose_s, r.late(n_late), "o", color="0.6", ms=4)
    means = [np.mean([r.late(n_late) for r in results if r.pos.dose_s == d]) for d in doses]
    ax.plot(doses, means, "k-s", label="mean of positions")
    ax.axhline(limit, color="r", ls="--", label="discard / safety limit")
    ax.set_xlabel("dose (s of 395 nm light)")
    ax.set_ylabel(f"late area predicted sick (last {n_late} frames)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / "dose_response.png", formats, dpi=120)


def write_report(
    out: Path,
    experiment: Path,
    results: list[PositionResult],
    margin: float,
    n_late: int,
    formats: tuple[str, ...] = ("png",),
) -> dict:
    """Write report.md, its figures (PNG and the other ``formats``) and CSV tables into
    ``out``; return the summary dict."""
    import csv

    flags = flag_positions(results, margin, n_late)
    safe = highest_safe_dose(results, margin, n_late)
    shown = next((f for f in ("png", "svg") if f in formats), formats[0])  # linked in report.md
    _plots(out, results, n_late, safe["limit"], formats)
    with (out / "fractions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plate", "well", "position", "dose_s", "frame", "time_min", "sick_fraction"])
        for r in results:
            for t, tm, f in zip(r.frames, r.time_min, r.fraction, strict=True):
                w.writerow([r.pos.plate, r.pos.well, r.pos.position, r.pos.dose_s, t, tm, f])
    valid = [r for r in results if np.isfinite(r.auroc)]
    truth = [r for r in results if r.pixels is not None]
    pooled = pooled_auroc(results)
    fate = pooled_auroc(results, "fate_pixels")
    energy = [e for r in results for e in r.cam_energy]
    hits = [h for r in results for h in r.pointing]
    zero = sum(r.cam_all_zero for r in results)
    summary = {
        "experiment": str(experiment),
        "positions": len(results),
        "flagged": flags,
        "highest_safe_dose": safe,
        "validation": {
            "heatmap_auroc_pooled": pooled if np.isfinite(pooled) else None,
            "heatmap_auroc_fate_pooled": fate if np.isfinite(fate) else None,
            "heatmap_auroc_mean": float(np.mean([r.auroc for r in valid])) if valid else None,
            "positions_with_truth": len(truth),
            "gradcam_energy_in_sick_mean": float(np.mean(energy)) if energy else None,
            "pointing_game_hit_rate": float(np.mean(hits)) if hits else None,
            "gradcam_crops": len(hits),
            "gradcam_all_zero_maps": zero,
        },
    }
    md = [f"# Phototoxicity report: `{experiment.name}`", ""]
    d = safe["dose"]
    ci = " - ".join("none" if c is None else f"{c:g} s" for c in safe["ci"])
    md += [
        "## Summary",
        "",
        f"- Positions analysed: {len(results)}; flagged for discarding: {len(flags)}.",
        f"- Highest dose that looks safe: **{'none' if d is None else f'{d:g} s'}** "
        f"(bootstrap 95% interval {ci}; {100 * safe['agree']:.0f}% of {safe['n_boot']} "
        "resamples agree).",
        f"- Baseline (dose 0) late sick fraction {safe['baseline']:.3f}; limit "
        f"{safe['limit']:.3f} (baseline + {margin}).",
        "",
        "Rules: the late sick fraction is the mean area with P(sick) >= 0.5 over the last "
        f"{n_late} analysed frames; a position is flagged when it exceeds the limit; a dose is "
        "safe when its positions' mean is within the limit and so are all lower doses.",
        "",
        f"![sick fraction over time](fraction_over_time.{shown})",
        "",
        f"![dose response](dose_response.{shown})",
        "",
        "## Doses",
        "",
        "| dose (s) | positions | late sick fraction (mean +- sd) |",
        "|---|---|---|",
    ]
    for dose in sorted({r.pos.dose_s for r in results}):
        v = [r.late(n_late) for r in results if r.pos.dose_s == dose]
        md.append(f"| {dose:g} | {len(v)} | {np.mean(v):.3f} +- {np.std(v):.3f} |")
    md += ["", "## Wells", "", "| plate/well | dose (s) | late sick fraction |", "|---|---|---|"]
    wells: dict[tuple[str, str], list[PositionResult]] = {}
    for r in results:
        wells.setdefault((r.pos.plate, r.pos.well), []).append(r)
    for (plate, well), rs in wells.items():
        doses = ", ".join(sorted({f"{r.pos.dose_s:g}" for r in rs}))
        md.append(f"| {plate}/{well} | {doses} | {np.mean([r.late(n_late) for r in rs]):.3f} |")
    md += [
        "",
        "## Positions",
        "",
        "| position | dose (s) | late sick fraction | heat-map AUROC | flag |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        auc = f"{r.auroc:.3f}" if np.isfinite(r.auroc) else "-"
        flag = "DISCARD: " + flags[r.pos.key] if r.pos.key in flags else ""
        md.append(f"| {r.pos.key} | {r.pos.dose_s:g} | {r.late(n_late):.3f} | {auc} | {flag} |")
    v = summary["validation"]
    if truth:
        md += ["", "## Validation against simulated ground truth", ""]
        if np.isfinite(pooled):
            md.append(
                f"- Heat-map AUROC (P(sick) per cell pixel vs sick cells, {len(truth)} positions "
                f"pooled): {pooled:.3f} with sick = any damage (stressed, dying or dead)."
            )
        if np.isfinite(fate):
            md.append(
                f"- Heat-map AUROC by fate (dying or dead cells against healthy ones; stressed "
                f"cells, which mostly recover, left out; pooled): {fate:.3f}. Data Set A's "
                "sick label is a fate: positions where every cell ends dead or dying."
            )
        if valid:
            md.append(
                f"- Per-position AUROC, mean over the {len(valid)} positions holding both "
                f"classes: {v['heatmap_auroc_mean']:.3f}."
            )
        if hits:
            md.append(
                f"- Grad-CAM (conv_d4_2, class sick, eq. 1 weights) on {len(hits)} sick crops of "
                "each position's analysed frame with the most sick cells: "
                f"{100 * v['gradcam_energy_in_sick_mean']:.1f}% of the energy on sick cells; "
                f"pointing game hit rate {100 * v['pointing_game_hit_rate']:.1f}%."
            )
        if zero:
            md.append(f"- {zero} sick crops had an all-zero Grad-CAM map (not scored).")
    md += [
        "",
        "Tables: `fractions.csv` (per frame), `summary.json`; settings: `settings.json`."
        + (
            " Heat maps: `maps/` (P(sick) and RGB overlay per position, calibrated TIFFs)."
            if (out / "maps").is_dir()
            else ""
        ),
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    return summary
