"""Figures in several formats: PNG for a quick look, SVG and PDF for papers.

The commands that draw (heatmap, report, gradcam, classmodel, evaluate, figures) take
``--figure-format``, a comma-separated list of ``png``, ``svg`` and ``pdf`` (default
``png``); each figure is written once per format, under the same name with that suffix.
SVG and PDF keep lines and text as vectors; images drawn inside a figure stay raster in
every format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("png", "svg", "pdf")


def figure_formats(text: str) -> tuple[str, ...]:
    """argparse type of ``--figure-format``: ``"png,svg"`` -> ``("png", "svg")``."""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of {', '.join(FORMATS)}"
        )
    return formats


def add_figure_argument(p) -> None:
    """Add ``--figure-format`` to a command's parser."""
    p.add_argument(
        "--figure-format",
        type=figure_formats,
        default=("png",),
        metavar="png,svg,pdf",
        help="figure file formats, comma-separated (default: png)",
    )


def save_figure(fig, path: Path, formats: tuple[str, ...] = ("png",), dpi: int = 120) -> None:
    """Save a bare matplotlib Figure (:mod:`data_prep.core.figures`) as ``path`` with each
    suffix of ``formats``."""
    for fmt in formats:
        fig.savefig(Path(path).with_suffix(f".{fmt}"), dpi=dpi, format=fmt)
