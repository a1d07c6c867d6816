"""The plate summary of a screen: ``deadnet report`` over several experiments (issue 18).

Each experiment gets its own report (``OUT/EXPERIMENT/report.md``, the same as a report of
that experiment alone); ``OUT/plates.md`` puts the plates side by side. A *plate* is one
``plate`` value of one experiment's manifest, named ``EXPERIMENT/PLATE``. For each plate:

- the dose response: per dose, the number of positions, the mean late sick fraction and its
  bootstrap 95% interval (positions resampled within the dose; ``plates.csv``,
  ``plate_dose_response.png``);
- the highest safe dose and its bootstrap interval, by the report's own rules
  (:func:`deadnet_caffe.report.highest_safe_dose`: the plate's dose-0 positions are its
  baseline).

The manifest has no cell-line column: name plates by cell line (``plate`` = ``T98G-1``) to
read the summary per cell line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from deadnet_caffe.report import PositionResult, highest_safe_dose

N_BOOT = 2000


def experiment_names(experiments: list[Path]) -> list[str]:
    """Sub-folder names of the experiments: their folder names, made unique with ``-2``, ..."""
    names: list[str] = []
    for exp in experiments:
        base = Path(exp).resolve().name or "experiment"
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}-{k}"
        names.append(name)
    return names


def dose_response(
    results: list[PositionResult], n_late: int, n_boot: int = N_BOOT, seed: int = 0
) -> list[dict]:
    """Per dose: positions, mean late sick fraction, bootstrap 2.5 / 97.5 percentiles."""
    rng = np.random.default_rng(seed)
    rows = []
    for dose in sorted({r.pos.dose_s for r in results}):
        v = np.array([r.late(n_late) for r in results if r.pos.dose_s == dose])
        means = rng.choice(v, size=(n_boot, len(v))).mean(axis=1)
        lo, hi = np.percentile(means, (2.5, 97.5))
        rows.append({"dose_s": dose, "positions": len(v), "mean": float(v.mean()), "ci": [lo, hi]})
    return rows


def plates(named: dict[str, list[PositionResult]]) -> dict[str, list[PositionResult]]:
    """``{EXPERIMENT/PLATE: results}`` in the order of the experiments and their manifests."""
    out: dict[str, list[PositionResult]] = {}
    for name, results in named.items():
        for r in results:
            out.setdefault(f"{name}/{r.pos.plate}", []).append(r)
    return out


def write_plate_summary(
    out: Path,
    named: dict[str, list[PositionResult]],
    margin: float,
    n_late: int,
    formats: tuple[str, ...] = ("png",),
) -> dict:
    """Write plates.md, plates.csv, plates.json and plate_dose_response.png (and the other
    ``formats``); return the dict.

    Parameters
    ----------
    named : ``{experiment name: its PositionResults}``.
    """
    summary = {}
    for plate, results in plates(named).items():
        summary[plate] = {
            "positions": len(results),
            "dose_response": dose_response(results, n_late),
            "highest_safe_dose": highest_safe_dose(results, margin, n_late, n_boot=N_BOOT),
        }
    with (out / "plates.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plate", "dose_s", "positions", "late_sick_mean", "ci_low", "ci_high"])
        for plate, s in summary.items():
            for d in s["dose_response"]:
                w.writerow([plate, d["dose_s"], d["positions"], d["mean"], *d["ci"]])
    (out / "plates.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(out / "plate_dose_response.png", summary, formats)
    md = [
        f"# Plate summary: {len(named)} experiments, {len(summary)} plates",
        "",
        "Each experiment's own report: " + ", ".join(f"[{n}]({n}/report.md)" for n in named),
        "",
        "## Highest safe dose per plate",
        "",
        "| plate | positions | highest safe dose | bootstrap 95% interval | resamples agreeing |",
        "|---|---|---|---|---|",
    ]
    for plate, s in summary.items():
        safe = s["highest_safe_dose"]
        dose = "none" if safe["dose"] is None else f"{safe['dose']:g} s"
        ci = " - ".join("none" if c is None else f"{c:g} s" for c in safe["ci"])
        md.append(f"| {plate} | {s['positions']} | {dose} | {ci} | {100 * safe['agree']:.0f}% |")
    md += [
        "",
        "## Dose response per plate",
        "",
        f"Late sick fraction (mean over the last {n_late} analysed frames) per dose: mean of "
        "the positions and the bootstrap 95% interval of that mean.",
        "",
        "![dose response per plate](plate_dose_response.png)",
        "",
        "| plate | dose (s) | positions | late sick fraction | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for plate, s in summary.items():
        for d in s["dose_response"]:
            md.append(
                f"| {plate} | {d['dose_s']:g} | {d['positions']} | {d['mean']:.3f} | "
                f"{d['ci'][0]:.3f} - {d['ci'][1]:.3f} |"
            )
    md += [
        "",
        "Rules as in each report: the limit is the plate's dose-0 baseline + "
        f"{margin}; a dose is safe when its positions' mean is within the limit and so are "
        "all lower doses. Tables: `plates.csv`, `plates.json`.",
        "",
    ]
    (out / "plates.md").write_text("\n".join(md))
    return summary


def write_screen(
    out: Path,
    experiments: list[Path],
    groups: list[list],
    results: list[PositionResult],
    margin: float,
    n_late: int,
    formats: tuple[str, ...] = ("png",),
) -> dict:
    """Each experiment's report in ``out/NAME/``, then the plate summary in ``out``.

    Parameters
    ----------
    groups : the positions of each experiment; results : all their results, in that order.
    formats : figure file formats (PNG and the other ``--figure-format``).

    Returns
    -------
    ``{"experiments": {NAME: report summary}, "plates": plate summary}``.
    """
    from deadnet_caffe.report import write_report

    named, summary, i = {}, {"experiments": {}}, 0
    for name, exp, g in zip(experiment_names(experiments), experiments, groups, strict=True):
        named[name], i = results[i : i + len(g)], i + len(g)
        (out / name).mkdir(exist_ok=True)  # it may hold the kept maps already
        s = write_report(out / name, exp, named[name], margin, n_late, formats)
        (out / name / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
        summary["experiments"][name] = s
    summary["plates"] = write_plate_summary(out, named, margin, n_late, formats)
    return summary


def _plot(path: Path, summary: dict, formats: tuple[str, ...]) -> None:
    from data_prep.core.figures import subplots
    from deadnet_caffe.figout import save_figure

    fig, ax = subplots(figsize=(6, 4))
    for plate, s in summary.items():
        rows = s["dose_response"]
        x = [d["dose_s"] for d in rows]
        y = np.array([d["mean"] for d in rows])
        err = np.abs(np.array([d["ci"] for d in rows]).T - y)
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=plate)
    ax.set_xlabel("dose (s of 395 nm light)")
    ax.set_ylabel("late area predicted sick")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, formats, dpi=120)
