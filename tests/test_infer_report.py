"""deadnet report and the ground-truth validation measures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from infer_nets import phase_like, write_net

from data_prep.core.manifest import Position, write_manifest
from deadnet_caffe.cli import main
from deadnet_caffe.heatmap import exact_heatmap, sick_fraction
from deadnet_caffe.infer import DeployNet
from deadnet_caffe.report import PositionResult, flag_positions, highest_safe_dose, pooled_auroc
from deadnet_caffe.validate import (
    FATE_STRESSED,
    SICK_HEALTHY,
    SICK_NONE,
    SICK_SICK,
    auroc,
    cam_energy_inside,
    heatmap_auroc,
    pointing_hit,
    read_fate_masks,
)


def test_auroc_known_answers():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    # pairs (pos, neg): (0.4 > 0.1), (0.4 < 0.6), (0.8 > 0.1), (0.8 > 0.6) -> 3/4
    assert auroc([0.1, 0.4, 0.6, 0.8], [0, 1, 0, 1]) == 0.75
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_heatmap_auroc_ignores_background():
    masks = np.full((1, 4, 4), 255, np.uint8)
    masks[0, 0, :2] = 1
    masks[0, 1, :2] = 0
    probs = np.zeros((1, 4, 4), np.float32)
    probs[0, 0, :2] = 0.9
    probs[0, 2:] = 1.0  # background: would ruin the AUROC if it were counted
    assert heatmap_auroc(probs, masks) == 1.0


def test_cam_energy_and_pointing_game():
    mask = np.full((50, 50), 255, np.uint8)
    mask[10:20, 10:20] = 1
    mask[30:40, 30:40] = 0
    cam = np.zeros((50, 50))
    cam[10:20, 10:20] = 3.0
    cam[30:40, 30:40] = 1.0
    assert cam_energy_inside(cam, mask) == pytest.approx(0.75)
    assert pointing_hit(cam, mask)
    cam2 = np.zeros((50, 50))
    cam2[45, 45] = 1.0  # 25 px diagonally from (20, 20)... beyond 15 px
    assert not pointing_hit(cam2, mask)
    cam2[45, 45] = 0
    cam2[25, 25] = 1.0  # 5 px x 5 px from (19, 19): within 15 px
    assert pointing_hit(cam2, mask)
    assert np.isnan(cam_energy_inside(np.zeros((50, 50)), mask))


def _result(key, dose, late):
    pos = Position("p", key, "x", dose, 8.0, 0.3, 3, Path("."))
    return PositionResult(pos, [0, 1, 2], np.arange(3) * 8.0, np.array([0.0, late, late]))


def test_flags_and_highest_safe_dose():
    rs = [_result("c1", 0, 0.05), _result("c2", 0, 0.15), _result("a", 20, 0.2),
          _result("b", 20, 0.25), _result("c", 60, 0.5), _result("d", 60, 0.2),
          _result("e", 120, 0.9)]  # fmt: skip
    # baseline = 0.10, limit 0.30 (margin 0.2), late = mean of the last 2 frames
    flags = flag_positions(rs, 0.2, 2)
    assert set(flags) == {"p/c/x", "p/e/x"}
    safe = highest_safe_dose(rs, 0.2, 2, n_boot=300)
    assert safe["dose"] == 20 and safe["baseline"] == pytest.approx(0.1)
    # dose 60's mean (0.35) is above the limit, but a resample of (0.2, 0.2) is not
    assert safe["ci"][0] <= 20 <= safe["ci"][1] and 0 < safe["agree"] < 1


def test_pooled_auroc_across_single_class_positions():
    healthy, sick = _result("h", 0, 0.0), _result("s", 200, 1.0)
    healthy.pixels = (np.array([0.1, 0.3]), np.array([False, False]))
    sick.pixels = (np.array([0.6, 0.2]), np.array([True, True]))
    # pairs (sick, healthy): 0.6 beats 0.1 and 0.3, 0.2 beats 0.1 only -> 3 of 4
    assert pooled_auroc([healthy, sick]) == 0.75
    assert np.isnan(pooled_auroc([_result("x", 0, 0.0)]))


def test_report_cli_with_ground_truth(tmp_path, rng):
    model, weights = write_net(tmp_path)
    exp = tmp_path / "exp"
    (exp / "gt" / "a").mkdir(parents=True)
    (exp / "gt" / "b").mkdir(parents=True)
    positions = []
    for name, dose in (("a", 0.0), ("b", 100.0)):
        tifffile.imwrite(
            exp / f"{name}.tif", np.stack([phase_like(rng, 256, 300)] * 3), photometric="minisblack"
        )
        mask = np.full((3, 256, 300), 255, np.uint8)
        mask[:, 40:200, 40:150] = 1
        mask[:, 40:200, 150:260] = 0
        tifffile.imwrite(exp / "gt" / name / "sick.tif", mask, photometric="minisblack")
        positions.append(Position("pl", "W" + name, "p1", dose, 30.0, 0.3, 3,
                                  exp / f"{name}.tif", ground_truth=exp / "gt" / name))  # fmt: skip
    write_manifest(exp, positions)
    out = tmp_path / "rep"
    args = ["report", "--experiment", str(exp), "--out", str(out), "--late-frames", "2"]
    assert main([*args, "--model", str(model), "--weights", str(weights), "--every", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["positions"] == 2
    # --keep-maps (the default): frames 0 and 2, 0.3 um pixels, 2 x 30 min apart.
    with tifffile.TiffFile(out / "maps" / "pl_Wb_p1_prob.tif") as tif:
        maps, md = tif.asarray(), tif.imagej_metadata
        assert maps.shape == (2, 256, 300) and tif.series[0].axes == "TYX"
        assert md["unit"] == "um" and md["finterval"] == 3600.0
        num, den = tif.pages.first.tags["XResolution"].value
        assert num / den == pytest.approx(1 / 0.3, rel=1e-7)
    frames = tifffile.imread(exp / "b.tif")
    np.testing.assert_allclose(
        maps[1], exact_heatmap(frames[2], DeployNet(model, weights).p_sick), atol=1e-6
    )
    assert tifffile.imread(out / "maps" / "pl_Wa_p1_overlay.tif").shape == (2, 256, 300, 3)
    fractions = list(csv.DictReader((out / "fractions.csv").open()))
    assert float(fractions[-1]["sick_fraction"]) == pytest.approx(sick_fraction(maps[1:])[0])
    args += ["--no-keep-maps", "--figure-format", "pdf"]
    assert main([*args, "--model", str(model), "--weights", str(weights), "--every", "2"]) == 0
    assert not (out / "maps").exists() and (out / "dose_response.pdf").is_file()
    assert not (out / "dose_response.png").exists()
    v = summary["validation"]
    assert v["positions_with_truth"] == 2 and 0 <= v["heatmap_auroc_mean"] <= 1
    assert 0 <= v["heatmap_auroc_pooled"] <= 1
    assert v["gradcam_crops"] in (0, 2)
    md = (out / "report.md").read_text()
    assert "Highest dose that looks safe" in md and "](dose_response.pdf)" in md
    for name in ("dose_response.pdf", "fraction_over_time.pdf", "fractions.csv"):
        assert (out / name).is_file()


def test_fate_masks_from_labels_and_cell_states(tmp_path):
    """Dying and dead cells are committed (1), stressed ones apart (2), off-cell 255."""
    labels = np.zeros((3, 4, 6), np.uint16)
    labels[:, :, :2], labels[:, :, 2:4] = 1, 2  # cell 1 left, cell 2 middle, right empty
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    states = {0: ("healthy", "stressed"), 1: ("healthy", "dying"), 2: ("stressed", "dead")}
    rows = ["frame,step,time_h,id,state,damage,centroid_x,centroid_y,area_px"]
    for t, (s1, s2) in states.items():
        rows += [f"{t},{t},0,1,{s1},0,0,0,8", f"{t},{t},0,2,{s2},0,0,0,8"]
    (tmp_path / "cells.csv").write_text("\n".join(rows) + "\n")
    fate = read_fate_masks(tmp_path, [0, 2])
    assert fate.shape == (2, 4, 6)
    assert (fate[0, :, :2] == SICK_HEALTHY).all() and (fate[0, :, 2:4] == FATE_STRESSED).all()
    assert (fate[1, :, :2] == FATE_STRESSED).all() and (fate[1, :, 2:4] == SICK_SICK).all()
    assert (fate[:, :, 4:] == SICK_NONE).all()
    assert read_fate_masks(tmp_path / "missing", [0]) is None


def test_pooled_fate_auroc_uses_its_own_pixels():
    a, b = _result("a", 0, 0.0), _result("b", 80, 0.5)
    a.pixels = (np.array([0.1, 0.9]), np.array([False, True]))  # any damage: perfect
    b.fate_pixels = (np.array([0.2, 0.4]), np.array([True, False]))  # fate: inverted
    assert pooled_auroc([a, b]) == 1.0
    assert pooled_auroc([a, b], "fate_pixels") == 0.0
