"""Writers for Caffe's Data layer (LMDB of Datum) and HDF5Data layer (HDF5 + list file).

Datum bytes come from :mod:`data_prep.core.datum` (the one codec);
:func:`datum_bytes_protobuf` builds the same bytes through protobuf-Python, the benchmark's
baseline.

Records are shuffled without holding them in memory: the caller gives each a key that starts
with a random 64-bit number from a seeded generator (:mod:`data_prep.build`), and LMDB
stores keys in sorted order, so Caffe reads them in random order.

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

from data_prep.core.datum import parse_datum
from data_prep.core.normalize import decode_v

#: Caffe's blob size limit (Blob::Reshape checks count <= INT_MAX).
CAFFE_MAX_BLOB_COUNT = 2**31 - 1
HDF5_ROWS_PER_FILE = 2048
_INITIAL_MAP_SIZE = 1 << 30
#: Unmap (close and reopen) the LMDB after this many bytes written (bounds RSS).
REOPEN_BYTES = 128 << 20


def datum_bytes_protobuf(v: np.ndarray, label: int) -> bytes:
    """The same Datum through protobuf-Python (slow; the benchmark's baseline)."""
    from caffe.proto import caffe_pb2

    v = np.asarray(v, dtype=np.float32)
    c, h, w = (1, *v.shape) if v.ndim == 2 else v.shape
    d = caffe_pb2.Datum(channels=c, height=h, width=w, label=label)
    d.float_data.extend(v.ravel().tolist())
    return d.SerializeToString()


class LmdbWriter:
    """Append Datum records to an LMDB, growing its map when full.

    Python's lmdb does not grow the map itself; on ``MapFullError`` the transaction is
    aborted, the map doubled and the batch written again. With ``shared=True`` several
    processes write to the same LMDB (LMDB's lock file serialises their transactions); the
    map must then be sized for the whole data set up front (a sparse file, so this costs
    nothing), since one process cannot grow the map under the others.
    """

    def __init__(self, path: Path, map_size: int = _INITIAL_MAP_SIZE, shared: bool = False) -> None:
        self.path = Path(path)
        self.count = 0
        self.shared = shared
        self._map_size = map_size
        self._since_open = 0
        self.env = self._open()

    def _open(self) -> lmdb.Environment:
        # writemap: pages are written in place in the map, ~4x less system time than
        # copying them through write() (measured), which matters at 262 kB per crop.
        return lmdb.open(
            str(self.path),
            map_size=self._map_size,
            subdir=True,
            sync=False,
            lock=self.shared,
            writemap=True,
            map_async=True,
        )

    def _reopen_if_large(self, n_bytes: int) -> None:
        """Pages written through the map count in this process's RSS until it is unmapped;
        reopening every ``REOPEN_BYTES`` keeps memory bounded whatever the data set size."""
        self._since_open += n_bytes
        if self._since_open >= REOPEN_BYTES:
            self.env.sync(True)
            self.env.close()
            self.env = self._open()
            self._since_open = 0

    def write(self, items: list[tuple[bytes, bytes]]) -> None:
        """Write (key, Datum bytes) pairs in one transaction (keys chosen by the caller)."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, r in items:
                        txn.put(k, r)
                break
            except lmdb.MapFullError:
                if self.shared:
                    raise RuntimeError(f"{self.path}: the LMDB map was sized too small") from None
                self._map_size = self.env.info()["map_size"] * 2
                self.env.set_mapsize(self._map_size)
        self.count += len(items)
        self._reopen_if_large(sum(len(r) for _, r in items))

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
    left = env.stat()["entries"]
    files: list[Path] = []
    block: list[np.ndarray] = []
    labels: list[int] = []
    current: h5py.File | None = None
    row = 0

    def flush() -> None:
        """Write the block into as many files as it spans (memory: one block)."""
        nonlocal current, row, left
        while block:
            if current is None:
                rows = min(rows_per_file, left)
                files.append(out_dir / f"{stem}_{len(files):04d}.h5")
                current = h5py.File(files[-1], "w")
                current.create_dataset("data", shape=(rows, *block[0].shape), dtype=np.float32)
                current.create_dataset("label", shape=(rows,), dtype=np.float32)
                row = 0
            take = min(len(block), current["data"].shape[0] - row)
            current["data"][row : row + take] = np.stack(block[:take])
            current["label"][row : row + take] = labels[:take]
            del block[:take], labels[:take]
            row += take
            left -= take
            if row == current["data"].shape[0]:
                current.close()
                current = None

    with env.begin() as txn:
        for _, raw in txn.cursor():
            v, label = parse_datum(raw)
            block.append(decode_v(v))
            labels.append(label)
            if len(block) == 256:
                flush()
    flush()
    env.close()
    listing = out_dir / f"{stem}_h5.txt"
    final = Path(final_dir).resolve()
    listing.write_text("".join(f"{final / p.name}\n" for p in files))
    return listing
