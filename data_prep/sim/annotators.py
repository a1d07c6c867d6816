"""Simulated expert votes for Data Set B (paper 2.2 and 3.1), in :mod:`data_prep.votes_csv`' schema.

Items are 10-frame, 256 px, non-overlapping crops of the 0-80 s positions (paper 2.2). Each
item has a true sickness ``s`` in [0, 1]: the mean over its 10 frames of the fraction of cell
pixels that are sick (:func:`data_prep.sim.truth.crop_sick_fraction`). Annotator ``j`` sees
``x = slope * (s - threshold) + bias_j + c * noise_j * N(0, 1)`` and votes ``sick`` if
``x > unsure_j``, ``healthy`` if ``x < -unsure_j`` and ``unsure`` otherwise. Biases, noise
levels and unsure widths differ between annotators (:data:`ANNOTATORS`, four experts as in
the paper's Figure 2). Items are served at random, annotators in turn; every 5th item an
annotator sees comes from the pool already scored by another annotator (paper 2.2), and its
vote is marked ``overlap``.

The common noise scale ``c`` is calibrated (bisection, on the same random draws) so that the
disagreement under section 3.1's rule (items voted by two or more annotators, none Unsure,
whose labels differ: :func:`data_prep.concordance.count_disagreement`) is the paper's
49 / 263 = 18.6%; :func:`disagreement` measures it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from data_prep.concordance import count_disagreement
from data_prep.core import paper
from data_prep.votes_csv import Item, Vote

# name, bias (+ = calls sick more readily), noise, half-width of the unsure band
ANNOTATORS = (
    ("expert1", 0.0, 0.8, 0.25),
    ("expert2", 0.5, 1.0, 0.15),
    ("expert3", -0.4, 0.7, 0.35),
    ("expert4", 0.2, 1.2, 0.2),
)
SLOPE = 6.0  # latent units per unit of sick fraction
THRESHOLD = 0.3  # sick fraction at which an unbiased annotator is undecided
TARGET_DISAGREEMENT = paper.PAPER_DISAGREE_COUNT / paper.PAPER_OVERLAP_COUNT  # 0.186
_START = dt.datetime(2018, 1, 1, 9, 0, 0, tzinfo=dt.UTC)


def _schedule(n_items: int, rng: np.random.Generator) -> list[tuple[int, int, bool]]:
    """Serving order: (item index, annotator index, overlap) per vote."""
    order = rng.permutation(n_items)
    n_ann = len(ANNOTATORS)
    served = [0] * n_ann
    scored_by: dict[int, set[int]] = {}
    out: list[tuple[int, int, bool]] = []
    nxt, j = 0, 0
    while nxt < n_items:
        served[j] += 1
        pool = [i for i, who in scored_by.items() if j not in who]
        if served[j] % paper.OVERLAP_EVERY_NTH == 0 and pool:
            item, overlap = pool[int(rng.integers(len(pool)))], True
        else:
            item, overlap = int(order[nxt]), False
            nxt += 1
        scored_by.setdefault(item, set()).add(j)
        out.append((item, j, overlap))
        j = (j + 1) % n_ann
    return out


def _labels(truth: np.ndarray, sched, draws: np.ndarray, scale: float) -> list[str]:
    labels = []
    for (item, j, _), z in zip(sched, draws, strict=True):
        _, bias, noise, unsure = ANNOTATORS[j]
        x = SLOPE * (truth[item] - THRESHOLD) + bias + scale * noise * z
        labels.append("sick" if x > unsure else ("healthy" if x < -unsure else "unsure"))
    return labels


def _disagreement(sched, labels: list[str]) -> float:
    n, d = count_disagreement(
        (str(item), str(j), lab) for (item, j, _), lab in zip(sched, labels, strict=True)
    )
    return d / n if n else float("nan")


def disagreement(votes: list[Vote]) -> float:
    """Section 3.1's disagreement D / N (:func:`data_prep.concordance.count_disagreement`).

    NaN if no item overlaps.
    """
    ordered = sorted(votes, key=lambda v: v.created_at)
    n, d = count_disagreement((v.item_id, v.annotator, v.label) for v in ordered)
    return d / n if n else float("nan")


def simulate_votes(
    items: list[Item], truth: np.ndarray, rng: np.random.Generator
) -> tuple[list[Vote], float]:
    """Votes of the simulated experts on ``items``.

    Parameters
    ----------
    items : list of Item
    truth : (len(items),) float
        True sick fraction of each item in [0, 1] (NaN, for a crop without cells, counts as 0).
    rng : numpy Generator

    Returns
    -------
    votes : list of Vote
        In serving order, ``created_at`` one vote every 37 s from 2018-01-01 09:00 UTC.
    scale : float
        The calibrated noise scale ``c`` (module docstring).
    """
    if not items:
        return [], float("nan")
    truth = np.nan_to_num(np.asarray(truth, float), nan=0.0)
    sched = _schedule(len(items), rng)
    draws = rng.standard_normal(len(sched))
    lo, hi = 0.05, 20.0
    for _ in range(40):  # disagreement grows with the noise scale
        mid = np.sqrt(lo * hi)
        d = _disagreement(sched, _labels(truth, sched, draws, mid))
        if np.isnan(d) or d > TARGET_DISAGREEMENT:
            hi = mid
        else:
            lo = mid
    scale = float(np.sqrt(lo * hi))
    labels = _labels(truth, sched, draws, scale)
    votes = [
        Vote(
            item_id=items[item].id,
            annotator=ANNOTATORS[j][0],
            label=lab,
            overlap=overlap,
            created_at=(_START + dt.timedelta(seconds=37 * k)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        for k, ((item, j, overlap), lab) in enumerate(zip(sched, labels, strict=True))
    ]
    return votes, scale


def item_truth(ground_truth: Path, items: list[Item]) -> np.ndarray:
    """True sick fraction of ``items`` of one position, as the simulated experts saw it.

    Parameters
    ----------
    ground_truth : Path
        The position's ground-truth folder (``sick.tif``, :mod:`data_prep.sim.truth`).
    items : list of Item
        Items of that position.

    Returns
    -------
    (len(items),) float64
        Mean over the item's 10 frames of the fraction of cell pixels that are sick in its
        256 px crop (a frame without cells counts 0), as :func:`simulate_votes` uses.
    """
    import tifffile

    from data_prep.sim.truth import SICK_HEALTHY, SICK_SICK

    frames = sorted({t for it in items for t in range(it.t0, it.t0 + paper.SEQUENCE_FRAMES)})
    frac: dict[tuple[int, int, int], float] = {}
    with tifffile.TiffFile(Path(ground_truth) / "sick.tif") as tif:
        for t in frames:
            sick = tif.pages[t].asarray()
            for it in items:
                if it.t0 <= t < it.t0 + paper.SEQUENCE_FRAMES:
                    crop = sick[it.y0 : it.y0 + paper.CROP_PX, it.x0 : it.x0 + paper.CROP_PX]
                    n_sick = int((crop == SICK_SICK).sum())
                    n_cell = n_sick + int((crop == SICK_HEALTHY).sum())
                    frac[(t, it.y0, it.x0)] = n_sick / n_cell if n_cell else 0.0
    return np.array(
        [
            np.mean([frac[(t, it.y0, it.x0)] for t in range(it.t0, it.t0 + paper.SEQUENCE_FRAMES)])
            for it in items
        ]
    )


def truth_label(sick_fraction: np.ndarray) -> np.ndarray:
    """The item's true state as a label: 1 (sick) where its sick fraction exceeds
    :data:`THRESHOLD`, the point at which an unbiased simulated expert is undecided."""
    return (np.asarray(sick_fraction) > THRESHOLD).astype(np.int64)


def vote_truth_agreement(votes: list[Vote], truth: dict[str, int]) -> dict:
    """How often the simulated votes agree with the simulated truth.

    Parameters
    ----------
    votes : list of Vote
    truth : dict
        item id -> true label (:func:`truth_label`).

    Returns
    -------
    dict
        ``votes``: healthy/sick votes and the fraction equal to the truth; ``labels``: items
        whose healthy/sick votes all agree (Data Set B's labels) and the fraction of those
        labels equal to the truth, overall and per true class.
    """
    from data_prep.labels import label_items_b

    code = {"healthy": 0, "sick": 1}
    decided = [v for v in votes if v.label in code and v.item_id in truth]
    labels = {it.id: lab for it, lab in label_items_b(votes).labels.items() if it.id in truth}
    hits = [labels[i] == truth[i] for i in labels]
    by_class = {
        name: float(np.mean([labels[i] == c for i in labels if truth[i] == c]))
        if any(truth[i] == c for i in labels)
        else None
        for c, name in paper.LABELS.items()
    }
    return {
        "votes": len(decided),
        "votes_agree": float(np.mean([code[v.label] == truth[v.item_id] for v in decided]))
        if decided
        else None,
        "labels": len(labels),
        "labels_agree": float(np.mean(hits)) if hits else None,
        "labels_agree_per_true_class": by_class,
    }
