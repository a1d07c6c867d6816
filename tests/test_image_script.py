"""docker/image.sh's choice of base image, with a stand-in container engine.

The engine is a small script on PATH that records its arguments and answers ``images`` and
``image inspect`` the way podman does; a real build takes 20 minutes (``make docker-check``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ENGINE = """#!/usr/bin/env bash
echo "$*" >> "$ENGINE_LOG"
case "$1" in
  images) printf '%s\\n' $ENGINE_IMAGES ;;
  image) [ "$2" = inspect ] && echo 123000000 ;;
  pull) exit 1 ;;
esac
exit 0
"""


def _run(tmp_path: Path, images: str) -> tuple[subprocess.CompletedProcess, list[str], Path]:
    tree = tmp_path / "tree"
    (tree / "docker").mkdir(parents=True)
    shutil.copy(REPO / "docker" / "image.sh", tree / "docker" / "image.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    engine = bin_dir / "podman"
    engine.write_text(ENGINE)
    engine.chmod(0o755)
    debootstrap = bin_dir / "debootstrap"  # never bootstrap for real in a test
    debootstrap.write_text("#!/bin/sh\nexit 1\n")
    debootstrap.chmod(0o755)
    log = tmp_path / "engine.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ENGINE": "podman",
           "ENGINE_LOG": str(log), "ENGINE_IMAGES": images, "TMPDIR": str(tmp_path)}  # fmt: skip
    proc = subprocess.run(["bash", str(tree / "docker" / "image.sh"), "image"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls, tree


def test_a_fresh_clone_reuses_the_newest_bootstrapped_base(tmp_path):
    images = ("docker.io/library/debian:bookworm localhost/deadnet-base:bookworm-20260301 "
              "localhost/deadnet-base:bookworm-20260711 localhost/deadnet-caffe:gpu")  # fmt: skip
    proc, calls, tree = _run(tmp_path, images)
    assert proc.returncode == 0, proc.stderr
    base = "localhost/deadnet-base:bookworm-20260711"
    assert (tree / ".docker-base").read_text().strip() == base
    assert not any(c.startswith(("pull", "import")) for c in calls)
    build = [c for c in calls if c.startswith("build ")]
    assert build == [f"build --target runtime --build-arg BASE={base} -t deadnet-caffe:gpu "
                     "--isolation chroot ."]  # fmt: skip


def test_without_a_local_base_it_makes_one(tmp_path):
    # no base in the store and no registry: the script goes on to bootstrap, which fails
    # here (a stand-in debootstrap) and stops the build before it starts
    proc, calls, tree = _run(tmp_path, "localhost/deadnet-caffe:gpu")
    assert calls == ["images --format {{.Repository}}:{{.Tag}}", "pull debian:bookworm"]
    assert "no registry answered" in proc.stdout
    assert proc.returncode == 2 and not (tree / ".docker-base").exists()
