"""Writers for Caffe's Data layer (LMDB of Datum) and HDF5Data layer (HDF5 + list file).

Datum bytes are built directly: fields channels (1), height (2), width (3), label (5) as
varints and float_data (6) as one packed run of little-endian float32. Caffe's proto2
parser accepts packed repeated scalars, and building the bytes this way avoids
protobuf-Python's per-float work (the benchmark's baseline,
:func:`datum_bytes_protobuf`). Values are v = 32767 + 4000 z, which the published
transform_param (mean_value 32767, scale 0.00025) turns back into z
(:func:`data_prep.normalize.encode_z`).

Records are shuffled without holding them in memory: each key starts with a random 64-bit
number drawn from the build's seeded generator, and LMDB stores keys in sorted order, so
Caffe reads them in random order.

HDF5Data ignores ``transform_param``: its files hold z itself (float32, "data" (N, 1, H, W)
and "label" (N,)), so nets reading them must not rescale, and random 220 px cropping is not
available (crop in a separate layer, or use the LMDB). Caffe loads a whole HDF5 file into one
blob, whose element count must stay below INT_MAX (2^31 - 1); files here hold at most
``rows_per_file`` crops (default 2048, 512 MiB for 256 px crops).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import lmdb
import numpy as np

from data_prep.normalize import decode_v
from deadnet_caffe.errors import UserError

#: Caffe's blob size limit (Blob::Reshape checks count <= INT_MAX).
CAFFE_MAX_BLOB_COUNT = 2**31 - 1
HDF5_ROWS_PER_FILE = 2048
_INITIAL_MAP_SIZE = 1 << 30


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


def datum_bytes_protobuf(v: np.ndarray, label: int) -> bytes:
    """The same Datum through protobuf-Python (slow; the benchmark's baseline)."""
    from caffe.proto import caffe_pb2

    v = np.asarray(v, dtype=np.float32)
    c, h, w = (1, *v.shape) if v.ndim == 2 else v.shape
    d = caffe_pb2.Datum(channels=c, height=h, width=w, label=label)
    d.float_data.extend(v.ravel().tolist())
    return d.SerializeToString()


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def parse_datum(raw: bytes) -> tuple[np.ndarray, int]:
    """Decode a Datum written by :func:`datum_bytes` (varints and packed floats only).

    Returns
    -------
    v : (C, H, W) float32
    label : int
    """
    fields = {}
    pos = 0
    payload = b""
    while pos < len(raw):
        tag, pos = _read_varint(raw, pos)
        if tag == 0x32:
            n, pos = _read_varint(raw, pos)
            payload = raw[pos : pos + n]
            pos += n
        elif tag & 7 == 0:
            fields[tag >> 3], pos = _read_varint(raw, pos)
        else:
            raise ValueError(f"Datum field tag {tag} is not written by datum_bytes")
    shape = (fields.get(1, 1), fields.get(2, 0), fields.get(3, 0))
    return np.frombuffer(payload, dtype="<f4").reshape(shape), int(fields.get(5, 0))


class LmdbWriter:
    """Append Datum records to an LMDB, growing its map when full.

    Python's lmdb does not grow the map itself; on ``MapFullError`` the transaction is
    aborted, the map doubled and the batch written again.
    """

    def __init__(self, path: Path, rng: np.random.Generator) -> None:
        self.path = Path(path)
        self.rng = rng
        self.count = 0
        self.env = lmdb.open(
            str(self.path), map_size=_INITIAL_MAP_SIZE, subdir=True, sync=False, lock=False
        )

    def write(self, records: list[bytes]) -> None:
        """Write a batch of serialised Datums in one transaction, under shuffled keys."""
        keys = self.rng.integers(0, 2**63, size=len(records), dtype=np.int64)
        items = [
            (b"%016x_%09d" % (int(k), self.count + i), r)
            for i, (k, r) in enumerate(zip(keys, records, strict=True))
        ]
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, r in items:
                        txn.put(k, r)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self.count += len(records)

    def write_keyed(self, items: list[tuple[bytes, bytes]]) -> None:
        """Write (key, Datum bytes) pairs in one transaction (keys chosen by the caller)."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, r in items:
                        txn.put(k, r)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self.count += len(items)

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()


def lmdb_to_hdf5(
    lmdb_path: Path, out_dir: Path, stem: str, rows_per_file: int, final_dir: Path
) -> Path:
    """Copy an LMDB (already shuffled) into HDF5 files of at most ``rows_per_file`` crops and
    write the list file that HDF5Data's ``source`` expects. Data hold z (see module doc).

    ``out_dir`` is where files are written now; ``final_dir`` is where they will live after
    the build's atomic rename, whose absolute paths go in the list file (Caffe opens list
    entries relative to its working directory, so relative names would break).

    Returns
    -------
    Path
        The list file ``out_dir/<stem>_h5.txt``, one absolute .h5 path per line.
    """
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
    files: list[Path] = []
    buf: list[np.ndarray] = []
    labels: list[int] = []

    def flush() -> None:
        if not buf:
            return
        data = np.stack(buf)
        if data.size > CAFFE_MAX_BLOB_COUNT:
            raise UserError(f"--hdf5-rows: {len(buf)} crops per file exceed Caffe's blob limit.")
        path = out_dir / f"{stem}_{len(files):04d}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=data)
            f.create_dataset("label", data=np.asarray(labels, dtype=np.float32))
        files.append(path)
        buf.clear()
        labels.clear()

    with env.begin() as txn:
        for _, raw in txn.cursor():
            v, label = parse_datum(raw)
            buf.append(decode_v(v))
            labels.append(label)
            if len(buf) == rows_per_file:
                flush()
    flush()
    env.close()
    listing = out_dir / f"{stem}_h5.txt"
    final = Path(final_dir).resolve()
    listing.write_text("".join(f"{final / p.name}\n" for p in files))
    return listing
