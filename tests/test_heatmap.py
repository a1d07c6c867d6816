"""deadnet heatmap: exact and dense sliding-window heat maps and their outputs (Figure 4)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from infer_nets import deadnet_deploy, make_weights, nopad_deploy, phase_like, write_net
from PIL import Image

from data_prep.core.manifest import Position, write_manifest
from deadnet_caffe.cli import main
from deadnet_caffe.heatmap import (
    DenseNet,
    dense_heatmap,
    exact_heatmap,
    local_normalize,
    red_overlay,
    sick_fraction,
)
from deadnet_caffe.infer import DeployNet


@pytest.fixture(scope="module")
def net_files(tmp_path_factory):
    return write_net(tmp_path_factory.mktemp("net"))


def test_heatmap_cli_real_8bit_odd_lzw_timelapse(tmp_path, net_files, real_frames_dir):
    model, weights = net_files
    src = sorted(real_frames_dir.glob("*.tif"))[:3]
    stack8 = np.stack([(tifffile.imread(p)[:1019, :1021] >> 8).astype(np.uint8) for p in src])
    movie = tmp_path / "T98G_odd8.tif"
    tifffile.imwrite(movie, stack8, compression="lzw", photometric="minisblack")
    out = tmp_path / "hm"
    args = ["heatmap", str(movie), "--model", str(model), "--weights", str(weights)]
    assert main([*args, "--out", str(out), "--frame-interval-min", "10"]) == 0
    with tifffile.TiffFile(out / "T98G_odd8_prob.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        # no pixel size in a plain TIFF: none is invented; the interval is the option's
        assert "unit" not in tif.imagej_metadata and tif.imagej_metadata["finterval"] == 600.0
        probs = tif.asarray()
    assert probs.shape == (3, 1019, 1021) and probs.dtype == np.float32
    net = DeployNet(model, weights)
    np.testing.assert_allclose(probs[2], exact_heatmap(stack8[2], net.p_sick, 128), atol=1e-6)
    assert len(list((out / "T98G_odd8").glob("overlay_t*.png"))) == 3
    gif = Image.open(out / "T98G_odd8.gif")
    assert gif.n_frames == 3 and max(gif.size) == 512
    rows = list(csv.DictReader((out / "sick_fraction.csv").open()))
    assert [float(r["time_min"]) for r in rows] == [0.0, 10.0, 20.0]
    np.testing.assert_allclose([float(r["sick_fraction"]) for r in rows], sick_fraction(probs))
    assert (out / "sick_fraction.png").is_file() and (out / "settings.json").is_file()


def test_heatmap_cli_simulated_16bit_experiment_stride_32(tmp_path, net_files, rng):
    model, weights = net_files
    exp = tmp_path / "exp"
    exp.mkdir()
    positions = []
    for i, dose in enumerate((0.0, 120.0)):
        path = exp / f"p{i}.tif"
        tifffile.imwrite(path, np.stack([phase_like(rng, 260, 301) for _ in range(2)]))
        positions.append(Position("plate1", "B2", f"p{i}", dose, 8.0, 0.3225, 2, path))
    write_manifest(exp, positions)
    out = tmp_path / "hm"
    args = ["heatmap", "--experiment", str(exp), "--stride", "32", "--model", str(model)]
    args += ["--figure-format", "png,svg,pdf"]
    assert main([*args, "--weights", str(weights), "--out", str(out)]) == 0
    for suffix in ("png", "svg", "pdf"):
        assert (out / f"sick_fraction.{suffix}").stat().st_size > 0
    # Calibrated as the manifest says: 0.3225 um pixels, 8 min = 480 s between frames.
    for name in ("plate1_B2_p1_prob.tif", "plate1_B2_p1_overlay.tif"):
        with tifffile.TiffFile(out / name) as tif:
            md, tags = tif.imagej_metadata, tif.pages.first.tags
            assert md["unit"] == "um" and md["finterval"] == 480.0 and md["frames"] == 2
            num, den = tags["XResolution"].value
            assert num / den == pytest.approx(1 / 0.3225, rel=1e-7)
            assert tif.series[0].axes == ("TYX" if "prob" in name else "TYXS")
            assert tif.pages.first.compression == tifffile.COMPRESSION.ADOBE_DEFLATE  # zlib
    rows = list(csv.DictReader((out / "sick_fraction.csv").open()))
    assert [(r["position"], r["time_min"]) for r in rows] == [
        ("plate1_B2_p0", "0.0"), ("plate1_B2_p0", "8.0"),
        ("plate1_B2_p1", "0.0"), ("plate1_B2_p1", "8.0"),
    ]  # fmt: skip
    probs = tifffile.imread(out / "plate1_B2_p1_prob.tif")
    net = DeployNet(model, weights)
    frame = tifffile.imread(exp / "p1.tif")[1]
    np.testing.assert_allclose(probs[1], exact_heatmap(frame, net.p_sick, 32), atol=1e-6)
    overlay = tifffile.imread(out / "plate1_B2_p1_overlay.tif")
    assert overlay.shape == (2, 260, 301, 3) and overlay.dtype == np.uint8
    np.testing.assert_array_equal(overlay[1], red_overlay(frame, probs[1]))


def test_heatmap_cli_rejects_mixed_inputs(tmp_path, net_files, capsys):
    model, weights = net_files
    out = tmp_path / "x"
    args = ["heatmap", str(tmp_path / "a.tif"), "--experiment", str(tmp_path)]
    assert main([*args, "--model", str(model), "--weights", str(weights), "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err and not out.exists()


def test_local_normalize_matches_window_statistics(rng):
    frame = phase_like(rng, 300, 320).astype(np.float64)
    z = local_normalize(frame)
    y, x = 150, 170  # an interior pixel: its window is rows y-128 .. y+127
    win = frame[y - 128 : y + 128, x - 128 : x + 128]
    assert z[y, x] == pytest.approx((frame[y, x] - win.mean()) / win.std(), rel=1e-4)
    assert np.all(local_normalize(np.full((260, 260), 7.0)) == 0)


def test_dense_equals_exact_without_normalisation(tmp_path, rng):
    """No padding and even sizes before each pooling: the fully convolutional net over a
    frame gives exactly the deploy net's answer for every 220 px window at stride 8."""
    (tmp_path / "d.prototxt").write_text(nopad_deploy())
    (tmp_path / "f.prototxt").write_text(nopad_deploy(fully_conv=True))
    weights = make_weights(tmp_path / "d.prototxt", tmp_path / "w.caffemodel", seed=3)
    net = DeployNet(tmp_path / "d.prototxt", weights)
    dense = DenseNet.from_deploy(tmp_path / "f.prototxt", net)
    assert dense.stride == 8
    frame = rng.normal(size=(220 + 8 * 5, 220 + 8 * 3)).astype(np.float32)
    prob, cy, cx = dense.probs(frame)
    assert prob.shape == (6, 4) and cy[0] == 109.5 and cx[-1] == 24 + 109.5
    exact = np.array(
        [[net.p_sick(frame[None, 8 * i : 8 * i + 220, 8 * j : 8 * j + 220])[0] for j in range(4)]
         for i in range(6)]
    )  # fmt: skip
    np.testing.assert_allclose(prob, exact, atol=2e-5)
    assert np.ptp(exact) > 1e-3  # the windows really differ


def test_dense_mode_on_deadnet_geometry(tmp_path, net_files, rng):
    model, weights = net_files
    fcn = tmp_path / "fcn.prototxt"
    fcn.write_text(deadnet_deploy(fully_conv=True))
    net = DeployNet(model, weights)
    dense = DenseNet.from_deploy(fcn, net)
    assert dense.stride == 16
    frame = phase_like(rng, 220 + 16 * 4, 300)
    prob, _, _ = dense.probs(local_normalize(frame))
    assert prob.shape == (5, 6) and np.all((prob > 0) & (prob < 1))
    hm = dense_heatmap(frame, dense)
    assert hm.shape == frame.shape
    out = tmp_path / "hm"
    tifffile.imwrite(tmp_path / "f.tif", frame)
    args = ["heatmap", str(tmp_path / "f.tif"), "--mode", "dense", "--dense-model", str(fcn)]
    tifffile.imwrite(  # calibrated as Fiji writes it: micron, interval in minutes
        tmp_path / "f.tif",
        frame[None],
        imagej=True,
        resolution=(2.0, 2.0),
        metadata={"axes": "TYX", "unit": "micron", "finterval": 5, "tunit": "min"},
    )
    assert main([*args, "--model", str(model), "--weights", str(weights), "--out", str(out)]) == 0
    with tifffile.TiffFile(out / "f_prob.tif") as tif:
        np.testing.assert_allclose(tif.asarray(), hm, atol=1e-6)
        assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["finterval"] == 300
        assert tif.pages.first.tags["XResolution"].value == (2, 1)
