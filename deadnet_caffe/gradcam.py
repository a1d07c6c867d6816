"""Grad-CAM at conv_d4_2 with pycaffe backward passes (paper section 2.6, eq. 1-3).

What ``A`` is
    In the published nets BatchNorm, Scale and ReLU run *in place* on the ``conv_d4_2`` blob,
    so after a forward pass that blob holds the post-ReLU activations: the feature maps that
    Conv4.2 passes on (Table 1), which is what eq. 1-2 call ``A^k``. This module uses them
    as ``A`` (post-ReLU, the usual Grad-CAM choice) and takes ``dS_c/dA`` by running the
    backward pass from the pre-softmax ``score`` down to the first layer that *reads* the
    blob (``pool_d5_0``) and stopping there. Running further would let the in-place ReLU,
    Scale and BatchNorm backward passes overwrite the blob's diff with gradients with
    respect to the pre-activation convolution output.
Zero diffs
    A deploy net has no loss, so Caffe marks every layer as not needing backward and leaves
    all diffs at zero; :class:`~deadnet_caffe.infer.DeployNet` is built with
    ``force_backward: true`` here, and an all-zero gradient is reported as an error.
All-zero maps
    ``[.]_+`` in eq. 2 can leave a map that is zero everywhere. Such maps are flagged in
    :class:`CamBatch.all_zero`, never rescaled for display.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep.core.datum import sample_crops
from data_prep.core.errors import UserError
from data_prep.core.grids import Grid
from data_prep.core.outdir import output_dir
from data_prep.core.paper import CROP_STRIDE_PX, GRADCAM_LAYER, LABELS, NET_INPUT_PX
from data_prep.core.progress import progress_bar
from data_prep.core.runinfo import write_settings
from data_prep.core.stack import read_stack
from data_prep.core.tiffout import Calibration, write_stack
from deadnet_caffe.checks import check_image_sources, load_npz
from deadnet_caffe.figout import save_figure
from deadnet_caffe.infer import (
    DEFAULT_BATCH,
    DEFAULT_MODEL,
    DeployNet,
    centre_input,
    crop_to_input,
    upsample_at,
)


@dataclass
class CamBatch:
    """Grad-CAM quantities for a batch of N crops at a layer with K maps of h x w.

    activations : (N, K, h, w) float32, ``A^k_{u,v}`` (post-ReLU).
    gradients : (N, K, h, w) float32, ``dS_c / dA^k_{u,v}``.
    alphas : (N, K) float32, eq. 1.
    scores : (N, C) float32, pre-softmax class scores.
    cls : (N,) int, the class c each row was computed for.
    """

    activations: np.ndarray
    gradients: np.ndarray
    alphas: np.ndarray
    scores: np.ndarray
    cls: np.ndarray

    def cams(self, alphas: np.ndarray | None = None) -> np.ndarray:
        """Eq. 2 with this batch's own weights, or with given weights (eq. 3's averages).

        alphas : (N, K) or (K,) float32, or None for :attr:`alphas`. Returns (N, h, w).
        """
        return cam_from(self.activations, self.alphas if alphas is None else alphas)

    @staticmethod
    def all_zero(cams: np.ndarray) -> np.ndarray:
        """(N,) bool: maps that are zero everywhere after eq. 2's ``[.]_+``."""
        return ~(cams.reshape(len(cams), -1) > 0).any(axis=1)


def cam_from(activations: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Eq. 2: ``[sum_k alpha_k A^k]_+``. (N, K, h, w) with (N, K) or (K,) -> (N, h, w) float32."""
    a = np.asarray(alphas, dtype=np.float64)
    a = np.broadcast_to(a, activations.shape[:2])
    cam = np.einsum("nk,nkhw->nhw", a, activations.astype(np.float64))
    return np.maximum(cam, 0.0).astype(np.float32)


class GradCam:
    """Grad-CAM on a deploy net at ``layer`` (default conv_d4_2, section 2.6).

    Parameters
    ----------
    net : a :class:`DeployNet` built with ``force_backward=True``.
    layer : name of the layer whose output maps are ``A``.
    """

    def __init__(self, net: DeployNet, layer: str = GRADCAM_LAYER) -> None:
        names = list(net.net._layer_names)
        if layer not in names:
            raise UserError(f"{net.model}: has no layer {layer!r} for Grad-CAM.")
        if not net.param.force_backward:
            raise UserError(f"{net.model}: Grad-CAM needs the net built with force_backward.")
        self.net, self.layer = net, layer
        self.blob = net.net.top_names[layer][0]
        i = names.index(layer) + 1
        while (
            i < len(names)
            and net.net.bottom_names[names[i]] == [self.blob] == (net.net.top_names[names[i]])
        ):
            i += 1  # in-place BatchNorm / Scale / ReLU on the same blob
        readers = [n for n in names[i:] if self.blob in net.net.bottom_names[n]]
        if not readers:
            raise UserError(f"{net.model}: nothing reads the output of layer {layer!r}.")
        self.reader = readers[0]
        self.score_layer = net.layer_of_top(net.score)

    def geometry(self) -> tuple[int, float]:
        """(stride, offset): map cell u of ``layer`` is centred on input pixel stride u + offset.

        Followed through every Convolution and Pooling layer up to ``layer``: each adds
        ``stride * ((kernel - 1) / 2 - pad)`` to the offset and multiplies the stride.
        For conv_d4_2 of DeadNet this is (8, 7.5).
        """
        stride, offset = 1, 0.0
        for layer in self.net.param.layer:
            if layer.type == "Convolution":
                c = layer.convolution_param
                k, pad = c.kernel_size[0], (c.pad[0] if c.pad else 0)
                s = c.stride[0] if c.stride else 1
            elif layer.type == "Pooling":
                c = layer.pooling_param
                k, pad, s = c.kernel_size, c.pad, c.stride
            else:
                continue
            offset += stride * ((k - 1) / 2 - pad)
            stride *= s
            if layer.name == self.layer:
                break
        return stride, offset

    def upsample(self, cams: np.ndarray) -> np.ndarray:
        """Bilinear upsampling of (N, h, w) maps to the net input, (N, H_in, W_in) float32.

        Each cell sits at its receptive-field centre (:meth:`geometry`); pixels beyond the
        outermost centres take the edge value (section 2.6: "up-sampled this to the full
        image resolution").
        """
        stride, offset = self.geometry()
        h_in, w_in = self.net.net.blobs[self.net.input].data.shape[2:]
        cy = offset + stride * np.arange(cams.shape[1])
        cx = offset + stride * np.arange(cams.shape[2])
        return np.stack([upsample_at(c, cy, cx, h_in, w_in) for c in cams])

    def compute(self, z: np.ndarray, cls: int | np.ndarray) -> CamBatch:
        """Forward and backward for one batch of net inputs.

        Parameters
        ----------
        z : (N, 220, 220) float32 net inputs (see :func:`deadnet_caffe.infer.crop_to_input`).
        cls : class c for every row, an int or (N,) ints.
        """
        net = self.net.net
        self.net.forward(z)
        n = len(z)
        cls = np.broadcast_to(np.asarray(cls, dtype=np.int64), (n,)).copy()
        scores = net.blobs[self.net.score].data.reshape(n, -1).copy()
        acts = net.blobs[self.blob].data.copy()
        seed = np.zeros_like(net.blobs[self.net.score].data)
        seed.reshape(n, -1)[np.arange(n), cls] = 1.0
        net.blobs[self.net.score].diff[...] = seed
        net.backward(start=self.score_layer, end=self.reader)
        grads = net.blobs[self.blob].diff.copy()
        if not np.any(grads):
            raise UserError(
                f"{self.net.model}: the backward pass left all gradients at {self.layer} zero "
                "(is force_backward set, and does the score depend on this layer?)."
            )
        alphas = grads.mean(axis=(2, 3))  # eq. 1
        return CamBatch(acts, grads, alphas.astype(np.float32), scores, cls)


# --- Eq. 3: class-averaged weights over the training set, cached --------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def average_alphas(alphas: np.ndarray, labels: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Eq. 3: ``alpha_hat_{c,k} = (1/N_c) sum_i 1_c(i) alpha^{(i)}_{c,k}``.

    Parameters
    ----------
    alphas : (N, K) eq. 1 weights of image i for its own class ``labels[i]``.
    labels : (N,) ints in [0, n_classes).

    Returns
    -------
    (n_classes, K) float32; a class with no images gets NaN.
    """
    out = np.full((n_classes, alphas.shape[1]), np.nan, dtype=np.float64)
    for c in range(n_classes):
        sel = labels == c
        if sel.any():
            out[c] = alphas[sel].astype(np.float64).mean(axis=0)
    return out.astype(np.float32)


def class_weights(
    gc: GradCam,
    lmdb_path: Path,
    cache: Path,
    per_class: int = 200,
    batch: int = 10,
    progress: bool | None = None,
) -> dict:
    """Eq. 3 weights for both classes, computed once and cached in ``cache`` (.npz).

    The cache is reused when it was made from the same weights file (SHA-256), layer,
    LMDB and ``per_class``; otherwise it is recomputed and replaced.

    Returns
    -------
    dict with ``alpha`` (2, K) float32, ``counts`` (2,) int, and the cache key fields.
    """
    key = {
        "weights_sha256": _sha256(gc.net.weights),
        "layer": gc.layer,
        "lmdb": str(Path(lmdb_path).resolve()),
        "per_class": int(per_class),
    }
    if cache.is_file():
        f = load_npz(cache, ("alpha", "counts"))
        if all(str(f[k]) == str(v) for k, v in key.items() if k in f):
            return {"alpha": f["alpha"], "counts": f["counts"], "cached": True, **key}
    z, labels = sample_crops(lmdb_path, per_class)
    alphas = []
    starts = range(0, len(z), batch)
    for i in progress_bar(
        starts, desc="eq. 3 weights", unit="batch", leave=False, progress=progress
    ):
        alphas.append(gc.compute(z[i : i + batch], labels[i : i + batch]).alphas)
    alpha = average_alphas(np.concatenate(alphas), labels)
    counts = np.bincount(labels, minlength=2)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz.partial")
    with os.fdopen(fd, "wb") as fh:
        np.savez(fh, alpha=alpha, counts=counts, **{k: np.asarray(v) for k, v in key.items()})
    os.replace(tmp, cache)
    return {"alpha": alpha, "counts": counts, "cached": False, **key}


# --- Whole-frame Grad-CAM stitched from overlapping crops ---------------------------------


@dataclass
class Stitched:
    """A whole-frame Grad-CAM: mean of the crops' upsampled maps where they overlap.

    cam : (H, W) float32, zero where no crop's 220 px centre reaches.
    seam : mean over pixels covered by >= 2 crops of the standard deviation across those
        crops' maps, divided by the frame map's mean there (0 = perfectly seamless).
    n_all_zero : crops whose map was zero everywhere.
    """

    cam: np.ndarray
    seam: float
    n_all_zero: int


def stitch_frame(
    gc: GradCam,
    frame: np.ndarray,
    cls: int,
    alpha: np.ndarray | None,
    stride: int,
    batch: int = 10,
) -> Stitched:
    """Grad-CAM of a whole frame from overlapping crops (section 2.6, eq. 3's motivation).

    Each window of a :class:`~data_prep.core.grids.Grid` is normalised as in training, its
    map (eq. 2) upsampled to 220 px and placed over the window's centre crop.

    Parameters
    ----------
    frame : (H, W) image.
    cls : class c.
    alpha : (K,) eq. 3 weights for class c, or None for each crop's own eq. 1 weights.
    """
    h, w = frame.shape
    grid = Grid.over(h, w, stride)
    off = (grid.window - NET_INPUT_PX) // 2
    s1 = np.zeros((h, w))
    s2 = np.zeros((h, w))
    n = np.zeros((h, w))
    offsets = grid.offsets()
    zeros = 0
    for i in range(0, len(offsets), batch):
        part = offsets[i : i + batch]
        crops = np.stack([frame[y : y + grid.window, x : x + grid.window] for y, x in part])
        cb = gc.compute(crop_to_input(crops), cls)
        cams = cb.cams(alpha)
        zeros += int(cb.all_zero(cams).sum())
        for (y, x), m in zip(part, gc.upsample(cams), strict=True):
            sl = (slice(y + off, y + off + NET_INPUT_PX), slice(x + off, x + off + NET_INPUT_PX))
            s1[sl] += m
            s2[sl] += m.astype(np.float64) ** 2
            n[sl] += 1
    mean = np.divide(s1, n, out=np.zeros_like(s1), where=n > 0)
    var = np.maximum(np.divide(s2, n, out=np.zeros_like(s2), where=n > 0) - mean**2, 0.0)
    multi = n >= 2
    level = mean[multi].mean() if multi.any() else 0.0
    seam = float(np.sqrt(var[multi]).mean() / level) if level > 0 else float("nan")
    return Stitched(mean.astype(np.float32), seam, zeros)


# --- Rendering (separate from computing) ---------------------------------------------------


def overlay(gray: np.ndarray, cam: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """RGB uint8 overlay of a map on a grey image: (H, W), (H, W) -> (H, W, 3).

    The image is shown with a 1-99 percentile stretch; the map in the 'jet' colour map with
    alpha 0.45, scaled to ``vmax`` (default: its own maximum). An all-zero map leaves the
    image unchanged (it is reported, not rescaled).
    """
    from matplotlib import colormaps

    g = np.asarray(gray, dtype=np.float64)
    lo, hi = np.percentile(g, (1, 99))
    g = np.clip((g - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=2)
    top = float(cam.max()) if vmax is None else vmax
    if top > 0:
        c = np.clip(cam / top, 0, 1)
        heat = colormaps["jet"](c)[..., :3]
        a = 0.45 * c[..., None] ** 0.5
        rgb = (1 - a) * rgb + a * heat
    return (rgb * 255).round().astype(np.uint8)


def figure_examples(
    path: Path,
    images: np.ndarray,
    own: np.ndarray,
    avg: np.ndarray,
    titles: list[str],
    formats: tuple[str, ...] = ("png",),
) -> None:
    """Figure 5-like panel: per example the crop, eq. 1 Grad-CAM and eq. 3 Grad-CAM overlays.

    images : (N, 220, 220); own, avg : (N, 220, 220) upsampled maps. All-zero maps are
    labelled as such in the panel title instead of being rescaled.
    """
    from data_prep.core.figures import subplots

    n = len(images)
    fig, axes = subplots(n, 3, figsize=(7.5, 2.6 * n), squeeze=False)
    for i in range(n):
        panels = (
            (images[i], None, titles[i]),
            (images[i], own[i], "eq. 1 (own weights)"),
            (images[i], avg[i], "eq. 3 (class-averaged)"),
        )
        for ax, (img, cam, title) in zip(axes[i], panels, strict=True):
            if cam is None:
                ax.imshow(overlay(img, np.zeros_like(img)))
            else:
                ax.imshow(overlay(img, cam))
                if not (cam > 0).any():
                    title += " - ALL ZERO"
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, formats, dpi=110)


def figure_stitched(
    path: Path, frame: np.ndarray, own: Stitched, avg: Stitched, formats: tuple[str, ...] = ("png",)
) -> None:
    """Whole-frame Grad-CAM stitched with per-crop (eq. 1) vs averaged (eq. 3) weights."""
    from data_prep.core.figures import subplots

    fig, axes = subplots(1, 2, figsize=(11, 4.5))
    for ax, s, name in (
        (axes[0], own, "per-crop weights (eq. 1)"),
        (axes[1], avg, "class-averaged weights (eq. 3)"),
    ):
        ax.imshow(overlay(frame, s.cam))
        ax.set_title(f"{name}\nseam index {s.seam:.3f}, all-zero crops {s.n_all_zero}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, formats, dpi=110)


def write_examples(
    out_dir: Path,
    gc: GradCam,
    z: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    alpha_eq3: np.ndarray,
    formats: tuple[str, ...] = ("png",),
) -> dict:
    """Grad-CAM of example crops with each crop's own (eq. 1) and the class-averaged (eq. 3)
    weights: ``gradcam_examples.png`` / ``.npz`` / ``.csv`` in ``out_dir``.

    Parameters
    ----------
    z : (N, 220, 220) float32 net inputs; labels : (N,) int64 classes to explain;
    names : N names for the figure and table; alpha_eq3 : (2, K) eq. 3 weights;
    formats : figure formats (:mod:`deadnet_caffe.figout`).

    Returns
    -------
    dict: ``examples`` and the counts of all-zero maps, ``all_zero_eq1`` / ``all_zero_eq3``.
    """
    out_dir = Path(out_dir)
    cb = gc.compute(z, labels)
    own, avg = cb.cams(), cb.cams(alpha_eq3[labels])
    p_sick = gc.net.p_sick(z)
    zero_own, zero_avg = cb.all_zero(own), cb.all_zero(avg)
    titles = [
        f"{n}: {LABELS[int(c)]}, P(sick) {p:.2f}"
        for n, c, p in zip(names, labels, p_sick, strict=True)
    ]
    up_own, up_avg = gc.upsample(own), gc.upsample(avg)
    figure_examples(out_dir / "gradcam_examples.png", z, up_own, up_avg, titles, formats)
    np.savez_compressed(
        out_dir / "gradcam_examples.npz",
        z=z,
        labels=labels,
        cam_eq1=own,
        cam_eq3=avg,
        alpha_eq1=cb.alphas,
        alpha_eq3=alpha_eq3,
    )
    with (out_dir / "gradcam_examples.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["example", "class", "p_sick", "all_zero_eq1", "all_zero_eq3"])
        for row in zip(names, labels, p_sick, zero_own, zero_avg, strict=True):
            w.writerow([row[0], LABELS[int(row[1])], f"{row[2]:.4f}", int(row[3]), int(row[4])])
    return {
        "examples": len(z),
        "all_zero_eq1": int(zero_own.sum()),
        "all_zero_eq3": int(zero_avg.sum()),
    }


def write_whole_frame(
    out_dir: Path,
    gc: GradCam,
    frame: np.ndarray,
    cls: int,
    alpha: np.ndarray,
    stride: int,
    batch: int,
    cal: Calibration | None = None,
    formats: tuple[str, ...] = ("png",),
) -> dict:
    """Whole-frame Grad-CAM of class ``cls`` stitched from overlapping crops
    (:func:`stitch_frame`) with per-crop and with eq. 3 weights ``alpha`` (K,):
    ``whole_frame.png`` (and the other ``formats``) and the ImageJ stack
    ``whole_frame_cam.tif``, float32 (2, H, W), axes CYX: channels ``eq1`` and ``eq3``
    (ImageJ Labels), calibrated with ``cal`` (the frame's pixel size;
    :mod:`data_prep.core.tiffout`).

    Returns
    -------
    dict: the seam index and the number of all-zero crops of each stitching.
    """
    out_dir = Path(out_dir)
    s_own = stitch_frame(gc, frame, cls, None, stride, batch)
    s_avg = stitch_frame(gc, frame, cls, alpha, stride, batch)
    figure_stitched(out_dir / "whole_frame.png", frame, s_own, s_avg, formats)
    write_stack(
        out_dir / "whole_frame_cam.tif",
        np.stack([s_own.cam, s_avg.cam]).astype(np.float32),
        "CYX",
        cal or Calibration(),
        labels=["eq1", "eq3"],
        info=f"Grad-CAM of class {LABELS[cls]} at {gc.layer}",
    )
    return {
        "seam_index_eq1": s_own.seam,
        "seam_index_eq3": s_avg.seam,
        "all_zero_crops_eq1": s_own.n_all_zero,
        "all_zero_crops_eq3": s_avg.n_all_zero,
    }


@dataclass(frozen=True)
class GradCamSettings:
    """What ``deadnet gradcam`` draws (its options, by name); saved in settings.json."""

    weights: Path
    dataset: Path  # folder with train.lmdb (eq. 3) and test.lmdb (examples)
    out: Path
    model: Path = DEFAULT_MODEL
    layer: str = GRADCAM_LAYER
    per_class: int = 200  # training crops per class averaged in eq. 3
    cache: Path | None = None  # eq. 3 cache (.npz); None: beside the weights
    images: tuple[Path, ...] = field(default_factory=tuple)  # examples instead of test.lmdb
    examples: int = 3  # test.lmdb examples per class
    frame: Path | None = None  # image for a whole-frame Grad-CAM
    frame_class: str = "sick"
    stride: int = CROP_STRIDE_PX
    figure_format: tuple[str, ...] = ("png",)
    batch: int = DEFAULT_BATCH
    gpu: int | None = None


def _examples(s: GradCamSettings, net: DeployNet):
    """(z, labels, names) of the example crops: ``s.images`` (labelled by the net's
    prediction) or crops of the dataset's test (else val, else train) LMDB."""
    if s.images:
        z = np.stack([centre_input(read_stack(path)[0]) for path in s.images])
        labels = (net.p_sick(z) >= 0.5).astype(np.int64)  # predicted class
        return z, labels, [path.name for path in s.images]
    for split in ("test.lmdb", "val.lmdb", "train.lmdb"):
        if (Path(s.dataset) / split).is_dir():
            z, labels = sample_crops(Path(s.dataset) / split, s.examples, seed=1)
            return z, labels, [f"{split}#{i}" for i in range(len(z))]
    raise UserError(f"{s.dataset}: no test.lmdb, val.lmdb or train.lmdb for examples.")


def write_gradcam(s: GradCamSettings, progress: bool | None = None) -> dict:
    """Write ``s.out``: the example overlays (:func:`write_examples`), with ``s.frame`` the
    stitched whole-frame maps (:func:`write_whole_frame`), summary.json and settings.json;
    eq. 3's class-averaged weights are computed once and cached in ``s.cache``.

    Returns the summary.json document (``all_zero_eq1``/``all_zero_eq3`` count the maps
    that are zero everywhere).
    """
    if s.per_class < 1 or s.examples < 1 or s.stride < 1:
        raise UserError("--per-class, --examples and --stride must be at least 1.")
    check_image_sources([(path, None, None) for path in s.images])
    weights = Path(s.weights)
    cache = s.cache or weights.with_name(f"{weights.stem}.{s.layer}.eq3.npz")
    inputs = [s.dataset, s.model, s.weights, cache, *s.images]
    if s.frame:
        inputs.append(s.frame)
    with output_dir(s.out, "gradcam", inputs) as tmp:
        frame = read_stack(s.frame)[0] if s.frame else None
        net = DeployNet(s.model, s.weights, s.gpu, force_backward=True)
        gc = GradCam(net, s.layer)
        cw = class_weights(
            gc, Path(s.dataset) / "train.lmdb", cache, s.per_class, s.batch, progress
        )
        print(
            f"eq. 3 weights: {cw['counts'].tolist()} crops per class "
            f"({'cached' if cw['cached'] else 'computed'}: {cache})"
        )
        z, labels, names = _examples(s, net)
        summary = {
            "layer": s.layer,
            "A": "post-ReLU activations; dS/dA taken before ReLU backward",
            "eq3_counts": cw["counts"].tolist(),
            "eq3_cache": str(cache),
            **write_examples(tmp, gc, z, labels, names, cw["alpha"], s.figure_format),
        }
        if frame is not None:
            c = 1 if s.frame_class == "sick" else 0
            summary["whole_frame"] = {
                "class": s.frame_class,
                **write_whole_frame(
                    tmp,
                    gc,
                    frame,
                    c,
                    cw["alpha"][c],
                    s.stride,
                    s.batch,
                    Calibration.of_tiff(s.frame),
                    s.figure_format,
                ),
            }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_settings(tmp, asdict(s))
    return summary
