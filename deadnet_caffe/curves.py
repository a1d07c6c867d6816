"""Training curves, Figure 3a,b: train and validation loss, and validation accuracy.

The numbers come from Caffe's log (``logparse``); this module only draws them.
"""

from __future__ import annotations

import math
from pathlib import Path

from data_prep.core.errors import UserError
from data_prep.core.figures import subplots
from deadnet_caffe import logparse

LOG_NAME = "caffe.log"
CSV_NAME = "curves.csv"
LOSS_PNG = "figure3a_loss.png"
ACCURACY_PNG = "figure3b_accuracy.png"


def _points(cols: dict[str, list[float]], name: str) -> tuple[list[float], list[float]]:
    both = zip(cols["iteration"], cols[name], strict=True)
    pairs = [(i, v) for i, v in both if not math.isnan(v)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def draw(
    cols: dict[str, list[float]],
    out_dir: Path,
    title: str = "",
    formats: tuple[str, ...] = ("png",),
) -> list[Path]:
    """Draw Figure 3a (loss) and 3b (validation accuracy) into ``out_dir``, in each of
    ``formats`` (``png``, ``svg``, ``pdf``; see :mod:`deadnet_caffe.figout`).

    Parameters
    ----------
    cols : dict of str -> list of float
        Columns ``logparse.CSV_COLUMNS`` (NaN where a value was not logged).
    out_dir : Path
        Folder for ``figure3a_loss.png`` and ``figure3b_accuracy.png``.
    title : str
        Prefix for the panel titles (e.g. the run's name).
    formats : file formats, each written under the PNG name with its own suffix.
    """
    out_dir = Path(out_dir)
    paths = []
    fig, ax = subplots(figsize=(5, 3.5), dpi=120)
    for name, label, style in (("train_loss", "train", "-"), ("test_loss", "validation", "o-")):
        x, y = _points(cols, name)
        if x:
            ax.plot(x, y, style, label=label, markersize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (softmax cross-entropy)")
    ax.set_title(f"{title} a) training and validation loss".strip())
    if ax.lines:  # a run stopped before its first logged loss has none
        ax.legend()
    fig.tight_layout()
    paths += _save(fig, out_dir / LOSS_PNG, formats)
    fig, ax = subplots(figsize=(5, 3.5), dpi=120)
    x, y = _points(cols, "test_accuracy")
    if x:
        ax.plot(x, y, "o-", color="C1", markersize=3, label="validation")
        ax.legend()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} b) validation accuracy".strip())
    fig.tight_layout()
    paths += _save(fig, out_dir / ACCURACY_PNG, formats)
    return paths


def _save(fig, path: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix of ``formats``, each atomically (a temporary
    file renamed: the figures of a running training are redrawn while users look at them)."""
    paths = []
    for fmt in formats:
        final = path.with_suffix(f".{fmt}")
        tmp = path.with_name(f".{path.stem}.tmp.{fmt}")
        fig.savefig(tmp, format=fmt)
        tmp.replace(final)
        paths.append(final)
    return paths


def update_run(run_dir: Path | str, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Parse ``RUN/caffe.log`` into ``RUN/curves.csv`` and redraw Figure 3a,b (``formats``).

    Raises
    ------
    UserError
        If the run folder has no Caffe log.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / LOG_NAME
    if not log_path.is_file():
        raise UserError(f"{log_path} does not exist; --run must be a folder made by deadnet train.")
    log = logparse.parse_log(log_path)
    csv_path = logparse.write_csv(log, run_dir / CSV_NAME)
    cols = logparse.read_csv(csv_path)
    return [csv_path, *draw(cols, run_dir, title=run_dir.name, formats=formats)]
