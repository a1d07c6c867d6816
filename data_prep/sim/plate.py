"""Simulate a whole experiment and write it in the raw-experiment format.

Output (``data_prep.core.manifest`` documents the manifest)::

    OUT/manifest.csv                      one row per position, dead_at_end from the truth
    OUT/images/<well>_<position>.tif      (T, H, W) uint16 ImageJ hyperstack (axes TYX) with
                                          pixel size (um) and frame interval (s)
    OUT/ground_truth/<well>_<position>/   labels.tif, sick.tif, cells.csv (data_prep.sim.truth);
                                          the TIFFs calibrated like the images (zlib)
    OUT/votes.csv                         simulated expert votes (data_prep.sim.annotators)
    OUT/settings.json                     the settings, seed and versions

Each position is simulated independently from its own random streams, derived from the seed
and the (well, position) indices; the camera noise of a frame has its own stream per 8-min
step. So the bytes depend only on the settings and seed (not on ``jobs``), and a frame looks
the same whatever ``render_every`` is. Frames are rendered and written one at a time
(:class:`data_prep.core.tiffout.StackWriter`), so memory does not grow with the length of the
time-lapse; the biology runs every 8 min but only every ``render_every``-th frame is rendered.
"""

from __future__ import annotations

import csv
import dataclasses
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data_prep.core import paper
from data_prep.core.manifest import Position, write_manifest
from data_prep.core.outdir import die_with_parent, output_dir
from data_prep.core.progress import progress_bar
from data_prep.core.runinfo import write_settings
from data_prep.core.tiffout import Calibration, StackWriter
from data_prep.sim.annotators import simulate_votes
from data_prep.sim.biology import Population
from data_prep.sim.optics import PhaseContrast
from data_prep.sim.params import Settings
from data_prep.sim.render import CellRenderer, debris_map
from data_prep.sim.truth import (
    CELL_COLUMNS,
    cell_rows,
    crop_sick_fraction,
    dead_at_end,
    sick_mask,
)
from data_prep.votes_csv import VOTES_NAME, Item, write_votes

_ROWS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def well_name(index: int) -> str:
    """Well names of a 24-well plate, row by row: A1..A6, B1..B6, ... (continues past D)."""
    return f"{_ROWS[index // 6]}{index % 6 + 1}"


def well_index(name: str) -> int:
    """The inverse of :func:`well_name`: "A1" -> 0, "B2" -> 7; -1 for any other name."""
    row, col = name[:1].upper(), name[1:]
    if not row or row not in _ROWS or not col.isdigit() or not 1 <= int(col) <= 6:
        return -1
    return _ROWS.index(row) * 6 + int(col) - 1


def _streams(seed: int, well: int, pos: int) -> list[np.random.Generator]:
    ss = np.random.SeedSequence(seed, spawn_key=(well, pos))
    return [np.random.default_rng(s) for s in ss.spawn(4)]


def frame_noise_rng(seed: int, well: int, pos: int, step: int) -> np.random.Generator:
    """The camera-noise stream of one 8-min step of one position."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(well, pos, 10**6 + step)))


class PositionSim:
    """The biology, renderer and microscope of one stage position.

    Iterating yields ``(step, image, labels, snapshot)`` for every rendered frame:
    image (H, W) uint16, labels (H, W) uint16.
    """

    def __init__(self, settings: Settings, well: int, pos: int, dose_s: float, workers: int = 1):
        lay, o = settings.layout, settings.optics
        self.settings, self.well, self.pos = settings, well, pos
        bio_rng, tex_rng, optics_rng, debris_rng = _streams(settings.seed, well, pos)
        shape = (lay.height, lay.width)
        self.population = Population(settings.biology, lay, dose_s, bio_rng)
        self.renderer = CellRenderer(o, settings.biology, shape, lay.pixel_size_um, tex_rng)
        self.optics = PhaseContrast(o, shape, lay.pixel_size_um, optics_rng, lay.n_steps, workers)
        self.debris = debris_map(debris_rng, shape, o.debris_per_frame)

    def render(self, step: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Render the population as it is now (at ``step``): image, labels, snapshot."""
        snap = self.population.snapshot()
        opd, labels = self.renderer.render(snap, step)
        intensity = self.optics.intensity(opd + self.debris, step)
        rng = frame_noise_rng(self.settings.seed, self.well, self.pos, step)
        return self.optics.camera(intensity, rng), labels, snap

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict]]:
        lay = self.settings.layout
        for step in range(lay.n_steps):
            if step > 0:
                self.population.step()
            if step % lay.render_every == 0:
                yield (step, *self.render(step))


def _calibration(lay) -> Calibration:
    return Calibration(lay.pixel_size_um, "um", lay.frame_interval_min * lay.render_every * 60.0)


def simulate_position(args: tuple) -> tuple[Position, list[np.ndarray]]:
    """Simulate one position and write its TIFF and ground truth under ``root``.

    ``args`` = (settings, well index, position index, dose, root, workers) (one tuple, for
    ``multiprocessing``). Returns the manifest row and, per frame, the sick fraction of each
    256 px tile (for the simulated votes).
    """
    settings, well, pos, dose, root, workers = args
    lay = settings.layout
    name = f"{well_name(well)}_p{pos + 1}"
    image_path = root / "images" / f"{name}.tif"
    gt = root / "ground_truth" / name
    gt.mkdir(parents=True, exist_ok=True)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    sim = PositionSim(settings, well, pos, dose, workers)
    tiles: list[np.ndarray] = []
    last: dict = {}
    shape = (lay.n_frames, lay.height, lay.width)
    cal = _calibration(lay)
    zlib = {"compression": "zlib", "compressionargs": {"level": 1}}
    writers = [
        StackWriter(image_path, shape, np.uint16, "TYX", cal),
        StackWriter(gt / "labels.tif", shape, np.uint16, "TYX", cal, **zlib),
        StackWriter(gt / "sick.tif", shape, np.uint8, "TYX", cal, **zlib),
    ]
    try:
        with (gt / "cells.csv").open("w", newline="") as fh:
            table = csv.writer(fh)
            table.writerow(CELL_COLUMNS)
            for frame, (step, image, labels, snap) in enumerate(sim):
                sick = sick_mask(labels, snap["id"], snap["state"])
                for wr, arr in zip(writers, (image, labels, sick), strict=True):
                    wr.put(arr)
                t_h = step * lay.frame_interval_min / 60.0
                table.writerows(cell_rows(labels, snap, frame, step, t_h))
                tiles.append(crop_sick_fraction(sick, paper.CROP_PX))
                last.update(labels=labels, snap=snap)
    except BaseException:
        for wr in writers:
            wr.close(check=False)  # the first error is the one to report
        raise
    for wr in writers:
        wr.close()
    position = Position(
        plate=lay.plate,
        well=well_name(well),
        position=f"p{pos + 1}",
        dose_s=float(dose),
        frame_interval_min=lay.frame_interval_min * lay.render_every,
        pixel_size_um=lay.pixel_size_um,
        n_frames=lay.n_frames,
        path=image_path,
        dead_at_end=dead_at_end(last["labels"], last["snap"]),
        ground_truth=gt,
    )
    return position, tiles


def vote_items(positions: list[Position], tiles: list[list[np.ndarray]]):
    """Data Set B items (paper 2.2): 10-frame 256 px non-overlapping crops of 0-80 s positions.

    Returns the items and their true sick fraction (mean over the 10 frames).
    """
    items, truth = [], []
    lo, hi = paper.DATASET_B_DOSE_RANGE_S
    n = paper.SEQUENCE_FRAMES
    for p, per_frame in zip(positions, tiles, strict=True):
        if not lo <= p.dose_s <= hi:
            continue
        stack = np.stack(per_frame)  # (T, gh, gw)
        for t0 in range(0, stack.shape[0] - n + 1, n):
            mean = np.nanmean(np.nan_to_num(stack[t0 : t0 + n], nan=0.0), axis=0)
            for gy in range(stack.shape[1]):
                for gx in range(stack.shape[2]):
                    items.append(Item(p.key, t0, gy * paper.CROP_PX, gx * paper.CROP_PX))
                    truth.append(float(mean[gy, gx]))
    return items, np.asarray(truth)


def simulate_experiment(
    settings: Settings,
    out: Path | str,
    jobs: int = 1,
    progress: bool | None = None,
    inputs: tuple[Path, ...] = (),
) -> list[Position]:
    """Simulate every position of ``settings.layout`` and write the experiment to ``out``.

    Parameters
    ----------
    settings : Settings
    out : path
        Written atomically: a temporary sibling renamed to ``out`` when complete (the rules
        of :mod:`data_prep.core.outdir`).
    jobs : int
        Positions simulated in parallel (processes); the output does not depend on it.
    progress : bool or None
        Show a progress bar (one tick per position); None: only on a terminal
        (:mod:`data_prep.core.progress`).
    inputs : paths
        Files the settings were read from; ``out`` must not be, contain or lie inside them.

    Returns
    -------
    list of Position, as written to ``manifest.csv``.
    """
    lay = settings.layout
    lay.check()
    out = Path(out)
    with output_dir(out, "simulate", inputs) as tmp:
        tasks = [
            (settings, w, p, dose, tmp, 1 if jobs > 1 else 2)
            for w, dose in enumerate(lay.doses_s)
            for p in range(lay.positions_per_well)
        ]
        bar = progress_bar(total=len(tasks), unit="position", progress=progress, desc="simulate")
        results = []
        if jobs > 1:
            with multiprocessing.get_context("fork").Pool(jobs, die_with_parent) as pool:
                for res in pool.imap(simulate_position, tasks):
                    results.append(res)
                    bar.update()
        else:
            for task in tasks:
                results.append(simulate_position(task))
                bar.update()
        bar.close()
        positions = [r[0] for r in results]
        write_manifest(tmp, positions)
        scale = float("nan")
        if lay.votes:
            items, truth = vote_items(positions, [r[1] for r in results])
            votes, scale = simulate_votes(items, truth, np.random.default_rng([settings.seed, 7]))
            write_votes(tmp / VOTES_NAME, votes)
        write_settings(tmp, {**settings.to_dict(), "vote_noise_scale": scale, "jobs": jobs})
    return [
        dataclasses.replace(
            p,
            path=out / p.path.relative_to(tmp),
            ground_truth=out / p.ground_truth.relative_to(tmp),
        )
        for p in positions
    ]
