"""Data Set A build speed and memory: augmented crops per second end to end (read TIFF, TPS
warp, blur, 8 rotations/mirrors, 54 crops, normalisation, Datum, LMDB) and peak RSS, against
a naive baseline measured in the same run (dense TPS evaluation at every pixel and
protobuf-Python Datums, one process). Crops per CPU-second are reported too: on a shared,
loaded machine they show what 2 free cores would do. Each side runs in its own child
process so that its peak RSS (its own plus its workers') is measured alone. Targets on
2 cores: >= 1000 crops/s, <= 2 GB. Data Set B's builder (20 annotated items per 10-frame
position, r x b x t x n = 8 x 1 x 10 x 1 per item) is measured the same way for its peak RSS
(target: the same 2 GB)."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data_prep.core.tiffout import Calibration, write_stack

NAME = "dataset"
#: The synthetic positions' calibration, as their manifest rows say (0.3225 um, 8 min).
_CAL = Calibration(0.3225, "um", 8.0 * 60)


def _experiment(root: Path, n_positions: int) -> Path:
    from data_prep.core.manifest import Position, write_manifest
    from data_prep.core.paper import FRAME_HEIGHT_PX, FRAME_WIDTH_PX

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    positions = []
    for i in range(n_positions):
        path = root / f"p{i}.tif"
        img = rng.integers(1000, 3000, size=(1, FRAME_HEIGHT_PX, FRAME_WIDTH_PX), dtype=np.uint16)
        write_stack(path, img, "TYX", _CAL)
        dose = 0.0 if i % 2 == 0 else 200.0
        positions.append(
            Position("B", f"W{i}", "p1", dose, 8.0, 0.3225, 1, path, dead_at_end=dose > 0)
        )
    write_manifest(root, positions)
    return root


def _experiment_b(root: Path, n_positions: int) -> Path:
    """Positions of 10 frames (0 or 80 s) and two annotators' agreeing votes on every
    256 px item (5 x 4 per frame), half of the positions sick."""
    from data_prep.core.manifest import Position, write_manifest
    from data_prep.core.paper import CROP_PX, FRAME_HEIGHT_PX, FRAME_WIDTH_PX, SEQUENCE_FRAMES
    from data_prep.votes_csv import Item, Vote, write_votes

    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    positions, votes = [], []
    shape = (SEQUENCE_FRAMES, FRAME_HEIGHT_PX, FRAME_WIDTH_PX)
    for i in range(n_positions):
        path = root / f"p{i}.tif"
        write_stack(path, rng.integers(1000, 3000, size=shape, dtype=np.uint16), "TYX", _CAL)
        dose = 0.0 if i % 2 == 0 else 80.0
        positions.append(Position("B", f"W{i}", "p1", dose, 8.0, 0.3225, SEQUENCE_FRAMES, path))
        for y in range(0, FRAME_HEIGHT_PX - CROP_PX + 1, CROP_PX):
            for x in range(0, FRAME_WIDTH_PX - CROP_PX + 1, CROP_PX):
                item = Item(positions[-1].key, 0, y, x).id
                for who in ("a", "b"):
                    label = "sick" if dose else "healthy"
                    votes.append(Vote(item, who, label, who == "b", "2018-01-01T09:00:00Z"))
    write_manifest(root, positions)
    write_votes(root / "votes.csv", votes)
    return root


def _fast_b(experiment: Path, out: Path) -> dict:
    from data_prep.build import BuildConfig, build

    cfg = BuildConfig(dataset="B", experiment=experiment, out=out, workers=2,
                      test_fraction=0.25, blurs_b=1, noise_copies=1)  # fmt: skip
    t0 = time.perf_counter()
    card = build(cfg)
    seconds = time.perf_counter() - t0
    return {"crops": card["counts"]["train"]["crops"] + card["counts"]["test"]["crops"],
            "seconds": seconds}  # fmt: skip


def _fast(experiment: Path, out: Path) -> dict:
    from data_prep.build import BuildConfig, build

    cfg = BuildConfig(dataset="A", experiment=experiment, out=out, workers=2, test_fraction=0.25)
    t0 = time.perf_counter()
    card = build(cfg)
    seconds = time.perf_counter() - t0
    return {"crops": card["counts"]["train"]["crops"] + card["counts"]["test"]["crops"],
            "seconds": seconds}  # fmt: skip


def _naive(experiment: Path, out: Path, n_images: int) -> dict:
    import lmdb

    from data_prep import augment, tps, writers
    from data_prep.core.grids import crop_grid
    from data_prep.core.manifest import read_manifest
    from data_prep.core.normalize import encode_z, variance_normalize
    from data_prep.core.paper import AUG_A
    from data_prep.core.stack import Stack

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(out / "naive.lmdb"), map_size=1 << 36)
    t0 = time.perf_counter()
    n = 0
    for p in read_manifest(experiment)[:n_images]:
        image = Stack(p.path).read(0).astype(np.float32)
        h, w = image.shape
        warped = tps.warp(image, *tps.dense_maps(tps.random_tps(h, w, rng), h, w))
        for sigma in augment.blur_sigmas(rng, AUG_A["b"]):
            for k in range(8):
                view = augment.blur(np.ascontiguousarray(augment.dihedral(warped, k)), sigma)
                for y, x in crop_grid(*view.shape):
                    z = variance_normalize(view[y : y + 256, x : x + 256])
                    raw = writers.datum_bytes_protobuf(encode_z(z), 0)
                    with env.begin(write=True) as txn:
                        txn.put(b"%09d" % n, raw)
                    n += 1
    env.close()
    return {"crops": n, "seconds": time.perf_counter() - t0}


def own_peak_rss_kb() -> int:
    """Peak resident memory of this process's own address space, in KiB.

    ``ru_maxrss`` is not that after exec: Linux folds in the high-water mark of the
    address space that exec replaced, which with vfork (Python's subprocess) is the
    parent's, so a child of a 3 GB benchmark process reported 3 GB whatever it used.
    ``VmHWM`` in /proc/self/status covers the current address space only; ``ru_maxrss``
    stays the fallback where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(mode: str, experiment: str, out: str, n_images: int) -> None:
    if mode == "fast":
        res = _fast(Path(experiment), Path(out))
    elif mode == "fast_b":
        res = _fast_b(Path(experiment), Path(out))
    else:
        res = _naive(Path(experiment), Path(out), n_images)
    own = own_peak_rss_kb()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res["peak_rss_mb"] = round((own + 2 * kids) / 1024, 1)  # main + at most 2 workers
    cpu = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    res["cpu_s"] = sum(r.ru_utime + r.ru_stime for r in cpu)
    print(json.dumps(res))


def _measure(mode: str, experiment: Path, out: Path, n_images: int) -> dict:
    cmd = [sys.executable, "-m", __name__, mode, str(experiment), str(out), str(n_images)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["crops_per_s"] = round(res["crops"] / res["seconds"], 1)
    res["crops_per_cpu_s"] = round(res["crops"] / res["cpu_s"], 1)
    return res


def run(out_dir: Path, quick: bool) -> dict:
    work = Path(out_dir) / "dataset_bench"
    shutil.rmtree(work, ignore_errors=True)
    n_positions = 4 if quick else 8
    experiment = _experiment(work / "experiment", n_positions)
    fast = _measure("fast", experiment, work / "fast", n_positions)
    naive = _measure("naive", experiment, work / "naive", 1)
    experiment_b = _experiment_b(work / "experiment_b", n_positions)
    fast_b = _measure("fast_b", experiment_b, work / "fast_b", n_positions)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "positions_1344x1024": n_positions,
        "fast_crops": fast["crops"],
        "fast_crops_per_s": fast["crops_per_s"],
        "fast_peak_rss_mb": fast["peak_rss_mb"],
        "fast_crops_per_cpu_s": fast["crops_per_cpu_s"],
        "naive_crops": naive["crops"],
        "naive_crops_per_cpu_s": naive["crops_per_cpu_s"],
        "naive_crops_per_s": naive["crops_per_s"],
        "naive_peak_rss_mb": naive["peak_rss_mb"],
        "speedup": round(fast["crops_per_s"] / naive["crops_per_s"], 1),
        "b_positions_10_frames": n_positions,
        "b_crops": fast_b["crops"],
        "b_crops_per_s": fast_b["crops_per_s"],
        "b_peak_rss_mb": fast_b["peak_rss_mb"],
        "note": "crops/s depend on the load of the shared machine; crops per CPU-second do not",
        "targets": ">= 1000 crops/s, <= 2048 MB peak RSS on 2 cores (B: <= 2048 MB)",
    }


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
