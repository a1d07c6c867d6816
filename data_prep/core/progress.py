"""Progress bars: one rule and one option for every long command.

Bars are drawn when asked for (``--progress``), never when refused (``--no-progress``), and
otherwise only when standard output is a terminal, so logs, pipes, cluster jobs and
notebooks get no bar unless they ask. Library functions take ``progress: bool | None`` with
the same meaning (None: the terminal rule).
"""

from __future__ import annotations

import argparse
import sys


def wanted(progress: bool | None = None) -> bool:
    """Whether to draw a bar: ``progress`` when given, else whether stdout is a terminal."""
    if progress is not None:
        return progress
    return bool(getattr(sys.stdout, "isatty", None)) and sys.stdout.isatty()


def progress_bar(*args, progress: bool | None = None, **kwargs):
    """A tqdm bar (on stderr) that is drawn only when :func:`wanted`."""
    from tqdm import tqdm

    return tqdm(*args, disable=not wanted(progress), **kwargs)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: a bar only on a terminal)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: only when stdout is a terminal)",
    )
