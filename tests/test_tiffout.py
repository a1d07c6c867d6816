"""Calibrated ImageJ TIFFs (data_prep.core.tiffout) and figure formats (deadnet_caffe.figout).

Every writer is read back with tifffile: resolution tags, the ImageJ description's unit,
finterval, axes and labels, and the pixels themselves.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import tifffile

from data_prep.core.figures import subplots
from data_prep.core.tiffout import Calibration, StackWriter, write_stack
from deadnet_caffe.figout import figure_formats, save_figure


def calibration_of(path):
    """(pixels per unit x, y, ResolutionUnit, ImageJ metadata, axes) as tifffile reads them."""
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        x, y = (tags[n].value[0] / tags[n].value[1] for n in ("XResolution", "YResolution"))
        return x, y, int(tags["ResolutionUnit"].value), tif.imagej_metadata, tif.series[0].axes


def test_time_lapse_carries_pixel_size_unit_and_frame_interval(tmp_path, rng):
    data = rng.integers(0, 4096, size=(3, 20, 30), dtype=np.uint16)
    path = tmp_path / "movie.tif"
    write_stack(path, data, "TYX", Calibration(0.3225, "um", 480.0), compression="zlib")
    x, y, unit_tag, md, axes = calibration_of(path)
    assert axes == "TYX" and unit_tag == 1  # ImageJ: ResolutionUnit NONE, unit in the text
    assert x == pytest.approx(1 / 0.3225, rel=1e-7) and y == pytest.approx(1 / 0.3225, rel=1e-7)
    assert md["unit"] == "um" and md["finterval"] == 480.0 and md["frames"] == 3
    np.testing.assert_array_equal(tifffile.imread(path), data)


def test_channels_are_c_with_labels_not_z(tmp_path, rng):
    data = rng.random((2, 16, 18)).astype(np.float32)
    path = tmp_path / "cam.tif"
    write_stack(path, data, "CYX", Calibration(0.65), labels=["eq1", "eq3"])
    x, _, _, md, axes = calibration_of(path)
    assert axes == "CYX" and md["channels"] == 2 and "slices" not in md
    assert md["Labels"] == ["eq1", "eq3"] and "finterval" not in md
    assert x == pytest.approx(1 / 0.65, rel=1e-7)


def test_rgb_overlay_stack_streamed_from_a_thread(tmp_path, rng):
    frames = rng.integers(0, 256, size=(4, 12, 14, 3), dtype=np.uint8)
    path = tmp_path / "overlay.tif"
    w = StackWriter(path, frames.shape, np.uint8, "TYXS", Calibration(2.0, "um", 60.0))
    for f in frames:
        w.put(f)
    w.close()
    x, _, _, md, axes = calibration_of(path)
    assert axes == "TYXS" and md["finterval"] == 60.0 and x == pytest.approx(0.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.photometric == tifffile.PHOTOMETRIC.RGB
        np.testing.assert_array_equal(tif.asarray(), frames)


def test_stack_writer_reports_a_short_stack(tmp_path):
    w = StackWriter(tmp_path / "short.tif", (3, 8, 8), np.uint8, "TYX", Calibration())
    w.put(np.zeros((8, 8), np.uint8))
    with pytest.raises(Exception):  # noqa: B017 - tifffile's own error for a missing frame
        w.close()


def test_unknown_calibration_is_left_out(tmp_path):
    path = tmp_path / "plain.tif"
    write_stack(path, np.zeros((2, 8, 8), np.float32), "TYX", Calibration())
    x, _, _, md, _ = calibration_of(path)
    assert x == 1.0 and "unit" not in md and "finterval" not in md
    assert Calibration.of_tiff(path) == Calibration()


def test_axes_must_match_the_data(tmp_path):
    with pytest.raises(ValueError, match="axes"):
        write_stack(tmp_path / "x.tif", np.zeros((2, 8, 8)), "YX", Calibration())
    assert not (tmp_path / "x.tif").exists()


def test_read_calibration_imagej_round_trip_and_frame_interval_units(tmp_path):
    path = tmp_path / "a.tif"
    write_stack(path, np.zeros((2, 8, 8), np.uint16), "TYX", Calibration(0.65, "um", 300.0))
    assert Calibration.of_tiff(path) == Calibration(0.65, "um", 300.0)
    # Fiji writes micron and may keep the interval in minutes (tunit).
    fiji = tmp_path / "fiji.tif"
    tifffile.imwrite(
        fiji,
        np.zeros((2, 8, 8), np.uint16),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"axes": "TYX", "unit": "micron", "finterval": 5, "tunit": "min"},
    )
    assert Calibration.of_tiff(fiji) == Calibration(0.25, "um", 300.0)
    assert Calibration.of_tiff(fiji).every(3).frame_interval_s == 900.0


def test_read_calibration_plain_tiff_cm_ome_inch_and_png(tmp_path):
    cm = tmp_path / "cm.tif"
    tifffile.imwrite(cm, np.zeros((8, 8), np.uint8), resolution=(20000, 20000), resolutionunit=3)
    assert Calibration.of_tiff(cm) == Calibration(0.5, "um", None)  # 1 cm / 20000 = 0.5 um
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, np.zeros((8, 8), np.uint8), resolution=(72, 72), resolutionunit=2)
    assert Calibration.of_tiff(inch) == Calibration()
    ome = tmp_path / "x.ome.tif"
    tifffile.imwrite(
        ome,
        np.zeros((3, 8, 8), np.uint16),
        metadata={"axes": "TYX", "PhysicalSizeX": 0.325, "TimeIncrement": 600.0},
    )
    assert Calibration.of_tiff(ome) == Calibration(0.325, "um", 600.0)
    folder = tmp_path / "frames"
    folder.mkdir()
    write_stack(folder / "f1.tif", np.zeros((8, 8), np.uint8), "YX", Calibration(0.7))
    assert Calibration.of_tiff(folder).pixel_size == pytest.approx(0.7)
    png = tmp_path / "x.png"
    png.write_bytes(b"")
    assert Calibration.of_tiff(png) == Calibration()


def test_figure_formats_option_and_files(tmp_path):
    assert figure_formats("png, SVG,pdf,png") == ("png", "svg", "pdf")
    for bad in ("jpg", "", "png,eps"):
        with pytest.raises(argparse.ArgumentTypeError):
            figure_formats(bad)
    fig, ax = subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "f.png", ("png", "svg", "pdf"))
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:1000]
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
