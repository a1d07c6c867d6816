"""The toolkit runs from any folder: default models are package data, found without the
checkout as the current folder (issue 17, "runs from anywhere")."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from infer_nets import phase_like

from deadnet_caffe.caffe_env import import_caffe
from deadnet_caffe.infer import DeployNet, crop_to_input
from deadnet_caffe.netspec import published

ROOT = Path(__file__).resolve().parent.parent
DEADNET = Path(sys.executable).parent / "deadnet"


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """An empty folder outside the checkout, with weights for the shipped deploy net (Caffe's
    own Xavier fillers, saved), a one-frame image and a 5-frame movie that tifffile's ImageJ
    writer labels CYX."""
    caffe = import_caffe()
    work = tmp_path_factory.mktemp("elsewhere")
    assert ROOT not in work.parents and not (work / "prototxt").exists()
    caffe.set_random_seed(3)
    net = caffe.Net(str(published("deploy.prototxt")), caffe.TEST)
    net.save(str(work / "W.caffemodel"))
    rng = np.random.default_rng(7)
    tifffile.imwrite(work / "image.tif", phase_like(rng, 256, 280))
    movie = np.stack([phase_like(rng, 256, 256) for _ in range(5)])
    tifffile.imwrite(work / "movie.tif", movie, imagej=True)
    with tifffile.TiffFile(work / "movie.tif") as tif:
        assert tif.series[0].axes == "CYX"  # what the issue describes
    return work, movie


def _deadnet(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DEADNET), *args], cwd=work, capture_output=True, text=True, timeout=600
    )


def test_shipped_prototxts_are_package_data():
    for name in ("deploy.prototxt", "deploy_fcn.prototxt", "dataset_a/solver.prototxt"):
        path = published(name)
        assert path.is_file() and path.read_bytes() == (ROOT / "prototxt" / name).read_bytes()


def test_python_m_deadnet_caffe(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "deadnet_caffe", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout.startswith("deadnet ")


def test_classify_from_outside_the_checkout_with_the_default_model(elsewhere):
    work, _ = elsewhere
    done = _deadnet(work, "classify", "--weights", "W.caffemodel", "--out", "O", "image.tif")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((work / "O" / "crops.csv").open()))
    assert [(r["y"], r["x"]) for r in rows] == [("0", "0"), ("0", "24")]
    # the default model is the shipped deploy.prototxt: the same P(sick) in this process
    net = DeployNet(published("deploy.prototxt"), work / "W.caffemodel")
    image = tifffile.imread(work / "image.tif")
    want = net.p_sick(crop_to_input(image[None, 0:256, 24:280]))[0]
    assert float(rows[1]["p_sick"]) == pytest.approx(float(want), abs=1e-6)


def test_heatmap_from_outside_the_checkout_reads_an_imagej_movie_with_axes(elsewhere):
    work, movie = elsewhere
    args = ["heatmap", "--weights", "W.caffemodel", "--out", "O2", "movie.tif"]
    refused = _deadnet(work, *args)
    assert refused.returncode == 2
    assert "5 channels" in refused.stderr and "--axes" in refused.stderr
    assert "manifest" not in refused.stderr and not (work / "O2").exists()
    done = _deadnet(work, *args, "--axes", "TYX")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((work / "O2" / "sick_fraction.csv").open()))
    assert [int(r["frame"]) for r in rows] == [0, 1, 2, 3, 4]
    # a 256 px frame is one window: its map is that window's P(sick) everywhere
    net = DeployNet(published("deploy.prototxt"), work / "W.caffemodel")
    want = net.p_sick(crop_to_input(movie.astype(np.float32)))
    got = [float(r["mean_p_sick"]) for r in rows]
    np.testing.assert_allclose(got, want, atol=1e-5)
