"""Simple statistics to compare simulated frames with real phase-contrast frames (issue 4.3).

The same three measures are applied to both, with the same crude segmentation (no ground
truth is used, so that real and simulated frames are treated alike):

- :func:`histogram_shape`: intensity histogram of ``(I - median) / IQR``, its skewness and the
  1st/99th percentiles (phase contrast: a narrow background peak, a dark tail from dense
  parts and a bright tail from halos);
- :func:`radial_power_spectrum`: azimuthally averaged power spectrum against spatial
  frequency in cycles per um, and its log-log slope over 0.05-0.5 cycles/um;
- :func:`edge_profile`: mean normalised intensity against signed distance (um) to the
  boundary of the cell mask (negative inside): the bright halo outside, darker inside.

``python -m data_prep.sim.compare --real DIR --sim TIFF --out docs/`` writes the figures used
in docs/simulator.md and prints the numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np


def _norm(img: np.ndarray) -> np.ndarray:
    """(I - median) / IQR, float32 (robust to gain and offset)."""
    img = img.astype(np.float32)
    q25, q50, q75 = np.percentile(img, [25, 50, 75])
    return (img - q50) / max(float(q75 - q25), 1e-6)


def histogram_shape(img: np.ndarray) -> dict[str, float]:
    """Skewness and percentiles of the robustly normalised intensities of a (H, W) frame."""
    z = _norm(img)
    m, s = float(z.mean()), float(z.std())
    return {
        "skewness": float(((z - m) ** 3).mean() / s**3),
        "p1": float(np.percentile(z, 1)),
        "p99": float(np.percentile(z, 99)),
        "std": s,
    }


def radial_power_spectrum(
    img: np.ndarray, pixel_size_um: float, bins: int = 60
) -> tuple[np.ndarray, np.ndarray, float]:
    """Azimuthally averaged power spectrum of a (H, W) frame.

    Returns
    -------
    freq : (bins,) float, cycles per um (bin centres, log-spaced)
    power : (bins,) float, normalised to sum 1
    slope : float, log-log slope of power over 0.05-0.5 cycles/um
    """
    z = _norm(img)
    z = z - z.mean()
    win = np.outer(np.hanning(z.shape[0]), np.hanning(z.shape[1])).astype(np.float32)
    p = np.abs(np.fft.fft2(z * win)) ** 2
    fy = np.fft.fftfreq(z.shape[0], pixel_size_um)[:, None]
    fx = np.fft.fftfreq(z.shape[1], pixel_size_um)[None, :]
    f = np.hypot(fy, fx)
    edges = np.geomspace(0.01, 0.5 / pixel_size_um, bins + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < bins)
    sums = np.bincount(idx[ok], weights=p.ravel()[ok], minlength=bins)
    counts = np.maximum(np.bincount(idx[ok], minlength=bins), 1)
    power = sums / counts
    power = power / power.sum()
    centres = np.sqrt(edges[:-1] * edges[1:])
    band = (centres >= 0.05) & (centres <= 0.5) & (power > 0)
    slope = float(np.polyfit(np.log(centres[band]), np.log(power[band]), 1)[0])
    return centres, power, slope


def cell_mask(img: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """Crude cell mask: local standard deviation over ~3 um above the background's, (H, W) bool.

    Phase-contrast cells are textured and the background is flat, so this works alike on
    real and simulated frames.
    """
    z = _norm(img)
    k = max(3, round(3.0 / pixel_size_um) | 1)
    mean = cv2.blur(z, (k, k))
    var = np.maximum(cv2.blur(z * z, (k, k)) - mean * mean, 0)
    sd = np.sqrt(var)
    mask = sd > 2.5 * np.median(sd)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return mask.astype(bool)


def edge_profile(
    img: np.ndarray, mask: np.ndarray, pixel_size_um: float, half_um: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean normalised intensity against signed distance to the mask boundary.

    Returns
    -------
    dist_um : (n,) float, bin centres, negative inside the mask
    mean : (n,) float, mean of ``I / median(background)`` per bin
    """
    m = mask.astype(np.uint8)
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    d_in = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    signed = np.where(m > 0, 0.5 - d_in, d_out - 0.5) * pixel_size_um
    img = img.astype(np.float64)
    bg = float(np.median(img[signed > 2 * half_um])) if (signed > 2 * half_um).any() else 1.0
    step = pixel_size_um
    edges = np.arange(-half_um, half_um + step, step) - 0.5 * step
    idx = np.digitize(signed.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[ok], weights=img.ravel()[ok] / bg, minlength=len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), mean


def _display(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [0.5, 99.5])
    return np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(
        np.uint8
    )


def compare(real: np.ndarray, real_px: float, sim: np.ndarray, sim_px: float) -> dict:
    """All three measures for one real and one simulated (H, W) frame."""
    out = {}
    for name, img, px in (("real", real, real_px), ("sim", sim, sim_px)):
        f, p, slope = radial_power_spectrum(img, px)
        d, prof = edge_profile(img, cell_mask(img, px), px)
        out[name] = {
            "histogram": histogram_shape(img),
            "spectrum_slope": slope,
            "spectrum": (f.tolist(), p.tolist()),
            "edge": (d.tolist(), prof.tolist()),
            "cell_fraction": float(cell_mask(img, px).mean()),
        }
    return out


def write_figures(
    real: np.ndarray, real_px: float, sim: np.ndarray, sim_px: float, out: Path
) -> dict:
    """Side-by-side PNG (150 um fields of view with the most cells) and a statistics PNG.

    Returns the numbers of :func:`compare` (without the curves).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fov_um = 150.0
    side = 360
    panels = []
    for img, px in ((real, real_px), (sim, sim_px)):
        n = int(fov_um / px)
        mask = cell_mask(img, px)
        corners = [
            (y, x)
            for y in np.linspace(0, img.shape[0] - n, 4).astype(int)
            for x in np.linspace(0, img.shape[1] - n, 4).astype(int)
        ]  # the field of view with the most cells
        y0, x0 = max(corners, key=lambda c: mask[c[0] : c[0] + n, c[1] : c[1] + n].mean())
        crop = _display(img)[y0 : y0 + n, x0 : x0 + n]
        panels.append(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA))
    gap = np.full((side, 8), 255, np.uint8)
    cv2.imwrite(
        str(out / "simulator-vs-real.png"),
        np.hstack([panels[0], gap, panels[1]]),
        [cv2.IMWRITE_PNG_COMPRESSION, 9],
    )
    stats = compare(real, real_px, sim, sim_px)
    fig, ax = plt.subplots(1, 3, figsize=(10, 3), dpi=80)
    for name, colour in (("real", "k"), ("sim", "tab:red")):
        img = real if name == "real" else sim
        z = _norm(img).ravel()
        ax[0].hist(z, bins=np.linspace(-8, 8, 161), density=True, histtype="step", color=colour)
        f, p = stats[name]["spectrum"]
        ax[1].loglog(f, p, color=colour, label=name)
        d, prof = stats[name]["edge"]
        ax[2].plot(d, prof, color=colour)
    ax[0].set(xlabel="(I - median) / IQR", ylabel="density", yscale="log", title="histogram")
    ax[1].set(xlabel="cycles / um", ylabel="power", title="radial power spectrum")
    ax[1].legend()
    ax[2].set(xlabel="distance to cell edge (um, <0 inside)", ylabel="I / background")
    ax[2].set_title("edge profile")
    fig.tight_layout()
    fig.savefig(out / "simulator-stats.png")
    plt.close(fig)
    for name in stats:
        stats[name].pop("spectrum")
        stats[name].pop("edge")
    return stats


def main(argv=None) -> int:
    import tifffile

    p = argparse.ArgumentParser(description=__doc__, prog="python -m data_prep.sim.compare")
    p.add_argument("--real", type=Path, required=True, help="a real 16-bit frame (TIFF)")
    p.add_argument("--real-px", type=float, default=6.5 / 15.0, help="its um per pixel")
    p.add_argument("--sim", type=Path, required=True, help="a simulated multi-frame TIFF")
    p.add_argument("--frame", type=int, default=0, help="frame of --sim")
    p.add_argument("--sim-px", type=float, default=6.45 / 20.0, help="its um per pixel")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    args = p.parse_args(argv)
    real = tifffile.imread(args.real)
    sim = tifffile.imread(args.sim, key=args.frame)
    stats = write_figures(real, args.real_px, sim, args.sim_px, args.out)
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
