"""The raw-experiment format: one multi-frame TIFF per stage position plus ``manifest.csv``.

This is how real microscope data comes in, and what the simulator writes. The rest of the
pipeline reads nothing else. ``manifest.csv`` has one row per stage position:

==================  ========  ==================================================================
column              required  meaning
==================  ========  ==================================================================
plate               yes       plate name
well                yes       well name, e.g. ``B3``
position            yes       stage position name within the well, e.g. ``p1``
dose_s              yes       seconds of continuous 395 nm light given before the time-lapse
frame_interval_min  yes       minutes between frames
pixel_size_um       yes       micrometres per pixel at the sample
n_frames            yes       number of frames in the TIFF
path                yes       TIFF path relative to the manifest (a file, or a folder of
                              single-frame TIFFs sorted by name)
channel             no        channel index for multi-channel stacks (ImageJ hyperstack, OME)
dead_at_end         no        ``1``/``0``: every cell dead or dying at the end (Data Set A's
                              sick criterion for real data; the simulator fills it from truth)
ground_truth        no        folder with the simulator's ground truth for this position
==================  ========  ==================================================================

The key of a position is ``plate/well/position`` (:attr:`Position.key`), unique per manifest.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, fields
from pathlib import Path

from data_prep.core.checks import read_text
from data_prep.core.errors import UserError

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS = (
    "plate",
    "well",
    "position",
    "dose_s",
    "frame_interval_min",
    "pixel_size_um",
    "n_frames",
    "path",
)
OPTIONAL_COLUMNS = ("channel", "dead_at_end", "ground_truth")


@dataclass(frozen=True)
class Position:
    """One stage position: one row of ``manifest.csv`` with its paths made absolute."""

    plate: str
    well: str
    position: str
    dose_s: float
    frame_interval_min: float
    pixel_size_um: float
    n_frames: int
    path: Path
    channel: int | None = None
    dead_at_end: bool | None = None
    ground_truth: Path | None = None

    @property
    def key(self) -> str:
        """``plate/well/position``: unique within an experiment."""
        return f"{self.plate}/{self.well}/{self.position}"

    def row(self, root: Path) -> dict[str, str]:
        """The manifest row, with paths relative to ``root``."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = ""
            elif isinstance(value, Path):
                out[f.name] = value.relative_to(root).as_posix()
            elif isinstance(value, bool):
                out[f.name] = str(int(value))
            else:
                out[f.name] = str(value)
        return out


def _number(text: str, kind, where: str, column: str, minimum: float):
    try:
        value = kind(text)
    except ValueError:
        raise UserError(f"{where}: column {column} is {text!r}, not a number.") from None
    if (isinstance(value, float) and not math.isfinite(value)) or value < minimum:
        raise UserError(f"{where}: column {column} is {text!r}, which is out of range.")
    return value


def read_manifest(experiment: Path | str) -> list[Position]:
    """Read and check ``experiment/manifest.csv``.

    Every row is checked before anything is returned: UTF-8 text (a byte-order mark is
    fine), required columns, numbers, unique position keys, and that each ``path`` exists.
    Image contents are checked by the readers.

    Raises
    ------
    UserError
        Naming the manifest (and row) and what is wrong.
    """
    root = Path(experiment)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise UserError(f"{manifest}: no manifest.csv in the experiment folder.")
    reader = csv.DictReader(io.StringIO(read_text(manifest, "manifest"), newline=""))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{manifest}: missing column(s) {', '.join(missing)}.")
    rows = list(reader)
    if not rows:
        raise UserError(f"{manifest}: the manifest lists no positions.")
    positions: list[Position] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{manifest} line {i}"
        for c in REQUIRED_COLUMNS:
            if not (row.get(c) or "").strip():
                raise UserError(f"{where}: column {c} is empty.")
        path = root / row["path"].strip()
        if not path.exists():
            raise UserError(f"{where}: {path} does not exist.")
        gt = (row.get("ground_truth") or "").strip()
        dead = (row.get("dead_at_end") or "").strip()
        if dead not in ("", "0", "1"):
            raise UserError(f"{where}: column dead_at_end is {dead!r}; use 1, 0 or leave it empty.")
        channel = (row.get("channel") or "").strip()
        pos = Position(
            plate=row["plate"].strip(),
            well=row["well"].strip(),
            position=row["position"].strip(),
            dose_s=_number(row["dose_s"], float, where, "dose_s", 0.0),
            frame_interval_min=_number(
                row["frame_interval_min"], float, where, "frame_interval_min", 0.0
            ),
            pixel_size_um=_number(row["pixel_size_um"], float, where, "pixel_size_um", 0.0),
            n_frames=_number(row["n_frames"], int, where, "n_frames", 1),
            path=path,
            channel=_number(channel, int, where, "channel", 0) if channel else None,
            dead_at_end=None if dead == "" else dead == "1",
            ground_truth=root / gt if gt else None,
        )
        if pos.key in seen:
            raise UserError(
                f"{where}: position {pos.key} is listed twice (also on line {seen[pos.key]})."
            )
        seen[pos.key] = i
        positions.append(pos)
    return positions


def write_manifest(experiment: Path | str, positions: list[Position]) -> Path:
    """Write ``manifest.csv`` for ``positions`` (paths stored relative to ``experiment``)."""
    root = Path(experiment)
    manifest = root / MANIFEST_NAME
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
        writer.writeheader()
        for p in positions:
            writer.writerow(p.row(root))
    tmp.replace(manifest)
    return manifest
