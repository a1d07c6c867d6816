"""Build Data Set A or B: labels -> split by position -> augmentation -> LMDB / HDF5.

Paper sections 2.2 (labels) and 2.3 (augmentation). The build is

- checked up front: the manifest (:func:`data_prep.core.manifest.read_manifest`), the votes,
  and every image that will be read (:func:`data_prep.core.stack.check_stack`), before any
  output exists;
- streaming: work is cut into small tasks (one warp of one frame for A, one frame of one
  annotated crop for B); worker processes send back batches of at most 54 serialised Datums
  through a bounded queue, so memory stays bounded whatever the dataset size;
- deterministic: each task draws from its own generator seeded by (seed, task number), and
  record keys come from that generator, so the output does not depend on scheduling;
- atomic: everything is written into a temporary sibling of OUT, renamed to OUT when
  complete; leftovers of an interrupted build are removed when the next one starts.

Train sets get the augmentation of section 2.3 (A: w x r x b x c, B: r x b x t x n); test
sets get crop + variance normalisation only (B test items give their 10 frames).
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import queue
import shutil
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep import augment, writers
from data_prep.core import paper
from data_prep.core.datum import datum_bytes
from data_prep.core.errors import UserError
from data_prep.core.grids import crop_grid
from data_prep.core.manifest import MANIFEST_NAME, Position, read_manifest
from data_prep.core.normalize import encode_z, variance_normalize
from data_prep.core.outdir import die_with_parent, output_dir
from data_prep.core.progress import progress_bar
from data_prep.core.runinfo import versions, write_settings
from data_prep.core.stack import Stack, check_stack
from data_prep.labels import early_frames, label_items_b, label_positions_a, sick_keys_a
from data_prep.split import split_positions
from data_prep.tps import random_tps, tps_maps, warp
from data_prep.votes_csv import VOTES_NAME, Item, read_votes

STEPS_TEST = "crop + variance normalisation only (no w, r, b, n)"


@dataclass(frozen=True)
class BuildConfig:
    """Every parameter of a build; saved in the dataset card. Defaults are the paper's."""

    dataset: str  # "A" or "B"
    experiment: Path
    out: Path
    seed: int = 0
    test_fraction: float = 0.25
    workers: int = 2
    formats: tuple[str, ...] = ("lmdb",)
    # Data Set A
    early_first: int = 0
    early_count: int = 1
    sick_positions: tuple[str, ...] = ()
    sick_min_dose: float | None = None
    warps: int = paper.AUG_A["w"]
    blurs_a: int = paper.AUG_A["b"]
    # Data Set B
    votes: Path | None = None
    max_dose: float = paper.DATASET_B_DOSE_RANGE_S[1]
    blurs_b: int = paper.AUG_B["b"]
    time_frames: int = paper.AUG_B["t"]
    noise_copies: int = paper.AUG_B["n"]
    balance: bool = False  # class-balanced train LMDB (not in the paper)
    # both
    rotations: int = paper.N_ROTATIONS_MIRRORS
    hdf5_rows: int = writers.HDF5_ROWS_PER_FILE
    extras: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.dataset not in ("A", "B"):
            raise UserError(f"dataset {self.dataset!r}: choose A or B.")
        if not 1 <= self.rotations <= paper.N_ROTATIONS_MIRRORS:
            raise UserError(f"--rotations: {self.rotations} is not in 1..8.")
        for name in ("warps", "blurs_a", "blurs_b", "noise_copies"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')}: must be >= 0.")
        if not 1 <= self.time_frames <= paper.SEQUENCE_FRAMES:
            raise UserError(f"--time-frames: {self.time_frames} is not in 1..10.")
        if self.workers < 0:
            raise UserError("--workers: must be >= 0.")
        if not 1 <= self.hdf5_rows <= writers.CAFFE_MAX_BLOB_COUNT // paper.CROP_PX**2:
            raise UserError(f"--hdf5-rows: {self.hdf5_rows} is outside Caffe's blob limit.")


@dataclass(frozen=True)
class Task:
    """One unit of work: one frame of one position (A), or one frame of one item (B)."""

    index: int
    part: str  # "train" / "test"
    key: str
    path: Path
    channel: int | None
    t: int
    label: int
    warp_index: int = 0  # A train: which of the w warps; B train: which balance copy
    region: tuple[int, int] | None = None  # B: (y0, x0) of the annotated crop
    item: str = ""  # B: the annotated item's id (data_prep.votes_csv.Item.id)


def _copies(n: int) -> int:
    """A step asked for 0 times means: one unmodified copy."""
    return max(n, 1)


# ---------------------------------------------------------------- worker side


_STACKS: dict[Path, Stack] = {}


def _stack(path: Path, channel: int | None) -> Stack:
    if path not in _STACKS:
        if len(_STACKS) > 8:
            _STACKS.clear()
        _STACKS[path] = Stack(path, channel)
    return _STACKS[path]


def _records(z: np.ndarray, label: int, rng: np.random.Generator) -> list[tuple[bytes, bytes]]:
    """(key, Datum bytes) for each (n, H, W) normalised crop; keys shuffle the LMDB."""
    keys = rng.integers(0, 2**63, size=len(z), dtype=np.int64)
    v = encode_z(z)
    return [(b"%016x" % k, datum_bytes(v[i], label)) for i, k in enumerate(keys.tolist())]


def _run_a(task: Task, cfg: BuildConfig, rng: np.random.Generator):
    image = _stack(task.path, task.channel).read(task.t).astype(np.float32)
    if task.part == "test":
        yield _records(augment.normalized_crops(image), task.label, rng)
        return
    if cfg.warps:
        h, w = image.shape
        image = warp(image, *tps_maps(random_tps(h, w, rng), h, w))
    sigmas = augment.blur_sigmas(rng, cfg.blurs_a) if cfg.blurs_a else [None]
    for sigma in sigmas:
        blurred = augment.blur(image, sigma) if sigma is not None else image
        for _, view in augment.dihedral_copies(blurred, cfg.rotations):
            yield _records(augment.normalized_crops(view), task.label, rng)


def _run_b(task: Task, cfg: BuildConfig, rng: np.random.Generator):
    image = _stack(task.path, task.channel).read(task.t).astype(np.float32)
    y0, x0 = task.region
    size = paper.CROP_PX
    if task.part == "test":
        crop = image[y0 : y0 + size, x0 : x0 + size]
        yield _records(variance_normalize(crop[None]), task.label, rng)
        return
    # Blur a margin around the crop so that its border sees real neighbours.
    m = int(np.ceil(4 * paper.BLUR_SIGMA_RANGE_PX[1]))
    ya, xa = max(y0 - m, 0), max(x0 - m, 0)
    patch = image[ya : y0 + size + m, xa : x0 + size + m]
    sigmas = augment.blur_sigmas(rng, cfg.blurs_b) if cfg.blurs_b else [None]
    out = []
    for sigma in sigmas:
        blurred = augment.blur(patch, sigma) if sigma is not None else patch
        crop = blurred[y0 - ya : y0 - ya + size, x0 - xa : x0 - xa + size]
        z = variance_normalize(crop[None])[0]
        for _, view in augment.dihedral_copies(z, cfg.rotations):
            for _ in range(_copies(cfg.noise_copies)):
                out.append(augment.add_noise(view, rng) if cfg.noise_copies else view)
    yield _records(np.stack(out), task.label, rng)


def run_task(task: Task, cfg: BuildConfig):
    """Yield batches of (key, Datum bytes) for one task; deterministic in (seed, index)."""
    rng = np.random.default_rng([cfg.seed, task.index])
    runner = _run_a if cfg.dataset == "A" else _run_b
    n = 0
    for batch in runner(task, cfg, rng):
        # random prefix (shuffles the LMDB) + task and record number (unique keys)
        yield [(b"%s_%08d_%05d" % (k, task.index, n + i), r) for i, (k, r) in enumerate(batch)]
        n += len(batch)


def _worker(tasks, results, cfg: BuildConfig, lmdbs: dict[str, tuple[Path, int]]) -> None:
    """Run tasks and write their records straight into the shared LMDBs; report progress."""
    die_with_parent()
    sinks: dict[str, writers.LmdbWriter] = {}
    try:
        while (task := tasks.get()) is not None:
            if task.part not in sinks:
                path, map_size = lmdbs[task.part]
                sinks[task.part] = writers.LmdbWriter(path, map_size, shared=True)
            for batch in run_task(task, cfg):
                sinks[task.part].write(batch)
                results.put(("crops", (task.part, [k for k, _ in batch])))
            results.put(("task", 1))
    except UserError as err:
        results.put(("error", str(err)))
    except Exception as err:  # report, never hang the parent
        results.put(("error", f"{type(err).__name__}: {err}"))
    finally:
        for sink in sinks.values():
            sink.close()


def _execute(
    tasks: list[Task],
    cfg: BuildConfig,
    lmdbs: dict[str, tuple[Path, int]],
    total: int,
    progress: bool | None = None,
) -> dict[str, list[bytes]]:
    """Run ``tasks`` and write every record into ``lmdbs`` (part -> (path, map size)).

    With ``cfg.workers > 1`` the workers write to the LMDBs themselves (no records travel
    between processes, only their keys); otherwise everything runs in this process.
    Returns the keys written, per part (for the indexes: reading them back from the LMDB
    mapped its pages and took the builder's peak RSS from 1.3 GB to 4.8 GB).
    """
    keys: dict[str, list[bytes]] = {part: [] for part in lmdbs}
    desc = f"Data Set {cfg.dataset}"
    bar = progress_bar(total=total, unit="crop", desc=desc, smoothing=0.05, progress=progress)
    try:
        if cfg.workers <= 1:
            sinks = {part: writers.LmdbWriter(*lmdbs[part]) for part in lmdbs}
            try:
                for task in tasks:
                    for batch in run_task(task, cfg):
                        sinks[task.part].write(batch)
                        keys[task.part] += [k for k, _ in batch]
                        bar.update(len(batch))
            finally:
                for sink in sinks.values():
                    sink.close()
            return keys
        for part in lmdbs:  # create both databases before the workers open them
            writers.LmdbWriter(*lmdbs[part], shared=True).close()
        ctx = mp.get_context("fork")
        task_q = ctx.Queue()
        result_q = ctx.Queue()
        for task in tasks:
            task_q.put(task)
        for _ in range(cfg.workers):
            task_q.put(None)
        procs = [
            ctx.Process(target=_worker, args=(task_q, result_q, cfg, lmdbs))
            for _ in range(cfg.workers)
        ]
        for p in procs:
            p.start()
        try:
            done = 0
            while done < len(tasks):
                try:
                    kind, value = result_q.get(timeout=10)
                except queue.Empty:
                    dead = [p for p in procs if p.exitcode not in (None, 0)]
                    if dead:
                        raise UserError(
                            f"{cfg.out}: a worker process died (exit code {dead[0].exitcode}; "
                            "out of memory?); nothing was written."
                        ) from None
                    continue
                if kind == "error":
                    raise UserError(value)
                if kind == "task":
                    done += 1
                else:
                    part, written = value
                    keys[part] += written
                    bar.update(len(written))
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()
    finally:
        bar.close()
    return keys


# ---------------------------------------------------------------- planning


def _plan_a(cfg: BuildConfig, positions: list[Position]):
    window = early_frames(cfg.early_first, cfg.early_count, positions, cfg.experiment)
    sick = sick_keys_a(positions, cfg.experiment, list(cfg.sick_positions), cfg.sick_min_dose)
    labels = label_positions_a(positions, sick, cfg.experiment)
    by_key = {p.key: p for p in positions}
    strata = {k: (label, by_key[k].dose_s) for k, label in labels.items()}
    parts = split_positions(
        strata, cfg.test_fraction, cfg.seed, str(cfg.experiment / MANIFEST_NAME)
    )
    tasks: list[Task] = []
    frames: dict[str, list[int]] = {}
    for key in sorted(labels):
        p = by_key[key]
        frames[key] = list(window)
        for t in window:
            n_warps = _copies(cfg.warps) if parts[key] == "train" else 1
            for wi in range(n_warps):
                tasks.append(
                    Task(len(tasks), parts[key], key, p.path, p.channel, t, labels[key], wi)
                )
    per_frame_train = _copies(cfg.warps) * _copies(cfg.blurs_a) * cfg.rotations
    return tasks, labels, parts, frames, per_frame_train, {}


def _plan_b(cfg: BuildConfig, positions: list[Position]):
    votes_path = cfg.votes or cfg.experiment / VOTES_NAME
    summary = label_items_b(read_votes(votes_path))
    by_key = {p.key: p for p in positions}
    items: dict[Item, int] = {}
    skipped_dose = 0
    for item, label in summary.labels.items():
        p = by_key.get(item.position_key)
        if p is None:
            raise UserError(
                f"{votes_path}: item {item.id} names position {item.position_key}, which is "
                f"not in {cfg.experiment / MANIFEST_NAME}."
            )
        if p.dose_s > cfg.max_dose:
            skipped_dose += 1
            continue
        if item.t0 + paper.SEQUENCE_FRAMES > p.n_frames:
            raise UserError(
                f"{votes_path}: item {item.id} needs frames {item.t0}-"
                f"{item.t0 + paper.SEQUENCE_FRAMES - 1} but {p.key} has {p.n_frames}."
            )
        items[item] = label
    if not items:
        why = (
            f"all {skipped_dose} concordant items are from positions above --max-dose "
            f"{cfg.max_dose:g} s"
            if skipped_dose
            else "no item keeps a concordant label"
        )
        raise UserError(f"{votes_path}: {why}, so Data Set B would be empty.")
    for label, name in paper.LABELS.items():
        if label not in items.values():
            raise UserError(f"{votes_path}: no {name} item is left, so that class is empty.")
    # A position's stratum: its majority label and its dose.
    per_pos: dict[str, Counter] = defaultdict(Counter)
    for item, label in items.items():
        per_pos[item.position_key][label] += 1
    strata = {
        k: (max(c, key=lambda lab: (c[lab], lab)), by_key[k].dose_s) for k, c in per_pos.items()
    }
    parts = split_positions(strata, cfg.test_fraction, cfg.seed, str(votes_path))
    ordered = sorted(items, key=lambda i: i.id)
    copies = _balance_copies(
        [items[i] for i in ordered if parts[i.position_key] == "train"], cfg.balance
    )
    tasks: list[Task] = []
    frames: dict[str, list[int]] = defaultdict(list)
    for item in ordered:
        p = by_key[item.position_key]
        part = parts[item.position_key]
        n_t = cfg.time_frames if part == "train" else paper.SEQUENCE_FRAMES
        for copy in range(copies[items[item]] if part == "train" else 1):
            for t in range(item.t0, item.t0 + n_t):
                frames[p.key].append(t)
                tasks.append(
                    Task(
                        len(tasks),
                        part,
                        p.key,
                        p.path,
                        p.channel,
                        t,
                        items[item],
                        copy,
                        (item.y0, item.x0),
                        item.id,
                    )
                )
    per_frame_train = _copies(cfg.blurs_b) * cfg.rotations * _copies(cfg.noise_copies)
    extra = {
        "votes": str(votes_path),
        "items_voted": summary.n_items,
        "items_unsure_only": summary.n_unsure_only,
        "items_discordant": summary.n_discordant,
        "items_above_max_dose": skipped_dose,
        "items_used": len(items),
        "items_per_class": {
            paper.LABELS[lab]: sum(v == lab for v in items.values()) for lab in paper.LABELS
        },
        "train_copies_per_item": {paper.LABELS[lab]: n for lab, n in copies.items()},
        "concordance": summary.concordance.as_dict(),
        "concordance_summary": summary.concordance.summary(),
    }
    labels = {k: s[0] for k, s in strata.items()}
    return tasks, labels, parts, dict(frames), per_frame_train, extra


def _balance_copies(train_labels: list[int], balance: bool) -> dict[int, int]:
    """Augmented copies of each training item per class (label -> copies).

    Without ``balance`` one copy each. With it, the rarer class gets
    ``round(n_common / n_rare)`` copies of each of its items (each copy a fresh draw of the
    random augmentation: blur sigma, noise), so the training LMDB holds about as many crops
    of each class; the common class keeps one.
    """
    counts = Counter(train_labels)
    copies = {lab: 1 for lab in paper.LABELS}
    if balance and all(counts[lab] for lab in paper.LABELS):
        rare = min(paper.LABELS, key=lambda lab: (counts[lab], lab))
        common = max(paper.LABELS, key=lambda lab: (counts[lab], -lab))
        copies[rare] = max(1, round(counts[common] / counts[rare]))
    return copies


def _crops_per_task(task: Task, cfg: BuildConfig, per_frame_train: int, grid: int) -> int:
    """Crops one task writes; ``grid`` is the crop count of one full frame of its position."""
    if cfg.dataset == "A":
        if task.part == "test":
            return grid
        return per_frame_train // _copies(cfg.warps) * grid
    return 1 if task.part == "test" else per_frame_train


def _check_images(
    cfg: BuildConfig, positions: list[Position], frames: dict, tasks: list[Task]
) -> dict[str, int]:
    """Check every image that will be read; return crops per full frame for each position."""
    by_key = {p.key: p for p in positions}
    for p in positions:  # every file of the manifest is readable, even those not used
        if p.key not in frames:
            check_stack(p, [])
    grid = {}
    for key in sorted(frames):
        stack = check_stack(by_key[key], sorted(set(frames[key])))
        grid[key] = len(crop_grid(stack.height, stack.width))
        for task in tasks:
            if task.key == key and task.region is not None:
                y0, x0 = task.region
                if y0 + paper.CROP_PX > stack.height or x0 + paper.CROP_PX > stack.width:
                    raise UserError(
                        f"{by_key[key].path}: annotated crop at y {y0}, x {x0} runs past the "
                        f"{stack.width} x {stack.height} px image."
                    )
        if cfg.dataset == "A" and (stack.height, stack.width) != (
            paper.FRAME_HEIGHT_PX,
            paper.FRAME_WIDTH_PX,
        ):
            cfg.extras.setdefault("non_paper_frame_sizes", {})[key] = [stack.height, stack.width]
    return grid


def _map_size(n_crops: int) -> int:
    """LMDB map for ``n_crops`` 256 px float crops: each takes 65 overflow pages of 4 kB, plus
    the tree; sized with a margin (the file is sparse, unused map costs no disk)."""
    per_crop = 4096 * (-(-(4 * paper.CROP_PX**2 + 64) // 4096) + 1)
    return int(1.25 * n_crops * per_crop) + (64 << 20)


def build(cfg: BuildConfig, progress: bool | None = None) -> dict:
    """Build Data Set ``cfg.dataset`` into ``cfg.out``; return the dataset card.

    ``progress``: a bar of crops written (None: only on a terminal, :mod:`data_prep.core.progress`).

    Writes ``train.lmdb``, ``test.lmdb`` (and/or ``train_*.h5``, ``train_h5.txt``, ...),
    ``dataset.json`` (the card), ``split.csv`` and ``settings.json``.
    """
    cfg.check()
    inputs = [cfg.experiment, *([cfg.votes] if cfg.votes else [])]
    with output_dir(cfg.out, "dataset", inputs) as tmp:
        positions = read_manifest(cfg.experiment)
        plan = _plan_a if cfg.dataset == "A" else _plan_b
        tasks, labels, parts, frames, per_frame_train, extra = plan(cfg, positions)
        grid = _check_images(cfg, positions, frames, tasks)
        crops_task = [_crops_per_task(t, cfg, per_frame_train, grid[t.key]) for t in tasks]
        total = sum(crops_task)
        lmdbs = {
            part: (
                tmp / f"{part}.lmdb",
                _map_size(sum(n for t, n in zip(tasks, crops_task, strict=True) if t.part == part)),
            )
            for part in ("train", "test")
        }
        keys = _execute(tasks, cfg, lmdbs, total, progress)
        for part in ("train", "test"):
            _write_index(keys[part], tmp / f"{part}_index.csv", tasks, positions)
        card = _card(cfg, positions, tasks, crops_task, labels, parts, frames, extra)
        if "hdf5" in cfg.formats:
            for part in ("train", "test"):
                writers.lmdb_to_hdf5(tmp / f"{part}.lmdb", tmp, part, cfg.hdf5_rows, cfg.out)
        if "lmdb" not in cfg.formats:
            for part in ("train", "test"):
                shutil.rmtree(tmp / f"{part}.lmdb")
        _write_split(tmp / "split.csv", positions, labels, parts, card)
        (tmp / "dataset.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        write_settings(tmp, _settings(cfg))
    return card


def _write_index(keys: list[bytes], path: Path, tasks: list[Task], positions) -> None:
    """``test_index.csv`` / ``train_index.csv``: per record its LMDB key, position, dose,
    frame, label and (Data Set B) annotated item (the key's middle field is the task index):
    for evaluation per dose, per position and against the simulator's truth per item, and to
    trace any training record back to its stage position. Rows in key order, the LMDB's."""
    dose = {p.key: p.dose_s for p in positions}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "position", "dose_s", "frame", "label", "item"])
        for key in sorted(keys):
            task = tasks[int(key.split(b"_")[1])]
            w.writerow(
                [key.decode(), task.key, f"{dose[task.key]:g}", task.t, task.label, task.item]
            )


def _settings(cfg: BuildConfig) -> dict:
    doc = asdict(cfg)
    doc.pop("extras")
    return doc


def _card(cfg, positions, tasks, crops_task, labels, parts, frames, extra) -> dict:
    by_key = {p.key: p for p in positions}
    crops_pos: Counter = Counter()
    per_class: dict[str, Counter] = {"train": Counter(), "test": Counter()}
    per_dose: dict[str, Counter] = {"train": Counter(), "test": Counter()}
    for task, n in zip(tasks, crops_task, strict=True):
        crops_pos[task.key] += n
        per_class[task.part][paper.LABELS[task.label]] += n
        per_dose[task.part][f"{by_key[task.key].dose_s:g}"] += n
    if cfg.dataset == "A":
        steps_train = (
            f"w x r x b x c = {_copies(cfg.warps)} x {cfg.rotations} x {_copies(cfg.blurs_a)} x "
            f"c per full image, c = 54 for 1344 x 1024 (paper: 3 x 8 x 2 x 54 = 2592)"
        )
    else:
        steps_train = (
            f"r x b x t x n = {cfg.rotations} x {_copies(cfg.blurs_b)} x {cfg.time_frames} x "
            f"{_copies(cfg.noise_copies)} per annotated crop (paper: 8 x 3 x 10 x 3 = 720)"
        )
    return {
        "dataset": cfg.dataset,
        "labels": {str(k): v for k, v in paper.LABELS.items()},
        "counts": {
            part: {
                "crops": sum(per_class[part].values()),
                "per_class": dict(per_class[part]),
                "per_dose_s": dict(per_dose[part]),
                "positions": sum(v == part for v in parts.values()),
            }
            for part in ("train", "test")
        },
        "positions": {
            k: {
                "part": parts[k],
                "label": paper.LABELS[labels[k]],
                "dose_s": by_key[k].dose_s,
                "frames": sorted(set(frames.get(k, []))),
                "crops": crops_pos[k],
            }
            for k in sorted(labels)
        },
        "augmentation": {
            "train": steps_train,
            "test": STEPS_TEST,
            "tps": {
                "grid_px": paper.TPS_GRID_PX,
                "displacement_sigma_px": paper.TPS_DISPLACEMENT_SIGMA_PX,
            },
            "blur_sigma_px": list(paper.BLUR_SIGMA_RANGE_PX),
            "noise_sigma": paper.NOISE_SIGMA if cfg.dataset == "B" else None,
            "crop_px": paper.CROP_PX,
            "crop_stride_px": paper.CROP_STRIDE_PX,
            "crop_rule": "origins range(0, L - 256, 128) per axis: 9 x 6 = 54 per 1344 x 1024",
        },
        "encoding": "Datum float_data v = 32767 + 4000 z (transform_param mean_value 32767, "
        "scale 0.00025 gives z); HDF5 files hold z itself (HDF5Data ignores transform_param)",
        "formats": list(cfg.formats),
        "seed": cfg.seed,
        "parameters": _settings(cfg),
        "notes": dict(cfg.extras),
        **extra,
        "versions": versions(),
    }


def _write_split(path: Path, positions, labels, parts, card) -> None:
    by_key = {p.key: p for p in positions}
    lines = ["key,plate,well,position,dose_s,label,part,crops"]
    for k in sorted(labels):
        p = by_key[k]
        lines.append(
            f"{k},{p.plate},{p.well},{p.position},{p.dose_s:g},{labels[k]},{parts[k]},"
            f"{card['positions'][k]['crops']}"
        )
    path.write_text("\n".join(lines) + "\n")
