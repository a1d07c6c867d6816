"""Shared by tests/test_annotate*.py: tiny raw experiments and a running annotation server."""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile

from data_prep.annotate.server import AnnotationServer
from data_prep.core.manifest import Position, write_manifest

# The items of small_experiment() with the default 80 s dose limit, in pool order.
SMALL_ITEMS = (
    "plate1/A1/p1@t0y0x44",
    "plate1/A1/p1@t0y0x300",
    "plate1/A1/p1@t10y0x44",
    "plate1/A1/p1@t10y0x300",
    "plate1/A2/p1@t0y22x22",
)


def _position(root: Path, well: str, dose_s: float, n_frames: int, path: str) -> Position:
    return Position(
        plate="plate1",
        well=well,
        position="p1",
        dose_s=dose_s,
        frame_interval_min=10.0,
        pixel_size_um=0.5,
        n_frames=n_frames,
        path=root / path,
    )


def small_experiment(root: Path) -> Path:
    """Four positions; only A1 (0 s) and A2 (80 s) yield items (:data:`SMALL_ITEMS`).

    - A1, 0 s: 21 frames of 256 x 600 uint16 in one TIFF, frame t = 1000 t + column index
      (2 windows x 2 crops on a grid centred at x0 = 44, 300; the 21st frame is not used);
    - A2, 80 s: a folder of 10 single-frame 300 x 300 TIFFs, constant 7 (1 item at 22, 22);
    - A3, 120 s: above Data Set B's 0-80 s range (no item);
    - A4, 40 s: 200 x 300 frames, smaller than a crop (no item).
    """
    root.mkdir(parents=True, exist_ok=True)
    cols = np.arange(600, dtype=np.uint16)
    a1 = np.stack([np.broadcast_to(cols + 1000 * t, (256, 600)) for t in range(21)])
    tifffile.imwrite(root / "a1.tif", a1.astype(np.uint16))
    (root / "a2").mkdir()
    for t in range(10):
        tifffile.imwrite(root / "a2" / f"f{t:03d}.tif", np.full((300, 300), 7, np.uint16))
    tifffile.imwrite(root / "a3.tif", np.zeros((10, 256, 256), np.uint16))
    tifffile.imwrite(root / "a4.tif", np.zeros((10, 200, 300), np.uint16))
    write_manifest(
        root,
        [
            _position(root, "A1", 0.0, 21, "a1.tif"),
            _position(root, "A2", 80.0, 10, "a2"),
            _position(root, "A3", 120.0, 10, "a3.tif"),
            _position(root, "A4", 40.0, 10, "a4.tif"),
        ],
    )
    return root


def large_experiment(root: Path, items: int = 200) -> Path:
    """One 0 s position with ``items`` items: 1280 x 1280 frames (25 crops) x 10-frame windows.

    The frames are one blank TIFF linked under every frame name, so the folder stays tiny.
    """
    windows = -(-items // 25)
    root.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(root / "blank.tif", np.zeros((1280, 1280), np.uint8), compression="zlib")
    (root / "frames").mkdir()
    for t in range(10 * windows):
        os.symlink(root / "blank.tif", root / "frames" / f"f{t:04d}.tif")
    pos = replace(_position(root, "B1", 0.0, 10 * windows, "frames"), plate="big")
    write_manifest(root, [pos])
    return root


class Client:
    """A keep-alive HTTP client of one annotator (``token`` may be None)."""

    def __init__(self, server, token: str | None) -> None:
        host, port = server.server_address[:2]
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: dict | bytes | None = None,
        content_type: str | None = "application/json",
    ) -> tuple[int, bytes]:
        """Send a request; a body (a dict is sent as JSON) goes with ``content_type``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if body is not None and content_type is not None:
            headers["Content-Type"] = content_type
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()

    def json(self, method: str, path: str, body: dict | bytes | None = None) -> tuple[int, dict]:
        status, data = self.request(method, path, body)
        return status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


def dump(path: Path) -> list[tuple]:
    """Every row of every table of the SQLite file, to compare before and after requests."""
    with sqlite3.connect(path) as conn:
        tables = ("annotators", "items", "presentations", "votes")
        return [(t, *row) for t in tables for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1")]


def serve_in_thread(server: AnnotationServer) -> threading.Thread:
    """Start ``server.serve_forever`` in a daemon thread (stop with ``shutdown()``)."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread
