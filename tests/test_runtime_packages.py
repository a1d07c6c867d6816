"""docker/runtime-packages.sh: the Debian packages the runtime image needs for a folder's ELF
files, found through `ldd` and `dpkg -S` (issue 20; docs/gpu.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docker" / "runtime-packages.sh"
BLAS = Path("/lib/x86_64-linux-gnu/libblas.so.3")

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg") is None or shutil.which("gcc") is None, reason="needs dpkg and gcc"
)


def _program(folder: Path, *libs: str) -> Path:
    src = folder / "m.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = folder / "m"
    subprocess.run(
        ["gcc", "-o", exe, src, "-Wl,--no-as-needed", *[f"-l{lib}" for lib in libs]], check=True
    )
    src.unlink()
    return exe


def _dpkg_owner(path: str) -> str:
    return subprocess.run(
        ["dpkg", "-S", path], capture_output=True, text=True, check=True
    ).stdout.split(":")[0]


@pytest.mark.skipif(not BLAS.is_symlink(), reason="no libblas.so.3 through update-alternatives")
def test_a_library_behind_update_alternatives_maps_to_the_package_of_its_target(tmp_path):
    # libblas.so.3 reaches the build through /etc/alternatives: dpkg owns only the target.
    _program(tmp_path, "blas")
    assert subprocess.run(["dpkg", "-S", str(BLAS)], capture_output=True).returncode != 0
    expected = _dpkg_owner(os.path.realpath(BLAS))
    out = subprocess.run([SCRIPT, tmp_path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    pkgs = out.stdout.split()
    assert expected in pkgs
    assert _dpkg_owner("/lib/x86_64-linux-gnu/libc.so.6") in pkgs


def test_a_library_no_package_owns_outside_the_folders_stops_it(tmp_path):
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    (lib_dir / "x.c").write_text("int x(void) { return 1; }\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", lib_dir / "libx.so", lib_dir / "x.c"], check=True
    )
    app = tmp_path / "app"
    app.mkdir()
    exe = app / "m"
    (app / "m.c").write_text("int x(void); int main(void) { return x(); }\n")
    subprocess.run(
        ["gcc", "-o", exe, app / "m.c", f"-L{lib_dir}", "-lx", f"-Wl,-rpath,{lib_dir}"],
        check=True,
    )
    (app / "m.c").unlink()
    out = subprocess.run([SCRIPT, app], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"no Debian package owns {lib_dir / 'libx.so'}" in out.stderr
    # inside a copied folder the same library is left out: the image copies it
    both = subprocess.run([SCRIPT, app, lib_dir], capture_output=True, text=True)
    assert both.returncode == 0, both.stderr
