"""Simulated expert votes for Data Set B (paper 2.2 and 3.1), in :mod:`data_prep.votes`' schema.

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

import numpy as np

from data_prep.concordance import count_disagreement
from data_prep.votes import Item, Vote
from deadnet_caffe import paper

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
_START = dt.datetime(2018, 1, 1, 9, 0, 0, tzinfo=dt.timezone.utc)


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
