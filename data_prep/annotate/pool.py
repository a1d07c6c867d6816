"""The pool of annotation items of a raw experiment, and their frames as 8-bit PNGs.

An item is a 256 px crop of 10 consecutive frames (paper section 2.2), identified by
:class:`data_prep.votes_csv.Item`. Crops tile each frame without overlap on a centred grid (the
margins narrower than 256 px that are left out are split evenly between the two sides);
the 10-frame windows tile the time-lapse without overlap from frame 0. Only positions whose
dose lies in Data Set B's range (0-80 s, :data:`data_prep.core.paper.DATASET_B_DOSE_RANGE_S`)
are used; the upper limit is configurable.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data_prep.core.errors import UserError
from data_prep.core.grids import centred_tiles
from data_prep.core.manifest import Position, read_manifest
from data_prep.core.paper import CROP_PX, DATASET_B_DOSE_RANGE_S, SEQUENCE_FRAMES
from data_prep.core.stack import MANIFEST_CHANNEL, Stack
from data_prep.votes_csv import Item

STRETCH_PERCENTILES = (0.5, 99.5)  # contrast stretch of a sequence (display only)


@dataclass(frozen=True)
class PoolItem:
    """One item of the pool: its id, the position it comes from and that position's dose."""

    item: Item
    position: Position

    @property
    def id(self) -> str:
        return self.item.id

    @property
    def dose_s(self) -> float:
        return self.position.dose_s


def build_pool(
    experiment: Path | str, max_dose_s: float = DATASET_B_DOSE_RANGE_S[1]
) -> list[PoolItem]:
    """All items of the positions of ``experiment`` with dose in [0, ``max_dose_s``] s.

    Items are non-overlapping ``CROP_PX`` crops (a centred grid) x ``SEQUENCE_FRAMES``
    consecutive frames (paper section 2.2), listed position by position, then by t0, y0, x0.
    A 1344 x 1024 frame (section 2.2) gives 5 x 4 crops at x0 = 32, 288, ..., y0 = 0, ....

    Raises
    ------
    UserError
        If the manifest is bad or no position yields an item.
    """
    positions = read_manifest(experiment)
    items: list[PoolItem] = []
    for pos in positions:
        if not DATASET_B_DOSE_RANGE_S[0] <= pos.dose_s <= max_dose_s:
            continue
        stack = Stack(pos.path, pos.channel, channel_source=MANIFEST_CHANNEL)
        h, w = stack.height, stack.width
        ys, xs = centred_tiles(h), centred_tiles(w)
        for t0 in range(0, pos.n_frames - SEQUENCE_FRAMES + 1, SEQUENCE_FRAMES):
            for y0 in ys:
                for x0 in xs:
                    items.append(PoolItem(Item(pos.key, t0, y0, x0), pos))
    if not items:
        raise UserError(
            f"{Path(experiment) / 'manifest.csv'}: no position with dose <= {max_dose_s:g} s "
            f"has {SEQUENCE_FRAMES} frames of at least {CROP_PX}x{CROP_PX} px to annotate."
        )
    return items


def stretch_to_uint8(stack: np.ndarray) -> np.ndarray:
    """Contrast-stretch a sequence to 8 bits with one range for all its frames.

    Parameters
    ----------
    stack : (T, H, W) array
        The frames of one item.

    Returns
    -------
    (T, H, W) uint8, the ``STRETCH_PERCENTILES`` of the whole stack mapped to 0 and 255;
    a constant stack gives zeros.
    """
    data = stack.astype(np.float32)
    lo, hi = np.percentile(data, STRETCH_PERCENTILES)
    if hi <= lo:
        return np.zeros(stack.shape, np.uint8)
    return np.clip((data - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def encode_png(frame: np.ndarray) -> bytes:
    """PNG bytes of a (H, W) uint8 frame."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class FrameCache:
    """The PNG frames of pool items, rendered on first request and kept in a small LRU cache.

    Parameters
    ----------
    items : list of PoolItem
        The pool; frames of other ids are never rendered.
    max_items : int
        Number of items (10 PNGs each) kept in memory.
    """

    def __init__(self, items: list[PoolItem], max_items: int = 64) -> None:
        self._items = {it.id: it for it in items}
        self._max = max_items
        self._cache: OrderedDict[str, list[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def frames(self, item_id: str) -> list[bytes]:
        """The ``SEQUENCE_FRAMES`` PNGs of ``item_id`` (KeyError for ids not in the pool)."""
        pool_item = self._items[item_id]
        with self._lock:
            if item_id in self._cache:
                self._cache.move_to_end(item_id)
                return self._cache[item_id]
        it = pool_item.item
        pos = pool_item.position
        stack = Stack(pos.path, pos.channel, channel_source=MANIFEST_CHANNEL)
        stack = stack.frames(it.t0, SEQUENCE_FRAMES)
        crop = stack[:, it.y0 : it.y0 + CROP_PX, it.x0 : it.x0 + CROP_PX]
        pngs = [encode_png(f) for f in stretch_to_uint8(crop)]
        with self._lock:
            self._cache[item_id] = pngs
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return pngs
