"""Annotation votes for Data Set B: the one schema shared by the web app, the simulator and
the Data Set B builder.

An *item* is a 256 px crop of 10 consecutive frames of one stage position (paper section
2.2). Its id is ``<plate>/<well>/<position>@t<t0>y<y0>x<x0>``: the position key
(:attr:`data_prep.core.manifest.Position.key`), the first frame and the crop's top-left corner
in pixels. Votes are exported as ``votes.csv`` with the columns of :data:`COLUMNS`:

- ``item_id``: as above;
- ``annotator``: the annotator's name;
- ``label``: ``healthy``, ``sick`` or ``unsure`` (paper section 2.2);
- ``overlap``: ``1`` if the item was served from the already-scored pool (every 5th item);
- ``created_at``: ISO 8601 time of the vote (UTC).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from data_prep.core.checks import read_text
from data_prep.core.errors import UserError
from data_prep.core.paper import VOTE_LABELS

COLUMNS = ("item_id", "annotator", "label", "overlap", "created_at")
VOTES_NAME = "votes.csv"
_ITEM_RE = re.compile(r"^(?P<key>[^@]+/[^@]+/[^@]+)@t(?P<t0>\d+)y(?P<y0>\d+)x(?P<x0>\d+)$")


@dataclass(frozen=True)
class Item:
    """A 10-frame crop of one position: frames ``t0 .. t0+9``, rows ``y0 ..``, cols ``x0 ..``."""

    position_key: str
    t0: int
    y0: int
    x0: int

    @property
    def id(self) -> str:
        return f"{self.position_key}@t{self.t0}y{self.y0}x{self.x0}"

    @classmethod
    def parse(cls, item_id: str) -> Item:
        m = _ITEM_RE.match(item_id)
        if not m:
            raise ValueError(f"item id {item_id!r} is not of the form plate/well/position@tTyYxX")
        return cls(m["key"], int(m["t0"]), int(m["y0"]), int(m["x0"]))


@dataclass(frozen=True)
class Vote:
    item_id: str
    annotator: str
    label: str
    overlap: bool
    created_at: str


def write_votes(path: Path | str, votes: list[Vote]) -> Path:
    """Write ``votes`` as CSV (atomically: a temporary file renamed when complete)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for v in votes:
            writer.writerow([v.item_id, v.annotator, v.label, int(v.overlap), v.created_at])
    tmp.replace(path)
    return path


def read_votes(path: Path | str) -> list[Vote]:
    """Read and check a votes CSV; any bad row raises :class:`UserError` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: votes file not found.")
    reader = csv.DictReader(io.StringIO(read_text(path, "votes CSV"), newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}.")
    votes = []
    for i, row in enumerate(reader, start=2):
        label = row["label"].strip().lower()
        if label not in VOTE_LABELS:
            raise UserError(
                f"{path} line {i}: unknown label {row['label']!r} "
                f"(expected one of {', '.join(VOTE_LABELS)})."
            )
        try:
            Item.parse(row["item_id"])
        except ValueError as err:
            raise UserError(f"{path} line {i}: {err}.") from None
        votes.append(
            Vote(
                item_id=row["item_id"],
                annotator=row["annotator"],
                label=label,
                overlap=row["overlap"].strip() == "1",
                created_at=row["created_at"],
            )
        )
    return votes
