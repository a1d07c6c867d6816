"""What every run writes next to what it made: its settings and the versions it used."""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import fields
from importlib import metadata
from pathlib import Path

_PACKAGES = ("numpy", "scipy", "protobuf", "lmdb", "h5py", "opencv-python-headless", "tifffile")


def toolkit_version() -> str:
    """The installed deadnet-caffe distribution's version (pyproject.toml is its one source)."""
    try:
        return metadata.version("deadnet-caffe")
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Versions of the toolkit, Python, Caffe and the main libraries."""
    out = {"deadnet-caffe": toolkit_version(), "python": platform.python_version()}
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


def settings_from(cls: type, namespace: object):
    """An instance of the dataclass ``cls`` from the attributes of ``namespace`` (a command's
    parsed arguments) named like its fields: how a command hands its options to the library."""
    return cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)})
