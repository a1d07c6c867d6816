"""napari widgets: the P(sick) heat map of an image layer, and Grad-CAM of a selected crop.

Both run Caffe in a napari thread worker (:func:`napari.qt.threading.thread_worker`): the
viewer stays responsive, a progress bar counts frames (in the widget and in napari's
activity dock), and errors (a caffemodel that does not fit the prototxt, a missing file)
come back as napari error notifications (napari's workers relay them). The new layers take
the source layer's scale, translation and units, so they lie over the image in world
coordinates.

The computations themselves (:func:`heatmap_frames`, :func:`crop_gradcam`) are plain
functions of the toolkit's library and need no viewer.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
from magicgui.widgets import Container

from data_prep.core.paper import CROP_STRIDE_PX, GRADCAM_LAYER, LABELS, NET_INPUT_PX
from deadnet_caffe.infer import DEFAULT_BATCH, DEFAULT_MODEL
from deadnet_caffe.netspec import published

DEFAULT_DENSE_MODEL = published("deploy_fcn.prototxt")
HEAT_COLORMAP = "inferno"
CAM_COLORMAP = "turbo"


def heatmap_frames(
    frames: np.ndarray,
    model: Path,
    weights: Path,
    mode: str = "exact",
    stride: int = CROP_STRIDE_PX,
    dense_model: Path = DEFAULT_DENSE_MODEL,
    batch: int = DEFAULT_BATCH,
) -> Iterator[np.ndarray]:
    """P(sick) of each (H, W) frame of ``frames`` (T, H, W), one (H, W) float32 map at a time.

    ``mode`` is ``exact`` (every window normalised as in training, at ``stride``) or
    ``dense`` (the fully convolutional ``dense_model``); see :mod:`deadnet_caffe.heatmap`.
    The net is built here, in the calling thread.
    """
    from deadnet_caffe.heatmap import DenseNet, dense_heatmap, exact_heatmap
    from deadnet_caffe.infer import DeployNet

    net = DeployNet(model, weights)
    if mode == "dense":
        heat = partial(dense_heatmap, dense=DenseNet.from_deploy(Path(dense_model), net))
    elif mode == "exact":
        heat = partial(exact_heatmap, predict=net.p_sick, stride=stride, batch=batch)
    else:
        raise ValueError(f"mode {mode!r}: use exact or dense")
    for frame in frames:
        yield heat(frame).astype(np.float32)


def crop_gradcam(
    frame: np.ndarray,
    centre: tuple[float, float],
    model: Path,
    weights: Path,
    cls: int = 1,
    layer: str = GRADCAM_LAYER,
) -> tuple[np.ndarray, tuple[int, int], float]:
    """Grad-CAM (eq. 1-2, the crop's own weights) of the crop of ``frame`` around ``centre``.

    The crop is the training window (256 px, or the shorter side) centred on ``centre``
    (row, column), moved inside the frame; the net sees its normalised centre 220 px.

    Returns
    -------
    cam : (220, 220) float32, upsampled to the net input.
    origin : (row, column) of the cam's top-left pixel in ``frame``.
    p_sick : the net's P(sick) of the crop.
    """
    from data_prep.core.grids import window_size
    from deadnet_caffe.gradcam import GradCam
    from deadnet_caffe.infer import DeployNet, crop_to_input

    h, w = frame.shape
    size = window_size(h, w)
    y0 = int(np.clip(round(centre[0] - size / 2), 0, h - size))
    x0 = int(np.clip(round(centre[1] - size / 2), 0, w - size))
    z = crop_to_input(frame[None, y0 : y0 + size, x0 : x0 + size])
    net = DeployNet(model, weights, force_backward=True)
    gc = GradCam(net, layer)
    cam = gc.upsample(gc.compute(z, cls).cams())[0].astype(np.float32)
    off = (size - NET_INPUT_PX) // 2
    return cam, (y0 + off, x0 + off), float(net.p_sick(z)[0])


def _layer_choices(viewer, kind):
    def choices(_widget=None):
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    return choices


def _placed(src, t: int | None, origin: tuple[int, int] = (0, 0)) -> dict:
    """Scale, translation, units and axis labels of a layer drawn over ``src``.

    ``t``: the data's single frame is ``src``'s frame ``t`` (None: all of ``src``'s frames, or
    ``src`` has none); ``origin``: (row, column) of the data's first pixel in ``src``.
    """
    scale = np.asarray(src.scale, float)
    translate = np.asarray(src.translate, float).copy()
    translate[-2:] += np.asarray(origin, float) * scale[-2:]
    if t is not None:
        translate[0] += t * scale[0]
    return {
        "scale": tuple(scale),
        "translate": tuple(translate),
        "units": tuple(src.units),
        "axis_labels": tuple(src.axis_labels),
    }


class _NetWidget:
    """Shared parts: the image choice, the net files, a run button and a progress bar."""

    def _net_fields(self, viewer):
        import napari
        from magicgui.widgets import ComboBox, FileEdit, ProgressBar, PushButton

        self.viewer = viewer
        self.image = ComboBox(label="image", choices=_layer_choices(viewer, napari.layers.Image))
        self.weights = FileEdit(label="weights", filter="*.caffemodel")
        self.model = FileEdit(label="deploy prototxt", value=DEFAULT_MODEL, filter="*.prototxt")
        self.run_button = PushButton(text="Run")
        self.progress = ProgressBar(label="progress", value=0, max=1)
        self.worker = None
        return [self.image, self.weights, self.model]

    def _watch_layers(self) -> None:
        """Keep the layer choices current, and follow the viewer's active image layer."""
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self.reset_choices)
        self.viewer.layers.selection.events.active.connect(self._follow_active)
        self._follow_active()
        self.run_button.changed.connect(self.start)

    def _follow_active(self, _=None) -> None:
        import napari

        active = self.viewer.layers.selection.active
        # not the layers this plugin adds (they become active when added)
        if isinstance(active, napari.layers.Image) and "deadnet" not in active.metadata:
            self.reset_choices()
            self.image.value = active

    def _frame_index(self, layer) -> int:
        """The source layer's frame shown by the viewer now (data index of axis 0)."""
        world = np.asarray(self.viewer.dims.point, float)
        data = layer.world_to_data(world[-layer.ndim :])
        return int(np.clip(round(float(data[0])), 0, layer.data.shape[0] - 1))

    def _launch(self, work, total: int, done) -> None:
        from napari.qt.threading import thread_worker

        self.progress.max = max(total, 1)
        self.progress.value = 0
        self.run_button.enabled = False
        worker = thread_worker(work, progress={"total": total})()
        worker.yielded.connect(lambda n: setattr(self.progress, "value", n))
        worker.returned.connect(done)
        worker.finished.connect(lambda: setattr(self.run_button, "enabled", True))
        self.worker = worker
        worker.start()


class HeatmapWidget(_NetWidget, Container):
    """Dock widget: P(sick) of the chosen image layer as a colour-mapped layer over it.

    Runs the exact or dense heat map (:mod:`deadnet_caffe.heatmap`) over all frames of a
    (T, H, W) layer, or only the frame on screen, and adds ``P(sick) NAME`` (inferno colour
    map, P(sick) 0 - 1, additive blending) with the image's scale and translation.
    """

    def __init__(self, napari_viewer):
        from magicgui.widgets import CheckBox, ComboBox, FileEdit, SpinBox

        fields = self._net_fields(napari_viewer)
        self.mode = ComboBox(label="mode", choices=["exact", "dense"], value="exact")
        self.dense_model = FileEdit(
            label="dense prototxt", value=DEFAULT_DENSE_MODEL, filter="*.prototxt"
        )
        self.stride = SpinBox(label="stride (px)", value=CROP_STRIDE_PX, min=1, max=4096)
        self.all_frames = CheckBox(text="all frames (else the one on screen)", value=True)
        super().__init__(
            widgets=[
                *fields,
                self.mode,
                self.dense_model,
                self.stride,
                self.all_frames,
                self.run_button,
                self.progress,
            ]
        )
        self._watch_layers()

    def start(self, _=None) -> None:
        """Run the heat map on the chosen layer in a thread worker."""
        src = self.image.value
        if src is None:
            from napari.utils.notifications import show_info

            show_info("Heat map: open an image first.")
            return
        data = np.asarray(src.data)
        t = None
        if data.ndim == 2:
            frames = data[None]
        elif self.all_frames.value:
            frames = data
        else:
            t = self._frame_index(src)
            frames = data[t : t + 1]
        args = (
            Path(self.model.value),
            Path(self.weights.value),
            self.mode.value,
            int(self.stride.value),
            Path(self.dense_model.value),
        )

        def work():
            maps = []
            for i, prob in enumerate(heatmap_frames(frames, *args)):
                maps.append(prob)
                yield i + 1
            return np.stack(maps)

        def done(maps: np.ndarray) -> None:
            name = f"P(sick) {src.name}" + ("" if t is None else f" t={t}")
            self.viewer.add_image(
                maps if data.ndim == 3 else maps[0],
                name=name,
                colormap=HEAT_COLORMAP,
                contrast_limits=(0.0, 1.0),
                opacity=0.6,
                blending="additive",
                metadata={
                    "deadnet": "heatmap",
                    "source": src.name,
                    "mode": self.mode.value,
                    "frame": t,
                },
                **_placed(src, t),
            )

        self._launch(work, len(frames), done)


class GradCamWidget(_NetWidget, Container):
    """Dock widget: Grad-CAM of one crop, added as a layer over the crop.

    The crop is centred on the selected point of the chosen points layer (its last point
    when none is selected; the image centre without a points layer), in the frame on screen
    (or the point's own frame for points with a time axis). Class ``sick`` or ``healthy``,
    at conv_d4_2 with the crop's own weights (eq. 1-2).
    """

    def __init__(self, napari_viewer):
        import napari
        from magicgui.widgets import ComboBox

        fields = self._net_fields(napari_viewer)
        points = _layer_choices(napari_viewer, napari.layers.Points)
        self.points = ComboBox(
            label="crop centre", choices=lambda w: [("image centre", None), *points(w)]
        )
        self.cls = ComboBox(label="class", choices=list(LABELS.values()), value=LABELS[1])
        super().__init__(widgets=[*fields, self.points, self.cls, self.run_button, self.progress])
        self._watch_layers()

    def _centre(self, src) -> tuple[int | None, tuple[float, float]]:
        """(frame index or None, (row, column)) of the crop centre in ``src``'s data."""
        pts = self.points.value
        if pts is None or len(pts.data) == 0:
            t = self._frame_index(src) if src.ndim == 3 else None
            return t, (src.data.shape[-2] / 2, src.data.shape[-1] / 2)
        i = max(pts.selected_data) if pts.selected_data else len(pts.data) - 1
        world = np.asarray(self.viewer.dims.point, float).copy()
        world[-pts.ndim :] = pts.data_to_world(pts.data[i])
        data = src.world_to_data(world[-src.ndim :])
        if src.ndim == 3:
            t = int(np.clip(round(float(data[0])), 0, src.data.shape[0] - 1))
            return t, (float(data[1]), float(data[2]))
        return None, (float(data[0]), float(data[1]))

    def start(self, _=None) -> None:
        """Compute the Grad-CAM of the chosen crop in a thread worker."""
        src = self.image.value
        if src is None:
            from napari.utils.notifications import show_info

            show_info("Grad-CAM: open an image first.")
            return
        t, centre = self._centre(src)
        frame = np.asarray(src.data[t] if t is not None else src.data)
        cls = {name: c for c, name in LABELS.items()}[self.cls.value]
        args = (Path(self.model.value), Path(self.weights.value), cls)

        def work():
            result = crop_gradcam(frame, centre, *args)
            yield 1
            return result

        def done(result) -> None:
            cam, origin, p_sick = result
            self.viewer.add_image(
                cam[None] if t is not None else cam,
                name=f"Grad-CAM {self.cls.value} {src.name}"
                + ("" if t is None else f" t={t}")
                + f" ({origin[0]}, {origin[1]})",
                colormap=CAM_COLORMAP,
                opacity=0.5,
                blending="additive",
                metadata={
                    "deadnet": "gradcam",
                    "source": src.name,
                    "frame": t,
                    "origin": origin,
                    "p_sick": p_sick,
                },
                **_placed(src, t, origin),
            )

        self._launch(work, 1, done)
