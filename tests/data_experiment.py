"""A tiny synthetic raw experiment (TIFFs + manifest.csv) for the Data Set A/B builder tests,
independent of the simulator."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

from data_prep.core.manifest import Position, write_manifest
from data_prep.votes_csv import Vote, write_votes

HEIGHT, WIDTH, FRAMES = 384, 640, 12  # 1 x 3 = 3 crops per frame by the 54-crop rule
DOSES = (0.0, 0.0, 0.0, 200.0, 200.0, 200.0, 40.0)


def texture(rng: np.random.Generator, n: int, h: int = HEIGHT, w: int = WIDTH) -> np.ndarray:
    """(n, h, w) uint16 smooth random texture around 2000 counts."""
    out = np.empty((n, h, w), dtype=np.uint16)
    for i in range(n):
        x = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3)
        out[i] = np.clip(2000 + 3000 * x, 0, 65535).astype(np.uint16)
    return out


def make_experiment(root: Path, seed: int = 0, frames: int = FRAMES) -> list[Position]:
    """Seven positions in 7 wells: three dose-0, three 200 s dead at the end, one 40 s alive."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    positions = []
    for i, dose in enumerate(DOSES):
        path = root / f"w{i}_p1.tif"
        tifffile.imwrite(path, texture(rng, frames), photometric="minisblack")
        positions.append(
            Position(
                plate="P",
                well=f"W{i}",
                position="p1",
                dose_s=dose,
                frame_interval_min=8.0,
                pixel_size_um=0.3225,
                n_frames=frames,
                path=path,
                dead_at_end=dose >= 200,
            )
        )
    write_manifest(root, positions)
    return positions


def make_votes(root: Path, positions: list[Position]) -> Path:
    """Votes on 0-40 s positions: per position crop x0=0 healthy (2 agreeing annotators) at
    t0=0, crop x0=256 sick (or healthy for dose 0 well 0), one unsure-only and one discordant
    item. 200 s positions get an item too (dropped by --max-dose 80)."""
    votes = []
    for p in positions:
        healthy = f"{p.key}@t0y0x0"
        other = f"{p.key}@t2y128x256"
        lab = "healthy" if p.key.endswith("W0/p1") or p.key.endswith("W2/p1") else "sick"
        votes += [
            Vote(healthy, "ann1", "healthy", False, "2024-01-01T00:00:00Z"),
            Vote(healthy, "ann2", "healthy", True, "2024-01-01T00:00:00Z"),
            Vote(other, "ann1", lab, False, "2024-01-01T00:00:00Z"),
            Vote(other, "ann3", lab, True, "2024-01-01T00:00:00Z"),
            Vote(f"{p.key}@t1y0x128", "ann1", "unsure", False, "2024-01-01T00:00:00Z"),
            Vote(f"{p.key}@t1y128x0", "ann1", "healthy", False, "2024-01-01T00:00:00Z"),
            Vote(f"{p.key}@t1y128x0", "ann2", "sick", True, "2024-01-01T00:00:00Z"),
        ]
    return write_votes(root / "votes.csv", votes)
