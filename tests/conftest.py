"""Shared fixtures: paths to the shared data and a seeded random generator."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REAL_FRAMES = SHARED / "data" / "real" / "T98G-phase"

# Qt without a window system (the napari plugin's tests); its OpenGL context comes from the
# Xvfb display that pytest-xvfb starts.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def real_frames_dir() -> Path:
    if not REAL_FRAMES.is_dir():
        pytest.skip(f"{REAL_FRAMES} is not present (shared/ is not beside this checkout)")
    return REAL_FRAMES
