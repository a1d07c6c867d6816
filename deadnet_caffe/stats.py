"""Accuracy statistics of paper section 2.5: virtual batches, bootstrap, 95% BCa intervals.

"We used bootstrap sampling over 100 virtual batches each composed of a random set of 10
healthy and 10 sick cells. We then sampled from these classifications 1x10^5 bootstrap
samples with replacement and calculated 95% confidence intervals using the bias-corrected
accelerated percentile method" (section 2.5, refs. [19], [20]). Read here as: draw 100
class-balanced batches of 20 test crops, take each batch's accuracy, and bootstrap the mean
of those 100 accuracies (``scipy.stats.bootstrap``, ``method="BCa"``).

SciPy's BCa is undefined when every resample gives the same statistic (e.g. all crops
correct: NaN with a DegenerateDataWarning). Then the interval is the exact Clopper-Pearson
interval of the underlying crop counts (correct / evaluated), and ``method`` says so.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from deadnet_caffe import paper


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


def virtual_batches(
    correct: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    n_batches: int = paper.BOOTSTRAP_VIRTUAL_BATCHES,
    per_class: int = paper.BOOTSTRAP_PER_CLASS,
) -> np.ndarray:
    """Accuracies of ``n_batches`` random batches of ``per_class`` crops of each class.

    Parameters
    ----------
    correct : (N,) bool
        Whether the net classified test crop i correctly.
    labels : (N,) int
        Its true label (0 healthy, 1 sick).
    rng : numpy Generator

    Returns
    -------
    (n_batches,) float64
        Fraction correct in each virtual batch (section 2.5). Crops are drawn without
        replacement within a batch, or with replacement if a class has fewer than
        ``per_class`` crops.
    """
    correct = np.asarray(correct, dtype=bool)
    labels = np.asarray(labels)
    pools = [np.flatnonzero(labels == c) for c in (0, 1)]
    if any(len(p) == 0 for p in pools):
        raise ValueError("virtual batches need test crops of both classes")
    acc = np.empty(n_batches)
    for b in range(n_batches):
        idx = np.concatenate([rng.choice(p, per_class, replace=len(p) < per_class) for p in pools])
        acc[b] = correct[idx].mean()
    return acc


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
                batch=min(n_resamples, 20_000),
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


def paper_accuracy(
    correct: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    n_batches: int = paper.BOOTSTRAP_VIRTUAL_BATCHES,
    per_class: int = paper.BOOTSTRAP_PER_CLASS,
    n_resamples: int = paper.BOOTSTRAP_RESAMPLES,
) -> Interval:
    """Section 2.5: virtual-batch accuracy with a 95% BCa interval.

    The estimate is the mean virtual-batch accuracy (a class-balanced accuracy); the
    degenerate fallback is Clopper-Pearson on all evaluated crops.
    """
    correct = np.asarray(correct, dtype=bool)
    acc = virtual_batches(correct, labels, rng, n_batches, per_class)
    return bca(acc, rng, n_resamples, fallback_counts=(int(correct.sum()), correct.size))
