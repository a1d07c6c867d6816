"""deadnet classify and the inference core: windows, normalisation, real-world inputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile
from infer_nets import phase_like, write_net

from data_prep.core.errors import UserError
from data_prep.core.grids import Grid, window_starts
from data_prep.core.normalize import decode_v, encode_z, variance_normalize
from data_prep.core.stack import read_stack
from deadnet_caffe.cli import main
from deadnet_caffe.infer import (
    DeployNet,
    crop_to_input,
    upsample,
    window_inputs,
)


@pytest.fixture(scope="module")
def net_files(tmp_path_factory):
    return write_net(tmp_path_factory.mktemp("net"))


@pytest.fixture(scope="module")
def net(net_files):
    return DeployNet(*net_files)


def test_window_starts_cover_odd_sizes():
    assert window_starts(1021, 256, 128).tolist() == [0, 128, 256, 384, 512, 640, 765]
    assert window_starts(1024, 256, 128).tolist() == [0, 128, 256, 384, 512, 640, 768]
    # 9 regular windows fit 1344 px (9 x 7 = 63 per frame), plus one flush with the edge
    assert window_starts(1344, 256, 128).tolist()[-3:] == [896, 1024, 1088]
    assert window_starts(256, 256, 128).tolist() == [0]
    assert window_starts(300, 256, 32).tolist() == [0, 32, 44]


def test_grid_centres_are_centre_crop_centres():
    g = Grid.over(1019, 1021, 128)
    cy, cx = g.centres()
    assert cy[0] == 127.5 and cx[-1] == 765 + 127.5
    # the net sees pixels y + 18 .. y + 237 of each window, whose centre is also y + 127.5
    assert g.ys[0] + (256 - 220) // 2 + (220 - 1) / 2 == cy[0]
    small = Grid.over(230, 300, 128)
    assert small.window == 230 and small.ys.tolist() == [0] and small.xs.tolist() == [0, 70]


def test_upsampling_alignment_reproduces_linear_field():
    g = Grid.over(700, 900, 64)
    cy, cx = g.centres()
    values = 0.002 * cy[:, None] - 0.001 * cx[None, :]
    up = upsample(values, g)
    yy, xx = np.mgrid[0:700, 0:900]
    want = 0.002 * np.clip(yy, cy[0], cy[-1]) - 0.001 * np.clip(xx, cx[0], cx[-1])
    np.testing.assert_allclose(up, want, atol=1e-5)
    assert up[0, 0] == pytest.approx(values[0, 0]) and up[-1, -1] == pytest.approx(values[-1, -1])


def test_windows_are_normalised_as_in_training(rng):
    frame = phase_like(rng, 300, 400)
    g = Grid.over(*frame.shape, 128)
    batches = np.concatenate(list(window_inputs(frame, g, batch=4)))
    assert batches.shape == (len(g.offsets()), 220, 220)
    for (y, x), z in zip(g.offsets(), batches, strict=True):
        full = variance_normalize(frame[y : y + 256, x : x + 256])
        np.testing.assert_array_equal(z, full[18:238, 18:238])
    # normalisation is over the 256 px window, not the 220 px crop
    assert abs(float(full.mean())) < 1e-5 and abs(float(full.std()) - 1) < 1e-4


def test_feeding_z_equals_feeding_the_published_transform(net, rng):
    z = crop_to_input(phase_like(rng, 256, 256))[None]
    via_v = decode_v(encode_z(z))  # (v - 32767) * 0.00025, what Caffe's Data layer computes
    assert np.abs(via_v - z).max() < 1e-3
    assert np.abs(net.p_sick(via_v) - net.p_sick(z)).max() < 1e-4


def test_8_and_16_bit_give_the_same_probabilities(net, rng):
    img8 = phase_like(rng, 256, 256, np.uint8)
    img16 = img8.astype(np.uint16) * 257
    p8 = net.p_sick(crop_to_input(img8)[None])
    p16 = net.p_sick(crop_to_input(img16)[None])
    np.testing.assert_allclose(p8, p16, atol=1e-6)


def test_readers_real_world_inputs(tmp_path, real_frames_dir):
    frames = [tifffile.imread(p) for p in sorted(real_frames_dir.glob("*.tif"))[:3]]
    assert frames[0].dtype == np.uint16
    stack8 = np.stack([(f[:1019, :1021] >> 8).astype(np.uint8) for f in frames])
    tifffile.imwrite(tmp_path / "odd8.tif", stack8, compression="lzw", photometric="minisblack")
    got = read_stack(tmp_path / "odd8.tif")
    assert got.shape == (3, 1019, 1021) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, stack8)
    one = read_stack(sorted(real_frames_dir.glob("*.tif"))[0])
    assert one.shape == (1, *frames[0].shape) and one.dtype == np.uint16
    folder = read_stack(real_frames_dir)
    assert folder.shape[0] == 6
    with pytest.raises(UserError, match="at least 220 px"):
        tifffile.imwrite(tmp_path / "small.tif", stack8[0, :200, :300])
        read_stack(tmp_path / "small.tif")


def test_classify_cli_on_real_8bit_lzw_stack(tmp_path, net_files, net, real_frames_dir):
    model, weights = net_files
    src = sorted(real_frames_dir.glob("*.tif"))[:2]
    stack8 = np.stack([(tifffile.imread(p)[:1019, :1021] >> 8).astype(np.uint8) for p in src])
    tifffile.imwrite(tmp_path / "odd8.tif", stack8, compression="lzw", photometric="minisblack")
    out = tmp_path / "cls"
    args = ["classify", str(tmp_path / "odd8.tif"), "--model", str(model)]
    assert main([*args, "--weights", str(weights), "--out", str(out)]) == 0
    crops = list(csv.DictReader((out / "crops.csv").open()))
    images = list(csv.DictReader((out / "images.csv").open()))
    assert len(crops) == 2 * 7 * 7 and len(images) == 2
    # one crop by hand: window (128, 765) of frame 1
    row = next(r for r in crops if (r["frame"], r["y"], r["x"]) == ("1", "128", "765"))
    z = crop_to_input(stack8[1, 128:384, 765:1021])
    assert float(row["p_sick"]) == pytest.approx(float(net.p_sick(z[None])[0]), abs=1e-6)
    mean1 = np.mean([float(r["p_sick"]) for r in crops if r["frame"] == "1"])
    assert float(images[1]["p_sick"]) == pytest.approx(mean1)
    assert (out / "results.json").is_file() and (out / "settings.json").is_file()


def test_classify_centre_and_bad_input(tmp_path, net_files, capsys):
    model, weights = net_files
    common = ["--model", str(model), "--weights", str(weights)]
    # not constant: a constant image is refused (data_prep.core.checks)
    tifffile.imwrite(tmp_path / "a.tif", np.arange(240 * 250, dtype=np.uint16).reshape(240, 250))
    assert main(["classify", str(tmp_path / "a.tif"), "--crops", "centre", *common,
                 "--out", str(tmp_path / "ok")]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "ok" / "crops.csv").open()))
    assert [(r["y"], r["x"], r["size"]) for r in rows] == [("0", "5", "240")]
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    out = tmp_path / "bad"
    assert main(["classify", str(tmp_path / "bad.tif"), *common, "--out", str(out)]) == 2
    assert "bad.tif" in capsys.readouterr().err and not out.exists()
    wrong = tmp_path / "wrong.caffemodel"
    wrong.write_bytes(b"\x00\x01garbage")
    assert main(["classify", str(tmp_path / "a.tif"), "--model", str(model), "--weights",
                 str(wrong), "--out", str(out)]) == 2  # fmt: skip
    assert not out.exists()


def test_reader_hyperstack_channels(tmp_path, rng):
    stack = np.stack([np.stack([phase_like(rng, 230, 240), phase_like(rng, 230, 240)])] * 3)
    tifffile.imwrite(tmp_path / "h.tif", stack, imagej=True, metadata={"axes": "TCYX"})
    got = read_stack(tmp_path / "h.tif", channel=1)
    np.testing.assert_array_equal(got, stack[:, 1])
    with pytest.raises(UserError, match="2 channels"):
        read_stack(tmp_path / "h.tif")
