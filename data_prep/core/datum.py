"""The one Datum/LMDB codec: Caffe's Datum bytes, their decoding, LMDB checks and reads, and
the TEST-phase transform of Caffe's Data layer.

Datum bytes are built directly (:func:`datum_bytes`): fields channels (1), height (2),
width (3), label (5) as varints and float_data (6) as one packed run of little-endian
float32. Caffe's proto2 parser accepts packed repeated scalars, and building the bytes this
way avoids protobuf-Python's per-float work. Values are v = 32767 + 4000 z
(:func:`data_prep.core.normalize.encode_z`), which the published transform_param
(mean_value 32767, scale 0.00025) turns back into z.

:func:`parse_datum` reads any Datum: the packed float_data written here, the unpacked
float_data that protobuf-Python writes for proto2, and the uint8 ``data`` bytes of Caffe's
own tools, without importing Caffe. Every reader of an LMDB (evaluation, galleries, Grad-CAM
and class-model crops, the training runner's dataset check) goes through it.

:func:`test_transform` is Caffe's ``DataTransformer`` in the TEST phase
(data_transformer.cpp): the centre crop at offset ``(h - crop) // 2``, then
``(v - mean_value) * scale``. :func:`centre_crop` is its crop alone, which inference applies
to variance-normalised windows.

LMDBs are checked (:func:`check_lmdb`) with plain file reads of the meta pages of
``data.mdb`` before anything maps them (a truncated ``data.mdb`` would otherwise kill the
process with SIGBUS on the first read); then the LMDB is opened read-only (``lock=False``)
and its first and last records must decode as Datums of one shape whose value count fits
that shape.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.core.errors import UserError
from data_prep.core.normalize import decode_v
from data_prep.core.paper import NET_INPUT_PX

# --- Datum bytes ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def datum_header(height: int, width: int, label: int, channels: int = 1) -> bytes:
    """The Datum bytes before the float payload of a (channels, height, width) crop."""
    n_bytes = 4 * channels * height * width
    return (
        b"\x08"
        + _varint(channels)
        + b"\x10"
        + _varint(height)
        + b"\x18"
        + _varint(width)
        + b"\x28"
        + _varint(label)
        + b"\x32"
        + _varint(n_bytes)
    )


def datum_bytes(v: np.ndarray, label: int) -> bytes:
    """Serialised caffe.proto Datum with packed ``float_data`` = ``v`` (H, W) or (C, H, W)."""
    v = np.asarray(v, dtype="<f4")
    c, h, w = (1, *v.shape) if v.ndim == 2 else v.shape
    return datum_header(h, w, label, c) + v.tobytes()


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(raw):
            raise ValueError("the record ends inside a varint")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _unpacked_floats(raw: bytes, pos: int) -> tuple[np.ndarray, int]:
    """A run of unpacked float_data entries (tag 0x35 + 4 bytes each) starting at ``pos``."""
    n = (len(raw) - pos) // 5
    rows = np.frombuffer(raw, dtype=np.uint8, count=5 * n, offset=pos).reshape(n, 5)
    run = n if (rows[:, 0] == 0x35).all() else int(np.argmin(rows[:, 0] == 0x35))
    values = np.ascontiguousarray(rows[:run, 1:]).view("<f4").ravel()
    return values, pos + 5 * run


def parse_datum(raw: bytes) -> tuple[np.ndarray, int]:
    """Decode a serialised Caffe Datum (module docstring) without protobuf.

    Returns
    -------
    v : (C, H, W) float32
        float_data, or the uint8 ``data`` bytes as float32.
    label : int

    Raises
    ------
    ValueError
        The bytes are not a Datum, or their value count does not fit C x H x W.
    """
    fields: dict[int, int] = {}
    floats: list[np.ndarray] = []
    data = b""
    pos = 0
    while pos < len(raw):
        tag, pos = _read_varint(raw, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[field], pos = _read_varint(raw, pos)
        elif wire == 2:
            n, pos = _read_varint(raw, pos)
            if pos + n > len(raw):
                raise ValueError("a length-delimited field runs past the record's end")
            if field == 6:
                floats.append(np.frombuffer(raw, dtype="<f4", count=n // 4, offset=pos))
            elif field == 4:
                data = raw[pos : pos + n]
            pos += n
        elif wire == 5 and field == 6:
            run, pos = _unpacked_floats(raw, pos - 1)
            floats.append(run)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"field tag {tag} is not a Datum field")
    shape = (fields.get(1, 0), fields.get(2, 0), fields.get(3, 0))
    if floats:
        v = np.concatenate(floats).astype(np.float32)
    else:
        v = np.frombuffer(data, dtype=np.uint8).astype(np.float32)
    if min(shape) < 1 or v.size != math.prod(shape):
        raise ValueError(f"holds {v.size} values for a {' x '.join(map(str, shape))} Datum")
    return v.reshape(shape), int(fields.get(5, 0))


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    """Caffe's TEST-phase crop: (..., H, W) -> (..., size, size) at ``((H - size) // 2,
    (W - size) // 2)``; a view."""
    y0, x0 = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., y0 : y0 + size, x0 : x0 + size]


def test_transform(v: np.ndarray, crop: int, mean: float, scale: float) -> np.ndarray:
    """Caffe's TEST-phase DataTransformer: (C, H, W) stored values -> (C, crop, crop) float32
    net input, ``(centre_crop(v) - mean) * scale``; ``crop`` 0 keeps the shorter side."""
    c = crop or min(v.shape[-2:])
    return ((centre_crop(v, c) - mean) * scale).astype(np.float32)


def read_datum(txn, path: Path | str, key: bytes) -> tuple[np.ndarray, int]:
    """The Datum at ``key`` of an open LMDB transaction: ((C, H, W) float32, label).

    Raises
    ------
    UserError
        No such key, or its value is not a Datum.
    """
    raw = txn.get(key)
    if raw is None:
        raise UserError(f"{path}: no record {key.decode(errors='replace')!r}.")
    try:
        return parse_datum(raw)
    except ValueError as err:
        raise UserError(
            f"{path}: record {key.decode(errors='replace')!r} is not a Caffe Datum ({err})."
        ) from None


def iter_datums(path: Path | str) -> Iterator[tuple[str, np.ndarray, int]]:
    """Every record of a checked Datum LMDB, in key order: (key, (C, H, W) float32, label).

    Raises
    ------
    UserError
        A record that is not a Datum.
    """
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                v, label = read_datum(txn, path, bytes(key))
                yield bytes(key).decode(errors="replace"), v, label
    finally:
        env.close()


def sample_crops(path: Path | str, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` crops of each label from a Datum LMDB, in a seeded random order.

    The dataset stores crops as Caffe Datum ``float_data``, v = 32767 + 4000 z, 1 x 256 x 256,
    label 0/1 (for Grad-CAM examples and class-model starts). Returns (z, labels):
    (N, 220, 220) float32 centre crops (Caffe's TEST transform) and (N,) int64.
    """
    if not Path(path).is_dir():
        raise UserError(f"{path}: no such LMDB (the dataset's train.lmdb).")
    _, shape = check_lmdb(path)
    if min(shape[1:]) < NET_INPUT_PX:
        raise UserError(
            f"{path}: holds {shape[2]} x {shape[1]} px crops, smaller than the net's "
            f"{NET_INPUT_PX} px input."
        )
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False)
    out: dict[int, list[np.ndarray]] = {0: [], 1: []}
    with env.begin() as txn:
        keys = list(txn.cursor().iternext(keys=True, values=False))
        for i in np.random.default_rng(seed).permutation(len(keys)):
            v, label = read_datum(txn, path, bytes(keys[i]))
            if label not in out or len(out[label]) >= per_class:
                continue
            out[label].append(centre_crop(decode_v(v[0]), NET_INPUT_PX))
            if all(len(c) >= per_class for c in out.values()):
                break
    env.close()
    labels = np.concatenate([np.full(len(out[c]), c, dtype=np.int64) for c in (0, 1)])
    crops = [c for k in (0, 1) for c in out[k]]
    if not crops:
        raise UserError(f"{path}: the LMDB holds no crops labelled 0 or 1.")
    return np.stack(crops).astype(np.float32), labels


# --- LMDB files ----------------------------------------------------------------------------------

_MDB_MAGIC = 0xBEEFC0DE
_META = struct.Struct("<IIQQ48s48sQQ")  # magic, version, address, mapsize, 2 dbs, last_pg, txnid
_PAGE_HEADER = 16


def lmdb_required_size(data_mdb: Path | str) -> int:
    """Bytes that ``data.mdb`` must have: (last page + 1) x page size, from its meta pages.

    Reads the two meta pages of the LMDB file format (64-bit build) without mapping the
    file, and takes the one with the newer transaction.

    Raises
    ------
    UserError
        The file is not an LMDB data file.
    """
    path = Path(data_mdb)
    with open(path, "rb") as fh:
        head = fh.read(_PAGE_HEADER + _META.size)
        if len(head) < _PAGE_HEADER + _META.size:
            raise UserError(f"{path}: not an LMDB data file (only {len(head)} bytes).")
        magic, _, _, _, free_db, _, last_pg, txnid = _META.unpack_from(head, _PAGE_HEADER)
        if magic != _MDB_MAGIC:
            raise UserError(f"{path}: not an LMDB data file (no LMDB magic number).")
        page_size = struct.unpack_from("<I", free_db)[0]
        if page_size < 512 or page_size & (page_size - 1):
            raise UserError(f"{path}: not an LMDB data file (page size {page_size}).")
        fh.seek(page_size)
        second = fh.read(_PAGE_HEADER + _META.size)
    if len(second) == _PAGE_HEADER + _META.size:
        magic2, _, _, _, _, _, last2, txn2 = _META.unpack_from(second, _PAGE_HEADER)
        if magic2 == _MDB_MAGIC and txn2 > txnid:
            last_pg = last2
    return (last_pg + 1) * page_size


def check_lmdb(path: Path | str) -> tuple[int, tuple[int, int, int]]:
    """Check a Datum LMDB before anything (Caffe or this process) maps it.

    Returns
    -------
    (number of records, (channels, height, width) of its Datums)

    Raises
    ------
    UserError
        No LMDB there, a truncated or garbage ``data.mdb``, no records, records that are
        not Datums, or Datums whose sizes disagree.
    """
    import lmdb

    path = Path(path)
    data_mdb = path / "data.mdb"
    if not data_mdb.is_file():
        raise UserError(f"{path}: not an LMDB folder (no data.mdb); make it with deadnet dataset.")
    need, size = lmdb_required_size(data_mdb), data_mdb.stat().st_size
    if size < need:
        raise UserError(
            f"{data_mdb}: the LMDB is truncated ({size} bytes, its last page ends at {need})."
        )
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=True)
    except lmdb.Error as err:
        raise UserError(f"{path}: not a readable LMDB ({err}).") from None
    try:
        with env.begin() as txn:
            n = txn.stat()["entries"]
            cursor = txn.cursor()
            ends = [cursor.item() if cursor.first() else None]
            ends.append(cursor.item() if cursor.last() else None)
    except lmdb.Error as err:
        raise UserError(f"{path}: not a readable LMDB ({err}).") from None
    finally:
        env.close()
    if not n or ends[0] is None:
        raise UserError(f"{path}: the LMDB holds no records.")
    shapes = set()
    for key, value in ends:
        try:
            shapes.add(parse_datum(value)[0].shape)
        except ValueError as err:
            raise UserError(
                f"{path}: record {key!r} is not a Caffe Datum of this toolkit ({err})."
            ) from None
    if len(shapes) > 1:
        raise UserError(f"{path}: records differ in size ({sorted(shapes)}).")
    return n, shapes.pop()
