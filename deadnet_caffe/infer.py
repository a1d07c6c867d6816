"""Inference with a deploy net: reading images, cutting windows, P(sick) per crop and image.

Every crop reaches the net exactly as a training crop did (paper section 2.3, published
``transform_param``): the 256 px window is variance-normalised on its own
(:func:`data_prep.core.normalize.variance_normalize`), then its centre 220 px are taken (Caffe's
TEST-phase centre crop). The published transform ``(v - 32767) * 0.00025`` applied to the
stored ``v = encode_z(z)`` gives ``z`` back, so this module feeds ``z`` to the net directly
(identical up to float32 rounding of ``v``, about 1e-6 in z).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_prep.core.datum import centre_crop
from data_prep.core.errors import UserError
from data_prep.core.grids import Grid, window_size
from data_prep.core.normalize import variance_normalize
from data_prep.core.paper import NET_INPUT_PX
from deadnet_caffe.caffe_env import set_device
from deadnet_caffe.checks import check_weights, nonnegative_int, positive_int
from deadnet_caffe.netspec import load_net_param, net_from_param, published

DEFAULT_MODEL = published("deploy.prototxt")
DEFAULT_BATCH = 20  # crops per forward pass; the published batch size (paper.BATCH_SIZE)
SICK = 1  # label index of "sick" (paper.LABELS)

#: A function that maps network inputs z, (N, 220, 220) float32, to P(sick), (N,) float32.
Predictor = Callable[[np.ndarray], np.ndarray]


def crop_to_input(window: np.ndarray) -> np.ndarray:
    """Training's per-crop normalisation then the TEST centre crop: (..., w, w) -> (..., 220, 220).

    Variance normalisation uses the whole window (as the dataset did for each 256 px crop),
    then Caffe's centre crop takes offset ``(w - 220) // 2`` (data_transformer.cpp, TEST).
    """
    return centre_crop(variance_normalize(window), NET_INPUT_PX)


def centre_input(frame: np.ndarray) -> np.ndarray:
    """Net input of a frame's centre window: (H, W) -> (220, 220) float32 (see crop_to_input)."""
    h, w = frame.shape
    size = window_size(h, w)
    y, x = (h - size) // 2, (w - size) // 2
    return crop_to_input(frame[y : y + size, x : x + size])


def window_inputs(frame: np.ndarray, grid: Grid, batch: int) -> Iterator[np.ndarray]:
    """Yield net inputs, (b, 220, 220) float32 with b <= batch, in :meth:`Grid.offsets` order."""
    offsets = grid.offsets()
    w = grid.window
    for i in range(0, len(offsets), batch):
        crops = np.stack([frame[y : y + w, x : x + w] for y, x in offsets[i : i + batch]])
        yield crop_to_input(crops)


def grid_probs(frame: np.ndarray, grid: Grid, predict: Predictor, batch: int) -> np.ndarray:
    """P(sick) of every window of ``grid``: (M, L) float32 (exact mode, section 3.1)."""
    out = [predict(z) for z in window_inputs(frame, grid, batch)]
    return np.concatenate(out).astype(np.float32).reshape(grid.shape)


def interp_matrix(query: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Linear interpolation weights, clamped at the ends: (Q,) queries, (K,) knots -> (Q, K)."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(query, knots, eye[k]) for k in range(len(knots))], axis=1)


def upsample(values: np.ndarray, grid: Grid) -> np.ndarray:
    """Bilinear upsampling of per-window values to full frame size (section 3.1, Figure 4).

    Parameters
    ----------
    values : (M, L) array, one value per window of ``grid``, placed at the window centres.

    Returns
    -------
    (height, width) float32; see :func:`upsample_at`.
    """
    cy, cx = grid.centres()
    return upsample_at(values, cy, cx, grid.height, grid.width)


def upsample_at(
    values: np.ndarray, cy: np.ndarray, cx: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Bilinear interpolation of values known at (cy[i], cx[j]) onto every pixel.

    Pixels between centres are interpolated bilinearly, pixels outside the outermost
    centres take the nearest edge value. Pixel i's centre is at coordinate i.

    Parameters
    ----------
    values : (M, L) array; cy : (M,) and cx : (L,) ascending centre coordinates.

    Returns
    -------
    (height, width) float32.
    """
    my = interp_matrix(np.arange(height, dtype=np.float64), np.asarray(cy, dtype=np.float64))
    mx = interp_matrix(np.arange(width, dtype=np.float64), np.asarray(cx, dtype=np.float64))
    return (my @ np.asarray(values, dtype=np.float64) @ mx.T).astype(np.float32)


# --- The net ------------------------------------------------------------------------------


class DeployNet:
    """A deploy net (``Input`` of N x 1 x 220 x 220, Softmax ``prob``) with its weights.

    Parameters
    ----------
    model : deploy prototxt.
    weights : .caffemodel that fits ``model``.
    gpu : CUDA device, or None for the CPU.
    force_backward : write a copy of the prototxt with ``force_backward: true`` so that
        pycaffe's backward fills blob diffs (Grad-CAM, class models); without it, and with no
        loss layer, Caffe skips every backward pass and all diffs stay zero.
    """

    def __init__(
        self,
        model: Path | str,
        weights: Path | str,
        gpu: int | None = None,
        force_backward: bool = False,
    ) -> None:
        set_device(gpu)
        self.model, self.weights = Path(model), Path(weights)
        param = load_net_param(self.model)
        if force_backward:
            param.force_backward = True
        check_weights(self.model, self.weights)
        self.net = net_from_param(param, "TEST", name=str(self.model))
        self.net.copy_from(str(self.weights))
        self.param = param
        self.input = self.net.inputs[0]
        shape = self.net.blobs[self.input].data.shape
        if len(shape) != 4 or shape[1] != 1:
            raise UserError(f"{model}: input {self.input} has shape {shape}; need N x 1 x H x W.")
        self.prob = "prob" if "prob" in self.net.blobs else self.net.outputs[-1]
        self.score = self.net.bottom_names[self.layer_of_top(self.prob)][0]

    def layer_of_top(self, blob: str) -> str:
        """Name of the last layer that writes ``blob`` (the layer to start a backward pass at)."""
        for name in reversed(list(self.net._layer_names)):
            if blob in self.net.top_names[name]:
                return name
        raise UserError(f"{self.model}: no layer produces blob {blob}.")

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Run one batch. z: (N, H, W) float32 net inputs. Returns softmax, (N, C) float32."""
        z = np.asarray(z, dtype=np.float32)
        blob = self.net.blobs[self.input]
        if blob.data.shape != (len(z), 1, *z.shape[1:]):
            blob.reshape(len(z), 1, *z.shape[1:])
            self.net.reshape()
        blob.data[...] = z[:, None]
        self.net.forward()
        return self.net.blobs[self.prob].data.reshape(len(z), -1).copy()

    def probs(self, z: np.ndarray, batch: int = DEFAULT_BATCH) -> np.ndarray:
        """Softmax for any number of inputs, ``batch`` at a time: (N, H, W) -> (N, C)."""
        return np.concatenate([self.forward(z[i : i + batch]) for i in range(0, len(z), batch)])

    def p_sick(self, z: np.ndarray) -> np.ndarray:
        """P(sick) of one batch: (N, 220, 220) float32 -> (N,) float32. A :data:`Predictor`."""
        return self.forward(z)[:, SICK]


# --- Classification -----------------------------------------------------------------------


@dataclass(frozen=True)
class CropResult:
    source: str
    frame: int
    y: int
    x: int
    size: int
    p_sick: float


def classify_stack(
    frames: np.ndarray,
    source: str,
    predict: Predictor,
    crops: str = "grid",
    batch: int = DEFAULT_BATCH,
) -> list[CropResult]:
    """P(sick) of each crop of each frame.

    Parameters
    ----------
    frames : (T, H, W) image stack, H, W >= 220.
    source : name written into the results (the file path).
    crops : ``"grid"`` for 256 px windows at stride 128 covering the frame (section 2.3
        step c; the last row and column flush with the edge), ``"centre"`` for the one window
        in the middle. Frames with a side below 256 px use a square window of that side.

    Returns
    -------
    list of :class:`CropResult`, frame by frame, crops row-major.
    """
    out = []
    for t, frame in enumerate(frames):
        h, w = frame.shape
        if crops == "centre":
            size = window_size(h, w)
            grid = Grid(h, w, size, size, np.array([(h - size) // 2]), np.array([(w - size) // 2]))
        else:
            grid = Grid.over(h, w)
        p = grid_probs(frame, grid, predict, batch).ravel()
        for (y, x), pi in zip(grid.offsets(), p, strict=True):
            out.append(CropResult(source, t, y, x, grid.window, float(pi)))
    return out


def image_summary(results: list[CropResult], threshold: float = 0.5) -> list[dict]:
    """Per image (source, frame): number of crops, mean P(sick) over its crops, label.

    The image's P(sick) is the mean of its crops' probabilities (the paper classifies crops
    only; averaging is this toolkit's choice) and its label is sick when that mean >= threshold.
    """
    groups: dict[tuple[str, int], list[float]] = {}
    for r in results:
        groups.setdefault((r.source, r.frame), []).append(r.p_sick)
    return [
        {
            "source": s,
            "frame": t,
            "n_crops": len(p),
            "p_sick": float(np.mean(p)),
            "label": "sick" if np.mean(p) >= threshold else "healthy",
        }
        for (s, t), p in groups.items()
    ]


def write_classification(out_dir: Path, results: list[CropResult], threshold: float) -> list[dict]:
    """Write ``crops.csv`` (one row per crop), ``images.csv`` (:func:`image_summary`) and
    ``results.json`` (both) into ``out_dir``; return the image rows."""
    images = image_summary(results, threshold)
    crop_rows = [asdict(r) for r in results]
    for name, rows in (("crops.csv", crop_rows), ("images.csv", images)):
        with (Path(out_dir) / name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    doc = {"images": images, "crops": crop_rows}
    (Path(out_dir) / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    return images


def add_image_arguments(p) -> None:
    """How loose image inputs are read (:mod:`data_prep.core.stack`): channel and axes."""
    g = p.add_argument_group("loose images")
    g.add_argument("--channel", type=nonnegative_int, help="channel (0-based) of a C axis")
    axes_help = "the TIFFs' axes, one letter per dimension, replacing the files' own (TYX reads"
    g.add_argument("--axes", type=str.upper, help=f"{axes_help} an ImageJ CYX stack as frames)")


def add_net_arguments(p) -> None:
    """The options every inference command shares: the deploy net, its weights, the device."""
    g = p.add_argument_group("net")
    g.add_argument("--weights", type=Path, required=True, help=".caffemodel that fits --model")
    g.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="deploy prototxt")
    g.add_argument(
        "--gpu",
        type=nonnegative_int,
        default=None,
        metavar="ID",
        help="CUDA device; the CPU when not given",
    )
    g.add_argument(
        "--batch", type=positive_int, default=DEFAULT_BATCH, help="crops per forward pass"
    )
