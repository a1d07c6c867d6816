"""The simulator's speed and memory (issue 4.6): frames per second and peak memory.

One stage position is simulated and written (image TIFF, labels, sick mask, cell table) for
``T`` and ``2 T`` frames. Reported, each against a baseline measured in the same run:

- ``render_over_biology_ratio``: seconds per rendered frame over seconds per biology step
  (the price of rendering a frame, which is why only the frames asked for are rendered);
- ``peak_mem_2T_over_T_ratio``: peak traced memory for 2 T frames over T frames (streaming:
  about 1, memory does not grow with the length of the time-lapse);
- ``streamed_over_unstreamed_mem_ratio``: the streamed writer's peak memory for 2 T frames
  over a naive writer that does the same work but keeps all frames (image, labels, sick
  mask) in memory and writes them at the end (the baseline).

Memory is measured with ``tracemalloc`` (numpy reports its buffers to it).
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np

from data_prep.core.tiffout import Calibration, write_stack
from data_prep.sim.biology import Population
from data_prep.sim.params import PRESETS, Settings
from data_prep.sim.plate import PositionSim, simulate_position
from data_prep.sim.truth import cell_rows, pixel_coords, sick_mask

NAME = "simulate"


def _settings(quick: bool, frames: int) -> Settings:
    size = (384, 256) if quick else (1344, 1024)
    lay = replace(
        PRESETS["demo"],
        width=size[0],
        height=size[1],
        render_every=1,
        hours=(frames - 1) * 8 / 60.0,
        doses_s=(80.0,),
        positions_per_well=1,
    )
    return Settings(layout=lay, seed=0)


def _peak(fn) -> tuple[float, float]:
    """(seconds, peak MB traced) of ``fn()``, from a cold start (no cached coordinates)."""
    pixel_coords.cache_clear()
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    fn()
    sec = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return sec, peak


def run(out_dir: Path, quick: bool) -> dict:
    t = 3 if quick else 6
    res: dict = {"frame_size": "384x256" if quick else "1344x1024", "frames_T": t}
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        root = Path(tmp)
        runs = {}
        for n in (t, 2 * t):
            s = _settings(quick, n)
            runs[n] = _peak(lambda s=s, n=n: simulate_position((s, 0, 0, 80.0, root / f"s{n}", 1)))
        s2 = _settings(quick, 2 * t)

        def unstreamed() -> None:
            """The same work, but every frame kept in memory until the end, then written."""
            images, labels, sick, rows = [], [], [], []
            for frame, (step, img, lab, snap) in enumerate(PositionSim(s2, 0, 0, 80.0)):
                images.append(img)
                labels.append(lab)
                sick.append(sick_mask(lab, snap["id"], snap["state"]))
                rows += cell_rows(lab, snap, frame, step, step * 8 / 60.0)
            cal = Calibration(s2.layout.pixel_size_um, "um", s2.layout.frame_interval_min * 60)
            zlib = {"compression": "zlib", "compressionargs": {"level": 1}}
            write_stack(root / "naive.tif", np.stack(images), "TYX", cal)
            write_stack(root / "naive_labels.tif", np.stack(labels), "TYX", cal, **zlib)
            write_stack(root / "naive_sick.tif", np.stack(sick), "TYX", cal, **zlib)

        _, naive_peak = _peak(unstreamed)
        pop = Population(s2.biology, s2.layout, 80.0, np.random.default_rng(0))
        t0 = time.perf_counter()
        for _ in range(50):
            pop.step()
        bio_s = (time.perf_counter() - t0) / 50
    sec_per_frame = runs[2 * t][0] / (2 * t)
    res.update(
        frames_per_s=round(1.0 / sec_per_frame, 2),
        biology_steps_per_s=round(1.0 / bio_s, 1),
        render_over_biology_ratio=round(sec_per_frame / bio_s, 1),
        peak_mem_T_mb=round(runs[t][1], 1),
        peak_mem_2T_mb=round(runs[2 * t][1], 1),
        peak_mem_2T_over_T_ratio=round(runs[2 * t][1] / runs[t][1], 3),
        unstreamed_peak_mem_2T_mb=round(naive_peak, 1),
        streamed_over_unstreamed_mem_ratio=round(runs[2 * t][1] / naive_peak, 3),
    )
    return res
