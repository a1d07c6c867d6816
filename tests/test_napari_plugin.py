"""The napari plugin, headless: napari's own ``make_napari_viewer`` fixture on Qt's offscreen
platform (OpenGL from the Xvfb display that pytest-xvfb starts), the npe2 manifest, the
experiment reader, and the heat-map and Grad-CAM widgets on a tiny DeadNet-shaped net.

Known answers come from the library functions the commands use (exact_heatmap,
dense_heatmap, GradCam) run here on the test's own crops, and from the files the test wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from infer_nets import deadnet_deploy, make_weights, phase_like, write_net

from data_prep.core.errors import UserError
from data_prep.core.manifest import Position, write_manifest
from data_prep.core.tiffout import Calibration, write_stack

pytestmark = pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6:UserWarning")

if not os.environ.get("DISPLAY"):
    pytest.skip(
        "no X display for Qt's OpenGL context: Xvfb is missing (tests/install-test-deps.sh)",
        allow_module_level=True,
    )

PIXEL_UM, DT_MIN = 0.3225, 8.0
H, W, T = 260, 301, 2


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("net")
    model, weights = write_net(tmp)
    fcn = tmp / "deploy_fcn.prototxt"
    fcn.write_text(deadnet_deploy(fully_conv=True))
    return model, weights, fcn


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """Two positions of (2, 260, 301) uint16; p1 with simulator-style ground truth."""
    rng = np.random.default_rng(7)
    exp = tmp_path_factory.mktemp("exp")
    cal = Calibration(PIXEL_UM, "um", DT_MIN * 60)
    positions = []
    for i in range(2):
        path = exp / f"p{i}.tif"
        write_stack(path, np.stack([phase_like(rng, H, W) for _ in range(T)]), "TYX", cal)
        gt = None
        if i == 1:
            gt = exp / "gt"
            gt.mkdir()
            cells = np.zeros((T, H, W), np.uint16)
            cells[:, 10:50, 20:60], cells[:, 100:150, 100:160] = 3, 9
            sick = np.full((T, H, W), 255, np.uint8)
            sick[cells == 3], sick[cells == 9] = 0, 1  # cell 3 healthy, cell 9 sick
            write_stack(gt / "labels.tif", cells, "TYX", cal, compression="zlib")
            write_stack(gt / "sick.tif", sick, "TYX", cal, compression="zlib")
        row = ("pl", "B2", f"p{i}", 10.0 * i, DT_MIN, PIXEL_UM, T, path, None, None, gt)
        positions.append(Position(*row))
    write_manifest(exp, positions)
    return exp


def test_manifest_validates_with_imports():
    run = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "--imports", "deadnet-caffe"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "valid" in run.stdout


def test_reader_gives_calibrated_movies_and_ground_truth(make_napari_viewer, experiment):
    from deadnet_caffe.napari.reader import get_reader

    assert get_reader(str(experiment / "p0.tif")) is None
    assert get_reader(str(experiment / "manifest.csv")) is not None
    viewer = make_napari_viewer()
    viewer.open(str(experiment), plugin="deadnet-caffe")
    names = [layer.name for layer in viewer.layers]
    assert names == ["pl/B2/p0", "pl/B2/p1", "pl/B2/p1 cells", "pl/B2/p1 sick"]
    movie = viewer.layers["pl/B2/p1"]
    np.testing.assert_array_equal(movie.data, tifffile.imread(experiment / "p1.tif"))
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, (DT_MIN, PIXEL_UM, PIXEL_UM))
        assert [str(u) for u in layer.units] == ["minute", "micrometer", "micrometer"]
    assert type(viewer.layers["pl/B2/p1 cells"]).__name__ == "Labels"
    sick = viewer.layers["pl/B2/p1 sick"].data
    assert sick[1, 30, 40] == 1 and sick[1, 120, 130] == 2 and sick[1, 200, 250] == 0
    assert set(np.unique(sick)) == {0, 1, 2}


def _run(qtbot, widget):
    """Click Run; the click returns before the result (the work is in a thread worker).

    The button stays disabled until the worker's ``finished`` signal."""
    n = len(widget.viewer.layers)
    widget.run_button.clicked()
    assert widget.worker is not None and len(widget.viewer.layers) == n
    assert not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=120_000)


def test_heatmap_widget_exact_all_frames_and_dense_on_screen(
    make_napari_viewer, qtbot, experiment, nets
):
    from deadnet_caffe.heatmap import DenseNet, dense_heatmap, exact_heatmap
    from deadnet_caffe.infer import DeployNet
    from deadnet_caffe.napari.widgets import HeatmapWidget

    model, weights, fcn = nets
    viewer = make_napari_viewer()
    viewer.open(str(experiment / "manifest.csv"), plugin="deadnet-caffe")
    widget = HeatmapWidget(viewer)
    viewer.window.add_dock_widget(widget)
    src = viewer.layers["pl/B2/p1"]
    viewer.layers.selection.active = viewer.layers["pl/B2/p0"]
    assert widget.image.value is viewer.layers["pl/B2/p0"]  # follows the current image layer
    viewer.layers.selection.active = src
    assert widget.image.value is src
    widget.model.value, widget.weights.value, widget.dense_model.value = model, weights, fcn
    widget.stride.value = 64
    _run(qtbot, widget)
    heat = viewer.layers["P(sick) pl/B2/p1"]
    net = DeployNet(model, weights)
    frames = tifffile.imread(experiment / "p1.tif")
    want = np.stack([exact_heatmap(f, net.p_sick, 64) for f in frames])
    np.testing.assert_allclose(heat.data, want, atol=1e-6)
    np.testing.assert_allclose(heat.scale, src.scale)
    np.testing.assert_allclose(heat.translate, src.translate)
    assert heat.units == src.units and heat.colormap.name == "inferno"
    assert tuple(heat.contrast_limits) == (0.0, 1.0) and widget.progress.value == T
    assert viewer.layers.selection.active is heat and widget.image.value is src  # not followed

    # Dense mode, only the frame on screen: one frame placed at that time.
    viewer.dims.set_point(0, DT_MIN)  # world time of frame 1
    widget.mode.value, widget.all_frames.value = "dense", False
    _run(qtbot, widget)
    one = viewer.layers["P(sick) pl/B2/p1 t=1"]
    dense = DenseNet.from_deploy(fcn, net)
    np.testing.assert_allclose(one.data, dense_heatmap(frames[1], dense)[None], atol=1e-6)
    np.testing.assert_allclose(one.translate, (DT_MIN, 0.0, 0.0))
    np.testing.assert_allclose(one.scale, src.scale)


def test_heatmap_widget_reports_bad_weights_and_adds_nothing(
    make_napari_viewer, qtbot, experiment, nets, tmp_path
):
    from deadnet_caffe.napari.widgets import HeatmapWidget

    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"not a caffemodel")
    viewer = make_napari_viewer()
    viewer.open(str(experiment), plugin="deadnet-caffe")
    widget = HeatmapWidget(viewer)
    widget.image.value = viewer.layers["pl/B2/p0"]
    widget.model.value, widget.weights.value = nets[0], bad
    n = len(viewer.layers)
    # napari's workers relay errors to its notification manager, which re-raises them in
    # the Qt event loop under test.
    with qtbot.capture_exceptions() as caught:
        _run(qtbot, widget)
    assert len(caught) == 1 and caught[0][0] is UserError
    assert (
        str(caught[0][1])
        == f"{bad}: not a Caffe .caffemodel " + str(caught[0][1]).split(".caffemodel ", 1)[1]
    )
    assert len(viewer.layers) == n and widget.run_button.enabled


def test_gradcam_widget_on_the_selected_point(
    make_napari_viewer, qtbot, experiment, nets, tmp_path
):
    from deadnet_caffe.gradcam import GradCam
    from deadnet_caffe.infer import DeployNet, crop_to_input
    from deadnet_caffe.napari.widgets import GradCamWidget

    model, _, _ = nets
    weights = make_weights(model, tmp_path / "w.caffemodel", seed=3)
    viewer = make_napari_viewer()
    viewer.open(str(experiment), plugin="deadnet-caffe")
    src = viewer.layers["pl/B2/p0"]
    # Points in world units (min, um, um): frame 1, row 100, column 200.
    pts = viewer.add_points([[0, 0, 0], [DT_MIN, 100 * PIXEL_UM, 200 * PIXEL_UM]])
    pts.selected_data = {1}
    widget = GradCamWidget(viewer)
    widget.image.value, widget.points.value = src, pts
    widget.model.value, widget.weights.value, widget.cls.value = model, weights, "sick"
    _run(qtbot, widget)
    # The 256 px crop centred on (100, 200), moved inside the 260 x 301 frame: rows 0-255,
    # columns 45-300; the net's 220 px centre starts 18 px further in.
    y0, x0 = 0, 45
    frame = tifffile.imread(experiment / "p0.tif")[1]
    net = DeployNet(model, weights, force_backward=True)
    gc = GradCam(net, "conv_d4_2")
    z = crop_to_input(frame[None, y0 : y0 + 256, x0 : x0 + 256])
    want = gc.upsample(gc.compute(z, 1).cams())[0]
    cam = viewer.layers[f"Grad-CAM sick pl/B2/p0 t=1 ({y0 + 18}, {x0 + 18})"]
    np.testing.assert_allclose(cam.data[0], want, atol=1e-6)
    np.testing.assert_allclose(
        cam.translate, (DT_MIN, (y0 + 18) * PIXEL_UM, (x0 + 18) * PIXEL_UM), rtol=1e-9
    )
    np.testing.assert_allclose(cam.scale, src.scale)
    assert cam.metadata["p_sick"] == pytest.approx(float(net.p_sick(z)[0]), abs=1e-6)
