"""Inference with a deploy net: reading images, cutting windows, P(sick) per crop and image.

Every crop reaches the net exactly as a training crop did (paper section 2.3, published
``transform_param``): the 256 px window is variance-normalised on its own
(:func:`data_prep.normalize.variance_normalize`), then its centre 220 px are taken (Caffe's
TEST-phase centre crop). The published transform ``(v - 32767) * 0.00025`` applied to the
stored ``v = encode_z(z)`` gives ``z`` back, so this module feeds ``z`` to the net directly
(identical up to float32 rounding of ``v``, about 1e-6 in z).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.checks import check_frames, check_image_file_end, check_tiff_header, quiet_stderr
from data_prep.normalize import variance_normalize
from deadnet_caffe.caffe_env import set_device
from deadnet_caffe.checks import check_weights, nonnegative_int, positive_int
from deadnet_caffe.errors import UserError
from deadnet_caffe.netspec import load_net_param, net_from_param
from deadnet_caffe.paper import CROP_PX, CROP_STRIDE_PX, NET_INPUT_PX

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_MODEL = Path("prototxt/deploy.prototxt")
DEFAULT_BATCH = 20  # crops per forward pass; the published batch size (paper.BATCH_SIZE)
SICK = 1  # label index of "sick" (paper.LABELS)

#: A function that maps network inputs z, (N, 220, 220) float32, to P(sick), (N,) float32.
Predictor = Callable[[np.ndarray], np.ndarray]


# --- Reading images ------------------------------------------------------------------------


def _tiff_frames(path: Path, channel: int | None) -> np.ndarray:
    """(T, H, W) from a TIFF's first series, using its axes (ImageJ / OME hyperstacks).

    Channel (C) axes are reduced to ``channel`` (required when there are several), RGB
    samples (S) are averaged to grey, single Z planes dropped; several Z planes are refused.
    """
    import tifffile

    check_tiff_header(path)
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes, arr = series.axes, series.asarray()
    if "C" in axes:
        n = arr.shape[axes.index("C")]
        if channel is None and n > 1:
            raise UserError(f"{path}: the stack has {n} channels; say which (manifest 'channel').")
        if channel is not None and not 0 <= channel < n:
            raise UserError(f"{path}: channel {channel} asked for, but the stack has {n}.")
        arr = np.take(arr, channel or 0, axis=axes.index("C"))
        axes = axes.replace("C", "")
    if "S" in axes:
        arr = arr.astype(np.float32).mean(axis=axes.index("S"))
        axes = axes.replace("S", "")
    for ax in "ZQ":
        if ax in axes and arr.shape[axes.index(ax)] == 1:
            arr = np.take(arr, 0, axis=axes.index(ax))
            axes = axes.replace(ax, "")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise UserError(
            f"{path}: TIFF axes {series.axes} {series.shape}; expected a (T, Y, X) stack."
        )
    return arr


def read_image_stack(path: Path | str, channel: int | None = None) -> np.ndarray:
    """Read an image, a multi-frame TIFF or a folder of single-frame images.

    Parameters
    ----------
    path : file (TIFF of any compression incl. LZW, ImageJ / OME hyperstacks; PNG, JPEG,
        BMP) or folder of such files, whose frames are taken in name order.
    channel : channel index of a multi-channel stack (the manifest's ``channel`` column).

    Returns
    -------
    (T, H, W) array of the file's own dtype (uint8, uint16 or float; colour is averaged).

    Raises
    ------
    UserError
        Unreadable or truncated file, a header claiming more than memory holds, a frame
        count other than the header's, no images in a folder, frames of different sizes, a
        side < 220 px, NaN or infinite pixels, or a constant frame
        (:mod:`data_prep.checks`).
    """
    import cv2

    path = Path(path)
    if path.is_dir():
        files = image_files(path)
        frames = [read_image_stack(f, channel) for f in files]
        shapes = {f.shape[1:] for f in frames}
        if len(shapes) > 1:
            raise UserError(f"{path}: images in the folder differ in size ({sorted(shapes)}).")
        return np.concatenate(frames, axis=0)
    if not path.is_file():
        raise UserError(f"{path}: no such file or folder.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            frames = _tiff_frames(path, channel)
        else:
            check_image_file_end(path)
            with quiet_stderr():
                arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise ValueError("OpenCV cannot decode it")
            if arr.ndim == 3:
                arr = arr[..., :3].astype(np.float32).mean(axis=-1)
            frames = arr[None]
    except UserError:
        raise
    except Exception as err:  # any decoder error (imagecodecs raises its own types)
        raise UserError(f"{path}: cannot read the image ({err}).") from None
    if not (np.issubdtype(frames.dtype, np.integer) or np.issubdtype(frames.dtype, np.floating)):
        raise UserError(f"{path}: pixel type {frames.dtype} is not a number type.")
    if min(frames.shape[1:]) < NET_INPUT_PX:
        raise UserError(
            f"{path}: frames are {frames.shape[2]} x {frames.shape[1]} px; the net needs at "
            f"least {NET_INPUT_PX} px on each side."
        )
    check_frames(path, frames)
    return frames


def image_files(folder: Path) -> list[Path]:
    """Image files of a folder in name order; UserError if there are none."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: folder holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return files


# --- Windows -------------------------------------------------------------------------------


def window_starts(n: int, window: int, stride: int) -> np.ndarray:
    """Top-left offsets of windows along one axis of length ``n``.

    Windows start at 0, stride, 2 stride, ...; if the last one does not reach the far edge,
    one more window flush with the edge is added, so every pixel is covered.

    Returns
    -------
    (M,) int64, ascending, all in ``[0, n - window]``.
    """
    if n < window:
        raise ValueError(f"axis of {n} px is shorter than the {window} px window")
    if stride < 1:
        raise ValueError("stride must be >= 1")
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return np.asarray(starts, dtype=np.int64)


def window_size(height: int, width: int) -> int:
    """The crop window: 256 px (training crops, section 2.3), or the shorter side if smaller."""
    return int(min(CROP_PX, height, width))


@dataclass(frozen=True)
class Grid:
    """Windows over one frame: ``window`` px squares at rows ``ys`` and columns ``xs``."""

    height: int
    width: int
    window: int
    stride: int
    ys: np.ndarray
    xs: np.ndarray

    @classmethod
    def over(cls, height: int, width: int, stride: int = CROP_STRIDE_PX) -> Grid:
        w = window_size(height, width)
        return cls(
            height,
            width,
            w,
            stride,
            window_starts(height, w, stride),
            window_starts(width, w, stride),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.ys), len(self.xs)

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Window centres in pixel coordinates (pixel i spans [i - 0.5, i + 0.5]): (M,), (L,)."""
        half = (self.window - 1) / 2.0
        return self.ys + half, self.xs + half

    def offsets(self) -> list[tuple[int, int]]:
        """(y, x) top-left corners, row-major: the order of :func:`window_inputs`."""
        return [(int(y), int(x)) for y in self.ys for x in self.xs]


def crop_to_input(window: np.ndarray) -> np.ndarray:
    """Training's per-crop normalisation then the TEST centre crop: (..., w, w) -> (..., 220, 220).

    Variance normalisation uses the whole window (as the dataset did for each 256 px crop),
    then Caffe's centre crop takes offset ``(w - 220) // 2`` (data_transformer.cpp, TEST).
    """
    z = variance_normalize(window)
    off_y = (z.shape[-2] - NET_INPUT_PX) // 2
    off_x = (z.shape[-1] - NET_INPUT_PX) // 2
    return z[..., off_y : off_y + NET_INPUT_PX, off_x : off_x + NET_INPUT_PX]


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
