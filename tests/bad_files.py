"""Makers of bad input files, for the bad-input table and the unit tests of the checks.

Each writes one kind of damaged file the way it happens in practice (a copy cut short, a
header overwritten, a file saved in the wrong encoding) from a good file or from scratch,
independently of the code under test.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tifffile


def texture(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A random uint16 image or stack of ``shape`` (counts 1000-5000)."""
    return np.random.default_rng(seed).integers(1000, 5000, shape).astype(np.uint16)


def _first_ifd(data: bytes) -> tuple[int, int]:
    """(offset, number of entries) of a little-endian classic TIFF's first IFD."""
    assert data[:4] == b"II*\x00", "a little-endian classic TIFF"
    ifd = struct.unpack("<I", data[4:8])[0]
    return ifd, struct.unpack("<H", data[ifd : ifd + 2])[0]


def corrupt_first_ifd(path: Path, shape: tuple[int, int] = (300, 300)) -> Path:
    """A TIFF whose first IFD (entry count and entries) is overwritten with 0xAB bytes."""
    tifffile.imwrite(path, texture(shape))
    data = bytearray(path.read_bytes())
    ifd, n = _first_ifd(data)
    data[ifd : ifd + 2 + 12 * n] = b"\xab" * (2 + 12 * n)
    path.write_bytes(bytes(data))
    return path


def first_ifd_past_end(path: Path, shape: tuple[int, int] = (300, 300)) -> Path:
    """A TIFF whose header points to a first IFD 1000 bytes past the end of the file."""
    tifffile.imwrite(path, texture(shape))
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", len(data) + 1000)
    path.write_bytes(bytes(data))
    return path


def huge_header(path: Path, side: int = 200_000) -> Path:
    """A 300 x 300 TIFF whose ImageWidth and ImageLength tags claim ``side`` x ``side``."""
    tifffile.imwrite(path, texture((300, 300)))
    data = bytearray(path.read_bytes())
    ifd, n = _first_ifd(data)
    for i in range(n):
        entry = ifd + 2 + 12 * i
        if struct.unpack("<H", data[entry : entry + 2])[0] in (256, 257):  # width, length
            data[entry + 2 : entry + 8] = struct.pack("<HI", 4, 1)  # LONG, count 1
            data[entry + 8 : entry + 12] = struct.pack("<I", side)
    path.write_bytes(bytes(data))
    return path


def truncated_stack(path: Path, frames: int = 12, shape=(300, 300), imagej=True) -> Path:
    """A multi-frame TIFF (ImageJ hyperstack or plain) cut to half its bytes."""
    kw = {"imagej": True, "metadata": {"axes": "TYX"}} if imagej else {"photometric": "minisblack"}
    tifffile.imwrite(path, texture((frames, *shape)), **kw)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def float_stack(path: Path, bad: float, frames: int = 3, shape=(300, 300)) -> Path:
    """A float32 stack whose last frame holds one ``bad`` pixel (NaN or infinity)."""
    arr = texture((frames, *shape)).astype(np.float32)
    arr[-1, 10, 20] = bad
    tifffile.imwrite(path, arr, photometric="minisblack")
    return path


def constant_frame(path: Path, frames: int = 3, shape=(300, 300), which: int = 0) -> Path:
    """A uint16 stack whose frame ``which`` is constant (every pixel 1234)."""
    arr = texture((frames, *shape))
    arr[which] = 1234
    tifffile.imwrite(path, arr, photometric="minisblack")
    return path


def truncated_jpeg(path: Path, shape: tuple[int, int] = (300, 300)) -> Path:
    """A grey JPEG cut to half its bytes."""
    import cv2

    cv2.imwrite(str(path), (texture(shape) // 20).astype(np.uint8))
    return truncate(path)


def latin1(path: Path, text: str) -> Path:
    """``text`` saved in Latin-1 (as old spreadsheet exports do)."""
    path.write_bytes(text.encode("latin-1"))
    return path


def garbage(path: Path, n: int = 4096, seed: int = 1) -> Path:
    """``n`` random bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def caffemodel_without(weights: Path, out: Path, first_dropped: str) -> Path:
    """``weights`` cut at a layer boundary: every layer from ``first_dropped`` on is gone."""
    from caffe.proto import caffe_pb2

    model = caffe_pb2.NetParameter()
    model.ParseFromString(weights.read_bytes())
    names = [layer.name for layer in model.layer]
    keep = names.index(first_dropped)
    del model.layer[keep:]
    out.write_bytes(model.SerializeToString())
    return out


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut ``path`` to ``fraction`` of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def lmdb_of(path: Path, values: list[bytes]) -> Path:
    """An LMDB folder holding ``values`` under keys 00000000, 00000001, ..."""
    import lmdb

    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(f"{i:08d}".encode(), v)
    env.close()
    return path


# --- ``prepare`` functions for the bad-input table (tests/test_bad_inputs.py) -------------


def at(rel: str, maker, *args, **kw):
    """A ``prepare`` that calls ``maker(case_folder / rel, *args, **kw)``, parents made."""

    def prepare(d: Path) -> None:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        maker(d / rel, *args, **kw)

    return prepare


def tiny(d: Path, damage: str | None = None) -> None:
    """``tiny/`` (the tiny train_val net, deploy net, solver and filler weights) and ``ds/``
    (its train.lmdb and test.lmdb); ``damage`` names what to break afterwards:
    ``"truncated-train"`` (train.lmdb's data.mdb cut in half), ``"garbage-train"`` and
    ``"garbage-test"`` (random bytes), ``"not-datum"`` (records that are no Datums),
    ``"cut-weights"`` (tiny/cut.caffemodel without fc1 and score)."""
    from caffe_tiny import write_dataset, write_solver
    from infer_nets import make_weights

    write_solver(d / "tiny", max_iter=40)
    make_weights(d / "tiny" / "deploy.prototxt", d / "tiny" / "weights.caffemodel")
    write_dataset(d / "ds", 16, 8)
    if damage == "truncated-train":
        truncate(d / "ds" / "train.lmdb" / "data.mdb")
    elif damage in ("garbage-train", "garbage-test"):
        garbage(d / "ds" / f"{damage.split('-')[1]}.lmdb" / "data.mdb", 64 * 1024)
    elif damage == "not-datum":
        for split in ("train.lmdb", "test.lmdb"):
            for f in (d / "ds" / split).iterdir():
                f.unlink()
            lmdb_of(d / "ds" / split, [b"\xff\xfe not a datum"] * 4)
    elif damage == "cut-weights":
        caffemodel_without(d / "tiny" / "weights.caffemodel", d / "tiny" / "cut.caffemodel", "fc1")


def damaged(damage: str):
    """A ``prepare`` that makes :func:`tiny` with ``damage``."""
    return lambda d: tiny(d, damage)


def replace_position(name: str, maker, *args, **kw):
    """A ``prepare`` that replaces the experiment's ``exp/name`` with ``maker``'s file of the
    experiment's frame size (384 x 640) and 12 frames."""
    return at(f"exp/{name}", maker, *args, shape=(384, 640), frames=12, **kw)


def cut_caffemodel(first_dropped: str):
    """A ``prepare`` writing ``net/cut.caffemodel``: net/weights.caffemodel without the
    layers from ``first_dropped`` on."""
    return lambda d: caffemodel_without(
        d / "net" / "weights.caffemodel", d / "net" / "cut.caffemodel", first_dropped
    )


def edited_text(src: str, dst: str, old: str, new: str, encoding: str = "utf-8"):
    """A ``prepare`` writing ``dst``: ``src``'s text with every ``old`` replaced by ``new``."""

    def prepare(d: Path) -> None:
        text = (d / src).read_text()
        assert old in text, f"{old!r} not in {src}"
        (d / dst).write_bytes(text.replace(old, new).encode(encoding))

    return prepare
