"""What every run writes next to what it made: its settings and the versions it used."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from deadnet_caffe import __version__

_PACKAGES = ("numpy", "scipy", "protobuf", "lmdb", "h5py", "opencv-python-headless", "tifffile")


def versions() -> dict[str, str]:
    """Versions of the toolkit, Python, Caffe and the main libraries."""
    out = {"deadnet-caffe": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        import caffe

        out["caffe"] = caffe.__version__
        out["caffe_path"] = str(Path(caffe.__file__).parent.parent.parent.name)
    except ImportError:
        out["caffe"] = "not importable"
    return out


def write_settings(out_dir: Path | str, settings: dict, name: str = "settings.json") -> Path:
    """Write ``settings`` plus versions, command line and time as JSON in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "settings": settings,
        "versions": versions(),
        "argv": sys.argv,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = out / name
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path


@contextlib.contextmanager
def atomic_dir(final: Path | str, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it to ``final`` only on success.

    An interrupted or failed run leaves no folder that looks complete: the temporary one is
    removed on error, and ``final`` is replaced in one rename.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(final)
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
