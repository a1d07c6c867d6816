"""Sliding-window heat maps of P(sick) over time-lapses (paper section 3.1, Figure 4).

Exact mode (the default) cuts every frame into 256 px windows at ``stride``, normalises each
window on its own as in training, runs the centre 220 px through the deploy net in batches,
and upsamples the per-window P(sick), placed at the window centres, bilinearly to full size.

Dense mode runs a fully convolutional version of the deploy net (fc1 as a 14 x 14
convolution, fc2 and score as 1 x 1) once over the whole frame. Per-window normalisation is
impossible there; each pixel is instead normalised by the mean and standard deviation of the
256 px square around it (:func:`local_normalize`). Its outputs sit on a 16 px grid (the four
2 x 2 poolings). It differs from exact mode by that normalisation and by what the zero
padding and Caffe's ceiling pooling see at window borders; ``deadnet_caffe.benchmarks.
inference`` measures the difference, and exact mode stays the default.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.core.grids import Grid
from data_prep.core.paper import CROP_PX, CROP_STRIDE_PX, NET_INPUT_PX
from data_prep.core.progress import progress_bar
from data_prep.core.tiffout import Calibration, StackWriter, write_stack
from deadnet_caffe.figout import save_figure
from deadnet_caffe.infer import (
    DEFAULT_BATCH,
    SICK,
    Predictor,
    grid_probs,
    upsample,
    upsample_at,
)
from deadnet_caffe.netspec import load_net, load_net_param
from deadnet_caffe.surgery import transplant_fcn

SICK_THRESHOLD = 0.5  # a pixel counts as sick when its P(sick) >= 0.5 (this toolkit's choice)
#: Heat-map TIFFs are zlib ("ZIP") compressed, without a predictor: Fiji reads them, and the
#: smooth P(sick) maps shrink many times over (the RGB overlays about twofold).
MAPS_TIFF = {"compression": "zlib"}


def exact_heatmap(
    frame: np.ndarray, predict: Predictor, stride: int = CROP_STRIDE_PX, batch: int = DEFAULT_BATCH
) -> np.ndarray:
    """P(sick) heat map of one frame in exact mode: (H, W) image -> (H, W) float32."""
    grid = Grid.over(*frame.shape, stride)
    return upsample(grid_probs(frame, grid, predict, batch), grid)


# --- Dense mode ----------------------------------------------------------------------------


def local_normalize(frame: np.ndarray, size: int = CROP_PX) -> np.ndarray:
    """Each pixel minus the mean, over the std, of the ``size`` px square around it.

    The dense-mode stand-in for per-crop variance normalisation. Box filters with reflected
    borders; a locally constant region gives 0. (H, W) -> (H, W) float32.
    """
    import cv2

    from data_prep.core.normalize import MIN_STD

    x = np.asarray(frame, dtype=np.float64)
    mean = cv2.boxFilter(x, -1, (size, size), borderType=cv2.BORDER_REFLECT)
    sq = cv2.boxFilter(x * x, -1, (size, size), borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    z = np.where(std < MIN_STD, 0.0, (x - mean) / np.where(std < MIN_STD, 1.0, std))
    return z.astype(np.float32)


def net_stride(model: Path) -> int:
    """Product of all Convolution and Pooling strides of a prototxt: the output grid step."""
    s = 1
    for layer in load_net_param(model).layer:
        if layer.type == "Convolution":
            s *= layer.convolution_param.stride[0] if layer.convolution_param.stride else 1
        elif layer.type == "Pooling":
            s *= layer.pooling_param.stride
    return s


@dataclass
class DenseNet:
    """A fully convolutional deploy variant with the deploy net's weights.

    Parameters
    ----------
    net : caffe.Net of the fully convolutional prototxt, weights already copied in.
    stride : its output grid step in input pixels (16 for DeadNet).
    """

    net: object
    stride: int

    @classmethod
    def from_deploy(cls, fcn_model: Path, deploy) -> DenseNet:
        """Build ``fcn_model`` and copy ``deploy`` (a DeployNet) weights into it."""
        net = load_net(fcn_model, "TEST")
        transplant_fcn(deploy.net, net)
        return cls(net, net_stride(fcn_model))

    def probs(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run over a whole (H, W) input; return P(sick) (M, L) and window centres (M,), (L,).

        Output cell (i, j) is the net's answer for the 220 px window whose top-left corner is
        (stride i, stride j), centred at ``stride i + 109.5``.
        """
        name = self.net.inputs[0]
        blob = self.net.blobs[name]
        blob.reshape(1, 1, *z.shape)
        self.net.reshape()
        blob.data[0, 0] = z
        out = self.net.forward()
        prob = next(iter(out.values()))[0, SICK]
        half = (NET_INPUT_PX - 1) / 2.0
        cy = np.arange(prob.shape[0]) * self.stride + half
        cx = np.arange(prob.shape[1]) * self.stride + half
        return prob.astype(np.float32), cy, cx


def dense_heatmap(frame: np.ndarray, dense: DenseNet, normalize: bool = True) -> np.ndarray:
    """P(sick) heat map of one frame in dense mode: (H, W) -> (H, W) float32."""
    z = local_normalize(frame) if normalize else np.asarray(frame, dtype=np.float32)
    prob, cy, cx = dense.probs(z)
    return upsample_at(prob, cy, cx, *frame.shape)


# --- Outputs -------------------------------------------------------------------------------


def sick_fraction(probs: np.ndarray, threshold: float = SICK_THRESHOLD) -> np.ndarray:
    """Fraction of each frame's area with P(sick) >= threshold: (T, H, W) -> (T,) float64."""
    return (np.asarray(probs) >= threshold).reshape(len(probs), -1).mean(axis=1)


def red_overlay(gray: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Figure 4's overlay: grey image, red where P(sick) is high. (H, W) x2 -> (H, W, 3) uint8.

    The image gets a 1-99 percentile stretch; red is blended in with opacity 0.6 P(sick).
    """
    g = np.asarray(gray, dtype=np.float64)
    lo, hi = np.percentile(g, (1, 99))
    g = np.clip((g - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    a = 0.6 * np.clip(prob, 0, 1)[..., None]
    rgb = (1 - a) * g[..., None] + a * np.array([1.0, 0.0, 0.0])
    return (rgb * 255).round().astype(np.uint8)


def heatmap_timelapse(
    out_dir: Path,
    name: str,
    frames: np.ndarray,
    frame_ids: list[int],
    heat: Callable[[np.ndarray], np.ndarray],
    cal: Calibration | None = None,
    gif_max_side: int = 512,
    gif_ms: int = 200,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps of a time-lapse, written frame by frame into ``out_dir``.

    - ``{name}_prob.tif``: ImageJ/Fiji float32 stack (T, H, W) of P(sick), axes TYX;
    - ``{name}_overlay.tif``: the red = sick overlays as an RGB stack (T, H, W, 3), axes TYXS;
    - ``{name}/overlay_t{frame:04d}.png``: the same overlays as PNG (Figure 4);
    - ``{name}.gif``: the overlays as an animated GIF, longest side <= ``gif_max_side``.

    Both TIFFs carry ``cal`` (pixel size, unit, frame interval; :mod:`data_prep.core.tiffout`)
    and are zlib compressed (:data:`MAPS_TIFF`).

    Parameters
    ----------
    frames : (T, H, W) images; frame_ids : their indices in the original time-lapse.
    heat : (H, W) frame -> (H, W) float32 P(sick), e.g. :func:`exact_heatmap` bound to a net.
    cal : calibration of the analysed frames (the frame interval of every kept frame);
        None: uncalibrated.

    Returns
    -------
    sick fraction (T,) and mean P(sick) (T,) per frame, float64.
    """
    import cv2
    from PIL import Image

    cal = cal or Calibration()
    png_dir = out_dir / name
    png_dir.mkdir(parents=True, exist_ok=True)
    gif, frac, mean = [], [], []
    overlay = StackWriter(
        out_dir / f"{name}_overlay.tif", (*frames.shape, 3), np.uint8, "TYXS", cal, **MAPS_TIFF
    )

    def pages():
        for t, frame in progress_bar(
            zip(frame_ids, frames, strict=True),
            total=len(frames),
            desc=name,
            unit="frame",
            leave=False,
            progress=progress,
        ):
            prob = heat(frame).astype(np.float32)
            frac.append(float(sick_fraction(prob[None])[0]))
            mean.append(float(prob.mean()))
            rgb = red_overlay(frame, prob)
            overlay.put(rgb)
            cv2.imwrite(str(png_dir / f"overlay_t{t:04d}.png"), rgb[..., ::-1])
            scale = min(1.0, gif_max_side / max(rgb.shape[:2]))
            small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            gif.append(Image.fromarray(small))
            yield prob

    try:
        write_stack(
            out_dir / f"{name}_prob.tif",
            pages(),
            "TYX",
            cal,
            shape=frames.shape,
            dtype=np.float32,
            info="P(sick) from deadnet heatmap",
            **MAPS_TIFF,
        )
    except BaseException:
        overlay.close(check=False)  # the first error is the one to report
        raise
    overlay.close()
    gif[0].save(
        out_dir / f"{name}.gif", save_all=True, append_images=gif[1:], duration=gif_ms, loop=0
    )
    return np.asarray(frac), np.asarray(mean)


def write_maps(
    out_dir: Path, name: str, frames: np.ndarray, probs: np.ndarray, cal: Calibration
) -> None:
    """Keep computed heat maps: ``{name}_prob.tif`` (T, H, W) float32, axes TYX, and
    ``{name}_overlay.tif`` (T, H, W, 3) RGB, axes TYXS, both calibrated with ``cal`` and zlib
    compressed (:data:`MAPS_TIFF`).

    ``frames`` (T, H, W) are the images the maps ``probs`` (T, H, W) were computed on.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_stack(
        out_dir / f"{name}_prob.tif",
        np.asarray(probs, dtype=np.float32),
        "TYX",
        cal,
        info="P(sick) from deadnet report",
        **MAPS_TIFF,
    )
    write_stack(
        out_dir / f"{name}_overlay.tif",
        (red_overlay(f, p) for f, p in zip(frames, probs, strict=True)),
        "TYXS",
        cal,
        shape=(*probs.shape, 3),
        dtype=np.uint8,
        **MAPS_TIFF,
    )


def write_fraction_table(path: Path, rows: list[dict]) -> None:
    """CSV of sick fraction per frame per position (columns from the first row's keys)."""
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot_fractions(path: Path, rows: list[dict], formats: tuple[str, ...] = ("png",)) -> None:
    """Sick fraction over time, one line per position (``path`` in each of ``formats``)."""
    from data_prep.core.figures import subplots

    fig, ax = subplots(figsize=(6, 3.5))
    by_pos: dict[str, list[dict]] = {}
    for r in rows:
        by_pos.setdefault(r["position"], []).append(r)
    for pos, rs in by_pos.items():
        ax.plot([r["time_min"] / 60 for r in rs], [r["sick_fraction"] for r in rs], ".-", label=pos)
    ax.set_xlabel("time (h)")
    ax.set_ylabel(f"area with P(sick) >= {SICK_THRESHOLD}")
    ax.set_ylim(-0.02, 1.02)
    if len(by_pos) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, formats, dpi=120)


def write_heatmaps(
    out_dir: Path,
    timelapses: Iterable[tuple[str, np.ndarray, Calibration]],
    heat: Callable[[np.ndarray], np.ndarray],
    every: int = 1,
    progress: bool | None = None,
    formats: tuple[str, ...] = ("png",),
) -> list[dict]:
    """Heat maps of every ``every``-th frame of each time-lapse (:func:`heatmap_timelapse`),
    then ``sick_fraction.csv`` and ``sick_fraction.png`` (and the other ``formats``) for all
    of them together.

    Parameters
    ----------
    timelapses : (name, frames (T, H, W), calibration) each; read one at a time when given
        as a generator. The calibration's frame interval is that of the whole time-lapse
        (it sets ``time_min``, NaN without one; the TIFFs get it times ``every``).
    heat : (H, W) frame -> (H, W) P(sick), e.g. :func:`exact_heatmap` with its net bound.

    Returns
    -------
    list of dict: one row per frame (position, frame, time_min, sick_fraction, mean_p_sick).
    """
    rows = []
    for name, frames, cal in timelapses:
        ids = list(range(0, len(frames), every))
        frac, mean = heatmap_timelapse(
            out_dir, name, frames[::every], ids, heat, cal.every(every), progress=progress
        )
        dt = cal.frame_interval_s / 60.0 if cal.frame_interval_s else float("nan")
        rows += [
            {
                "position": name,
                "frame": t,
                "time_min": t * dt,
                "sick_fraction": float(f),
                "mean_p_sick": float(m),
            }
            for t, f, m in zip(ids, frac, mean, strict=True)
        ]
    write_fraction_table(Path(out_dir) / "sick_fraction.csv", rows)
    plot_fractions(Path(out_dir) / "sick_fraction.png", rows, formats)
    return rows
