"""``pip install .`` (not editable) gives a working toolkit (issue 17, "runs from anywhere"):
the wheel holds every shipped prototxt, and the installed ``deadnet classify`` works from an
empty folder with the default model, with the Caffe build linked as ``make setup`` links it.

The wheel is built from a copy of the sources without build isolation (no download: the
build backend is the dev environment's setuptools) and installed with ``--no-deps`` into a
scratch virtual environment that sees the dev environment's dependencies through a .pth
line; such a line adds a folder to sys.path without running that folder's own .pth files,
so the checkout's editable install stays out and ``deadnet_caffe`` is the installed copy.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from infer_nets import phase_like

from deadnet_caffe.caffe_env import import_caffe
from deadnet_caffe.infer import DeployNet, crop_to_input
from deadnet_caffe.netspec import published

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "prototxt", "deadnet_caffe", "data_prep")
CAFFE_LINK = "deadnet-caffe-build.pth"  # third_party/caffe/build.sh, link_into_venv


def _run(*argv, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_pip_install_gives_a_deadnet_that_runs_from_an_empty_folder(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        else:
            shutil.copy2(ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(src))  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("deadnet_caffe-*.whl")
    shipped = sorted(p.relative_to(ROOT / "prototxt").as_posix()
                     for p in (ROOT / "prototxt").rglob("*") if p.is_file())  # fmt: skip
    assert {"README.md", "deploy.prototxt", "dataset_b/train_val.prototxt"} <= set(shipped)
    with zipfile.ZipFile(wheel) as zf:
        packed = {n for n in zf.namelist() if n.startswith("deadnet_caffe/prototxt/")}
        assert packed >= {f"deadnet_caffe/prototxt/{n}" for n in shipped}
        for n in shipped:
            assert zf.read(f"deadnet_caffe/prototxt/{n}") == (ROOT / "prototxt" / n).read_bytes()

    env = tmp_path / "venv"
    venv.create(env, with_pip=False, symlinks=True)
    py = env / "bin" / "python"
    site = Path(_run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())  # fmt: skip
    here = Path(sysconfig.get_paths()["purelib"])
    (site / "zz-dev-dependencies.pth").write_text(f"{here}\n")
    shutil.copy2(here / CAFFE_LINK, site / CAFFE_LINK)  # the Caffe build, linked
    _run(sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
         "--no-index", str(wheel))  # fmt: skip

    work = tmp_path / "empty"
    work.mkdir()
    where = _run(str(py), "-c", "import deadnet_caffe; print(deadnet_caffe.__file__)", cwd=work)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy
    caffe = import_caffe()
    caffe.set_random_seed(5)
    caffe.Net(str(published("deploy.prototxt")), caffe.TEST).save(str(work / "W.caffemodel"))
    image = phase_like(np.random.default_rng(2), 256, 256)
    tifffile.imwrite(work / "image.tif", image)
    _run(str(env / "bin" / "deadnet"), "classify", "--weights", "W.caffemodel", "--out", "O",
         "image.tif", cwd=work)  # fmt: skip
    (row,) = csv.DictReader((work / "O" / "crops.csv").open())
    net = DeployNet(published("deploy.prototxt"), work / "W.caffemodel")
    want = float(net.p_sick(crop_to_input(image[None]))[0])
    assert float(row["p_sick"]) == pytest.approx(want, abs=1e-6)
