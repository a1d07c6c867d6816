"""Accuracy statistics of paper section 2.5: virtual batches, bootstrap, 95% BCa intervals.

"We used bootstrap sampling over 100 virtual batches each composed of a random set of 10
healthy and 10 sick cells. We then sampled from these classifications 1x10^5 bootstrap
samples with replacement and calculated 95% confidence intervals using the bias-corrected
accelerated percentile method" (section 2.5, refs. [19], [20]).

The sentence can be read two ways, and both are computed (:data:`READINGS`):

- ``classifications`` (the default): the 100 x 20 = 2000 classifications of the virtual
  batches are the sample; the bootstrap resamples them ("sampled from these
  classifications") and the statistic is their mean;
- ``batches``: the 100 batch accuracies are the sample and their mean is bootstrapped.

Both have the same estimate (the mean of the 2000 classifications, a class-balanced
accuracy); the ``batches`` interval is wider, since it also carries the batch-to-batch
variation of the published val net's batch statistics. Where the classifications come from
(one fixed pass of the test set, or each virtual batch run through the val net as a batch
of 20) is :mod:`deadnet_caffe.evaluate`'s business; this module takes a (batches, 20) table.

SciPy's BCa is undefined when every resample gives the same statistic (e.g. all crops
correct: NaN with a DegenerateDataWarning). Then the interval is the exact Clopper-Pearson
interval of the underlying crop counts (correct / evaluated), and ``method`` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from data_prep.core import paper


@dataclass
class Interval:
    """An estimate with its confidence interval and how the interval was made."""

    estimate: float
    low: float
    high: float
    method: str  # "bootstrap BCa" or "Clopper-Pearson (...)"
    confidence: float = paper.CONFIDENCE_LEVEL

    def as_dict(self) -> dict:
        return asdict(self)


def clopper_pearson(k: int, n: int, confidence: float = paper.CONFIDENCE_LEVEL) -> Interval:
    """Exact binomial interval for ``k`` successes out of ``n`` (Clopper & Pearson 1934)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), "Clopper-Pearson (n = 0)")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="exact")
    return Interval(k / n, float(ci.low), float(ci.high), "Clopper-Pearson", confidence)


READINGS = ("classifications", "batches")
DEFAULT_READING = "classifications"


def virtual_batch_indices(
    labels: np.ndarray,
    rng: np.random.Generator,
    n_batches: int = paper.BOOTSTRAP_VIRTUAL_BATCHES,
    per_class: int = paper.BOOTSTRAP_PER_CLASS,
) -> np.ndarray:
    """Test crops of ``n_batches`` random batches of ``per_class`` healthy then sick crops.

    Parameters
    ----------
    labels : (N,) int
        True label of each test crop (0 healthy, 1 sick).
    rng : numpy Generator

    Returns
    -------
    (n_batches, 2 * per_class) int64
        Indices into ``labels``; drawn without replacement within a batch, or with
        replacement if a class has fewer than ``per_class`` crops.
    """
    labels = np.asarray(labels)
    pools = [np.flatnonzero(labels == c) for c in (0, 1)]
    if any(len(p) == 0 for p in pools):
        raise ValueError("virtual batches need test crops of both classes")
    return np.stack(
        [
            np.concatenate([rng.choice(p, per_class, replace=len(p) < per_class) for p in pools])
            for _ in range(n_batches)
        ]
    )


def virtual_batches(
    correct: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    n_batches: int = paper.BOOTSTRAP_VIRTUAL_BATCHES,
    per_class: int = paper.BOOTSTRAP_PER_CLASS,
) -> np.ndarray:
    """Classifications of virtual batches drawn from one fixed pass of predictions.

    Parameters
    ----------
    correct : (N,) bool
        Whether the net classified test crop i correctly.
    labels : (N,) int
        Its true label (0 healthy, 1 sick).
    rng : numpy Generator

    Returns
    -------
    (n_batches, 2 * per_class) bool
        ``correct`` at :func:`virtual_batch_indices`.
    """
    correct = np.asarray(correct, dtype=bool)
    return correct[virtual_batch_indices(labels, rng, n_batches, per_class)]


def bca(
    values: np.ndarray,
    rng: np.random.Generator,
    n_resamples: int = paper.BOOTSTRAP_RESAMPLES,
    confidence: float = paper.CONFIDENCE_LEVEL,
    fallback_counts: tuple[int, int] | None = None,
) -> Interval:
    """BCa bootstrap interval of the mean of ``values`` (scipy.stats.bootstrap).

    Parameters
    ----------
    values : (M,) float
        E.g. the virtual-batch accuracies, or 0/1 per crop.
    fallback_counts : (k, n), optional
        Successes and trials for the Clopper-Pearson interval used when the bootstrap
        distribution is degenerate; default ``(sum(values), len(values))`` for 0/1 values.
    """
    values = np.asarray(values, dtype=float)
    estimate = float(values.mean())
    low = high = np.nan
    if np.ptp(values) > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap(
                (values,),
                np.mean,
                n_resamples=n_resamples,
                confidence_level=confidence,
                method="BCa",
                random_state=rng,
                batch=max(1, min(n_resamples, 20_000_000 // values.size)),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isfinite(low) and np.isfinite(high):
        return Interval(estimate, low, high, "bootstrap BCa", confidence)
    k, n = fallback_counts or (round(float(values.sum())), len(values))
    cp = clopper_pearson(k, n, confidence)
    return Interval(
        estimate,
        cp.low,
        cp.high,
        f"Clopper-Pearson on {k}/{n} (bootstrap degenerate: all resamples equal)",
        confidence,
    )


def batch_table_accuracy(
    table: np.ndarray,
    rng: np.random.Generator,
    reading: str = DEFAULT_READING,
    n_resamples: int = paper.BOOTSTRAP_RESAMPLES,
    fallback_counts: tuple[int, int] | None = None,
) -> Interval:
    """Section 2.5's accuracy and BCa interval from a table of virtual-batch classifications.

    Parameters
    ----------
    table : (n_batches, batch) bool
        Whether each crop of each virtual batch was classified correctly.
    reading : ``"classifications"`` or ``"batches"``
        What the bootstrap resamples (module docstring).
    fallback_counts : (k, n), optional
        Correct and evaluated test crops for the Clopper-Pearson interval used when the
        bootstrap is degenerate (the table repeats crops, so its own counts would overstate
        the evidence); default the table's counts.
    """
    table = np.asarray(table, dtype=bool)
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {READINGS}, got {reading!r}")
    values = table.ravel() if reading == "classifications" else table.mean(axis=1)
    out = bca(
        values, rng, n_resamples, fallback_counts=fallback_counts or (int(table.sum()), table.size)
    )
    out.method = f"{out.method}, resampling the {reading}"
    return out


def paper_accuracy(
    correct: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    n_batches: int = paper.BOOTSTRAP_VIRTUAL_BATCHES,
    per_class: int = paper.BOOTSTRAP_PER_CLASS,
    n_resamples: int = paper.BOOTSTRAP_RESAMPLES,
    reading: str = DEFAULT_READING,
) -> Interval:
    """Section 2.5 on one fixed pass of predictions: virtual batches, then BCa.

    The estimate is the mean virtual-batch accuracy (a class-balanced accuracy); the
    degenerate fallback is Clopper-Pearson on all evaluated crops.
    """
    correct = np.asarray(correct, dtype=bool)
    table = virtual_batches(correct, labels, rng, n_batches, per_class)
    counts = (int(correct.sum()), correct.size)
    return batch_table_accuracy(table, rng, reading, n_resamples, counts)
