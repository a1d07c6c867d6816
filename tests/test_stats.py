"""Section 2.5 statistics: BCa against a hand-written BCa, the degenerate case, batches."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from deadnet_caffe import stats


def hand_bca(x: np.ndarray, rng: np.random.Generator, n_boot: int, conf: float = 0.95):
    """Efron's BCa for the mean, written out (Efron & Tibshirani 1993, eq. 14.10-14.15)."""
    n = x.size
    theta = x.mean()
    boot = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    # bias correction: share of bootstrap means below the estimate (ties count half)
    z0 = ndtri(((boot < theta).sum() + 0.5 * (boot == theta).sum()) / n_boot)
    jack = (x.sum() - x) / (n - 1)  # leave-one-out means
    d = jack.mean() - jack
    a = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
    lo_hi = []
    for alpha in ((1 - conf) / 2, (1 + conf) / 2):
        z = ndtri(alpha)
        lo_hi.append(np.quantile(boot, ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return lo_hi


def test_bca_agrees_with_a_hand_written_bca():
    rng = np.random.default_rng(1)
    x = rng.exponential(1.0, 60)  # skewed, so bias correction and acceleration matter
    got = stats.bca(x, np.random.default_rng(2), n_resamples=100_000)
    lo, hi = hand_bca(x, np.random.default_rng(3), 100_000)
    assert got.method == "bootstrap BCa"
    assert got.estimate == pytest.approx(x.mean())
    assert got.low == pytest.approx(lo, abs=0.01)
    assert got.high == pytest.approx(hi, abs=0.01)
    # and BCa is not the plain percentile interval here (the skew shifts it right)
    boot = x[np.random.default_rng(4).integers(0, 60, (20_000, 60))].mean(axis=1)
    assert got.high - np.quantile(boot, 0.975) > 0.01


def test_bca_on_discrete_batch_accuracies_matches_hand_bca():
    """Virtual-batch accuracies are multiples of 1/20, so ties with the estimate occur."""
    rng = np.random.default_rng(5)
    correct = rng.random(126) < 0.94
    labels = np.r_[np.zeros(60, int), np.ones(66, int)]
    table = stats.virtual_batches(correct, labels, rng)
    assert table.shape == (100, 20)
    acc = table.mean(axis=1)
    got = stats.batch_table_accuracy(table, np.random.default_rng(6), "batches", 100_000)
    lo, hi = hand_bca(acc, np.random.default_rng(7), 100_000)
    assert got.low == pytest.approx(lo, abs=0.003) and got.high == pytest.approx(hi, abs=0.003)
    assert got.low < acc.mean() < got.high
    assert got.method == "bootstrap BCa, resampling the batches"


def exact_bca_of_bernoulli_mean(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """BCa of the mean of k ones and n - k zeros with the bootstrap taken to infinity.

    A resample's mean is Binomial(n, k / n) / n exactly, so its distribution function is
    known without any resampling; the jackknife means are (k - 1) / (n - 1) (k times) and
    k / (n - 1) (n - k times). The quantile is the binomial's (a step function).
    """
    from scipy.stats import binom

    theta = k / n
    z0 = ndtri(binom.cdf(k - 1, n, theta))  # P(resample mean < estimate)
    jack = np.r_[np.full(k, (k - 1) / (n - 1)), np.full(n - k, k / (n - 1))]
    d = jack.mean() - jack
    a = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5)
    out = []
    for alpha in ((1 - conf) / 2, (1 + conf) / 2):
        z = ndtri(alpha)
        out.append(binom.ppf(ndtr(z0 + (z0 + z) / (1 - a * (z0 + z))), n, theta) / n)
    return out[0], out[1]


def test_classifications_reading_matches_the_exact_binomial_bca():
    """The default reading resamples the 2000 classifications (a small fixed table)."""
    table = np.zeros((100, 20), bool)
    table.ravel()[:1514] = True  # 1514 of 2000 correct
    np.random.default_rng(8).shuffle(table.ravel())
    got = stats.batch_table_accuracy(table, np.random.default_rng(9), n_resamples=100_000)
    lo, hi = exact_bca_of_bernoulli_mean(1514, 2000)
    assert got.estimate == pytest.approx(0.757)
    assert got.method == "bootstrap BCa, resampling the classifications"
    assert got.low == pytest.approx(lo, abs=0.0015) and got.high == pytest.approx(hi, abs=0.0015)
    # the batch reading of the same table has the same estimate and a different interval
    other = stats.batch_table_accuracy(table, np.random.default_rng(9), "batches", 100_000)
    assert other.estimate == pytest.approx(got.estimate)
    assert (other.low, other.high) != (got.low, got.high)
    with pytest.raises(ValueError, match="reading"):
        stats.batch_table_accuracy(table, np.random.default_rng(9), "crops")


def test_degenerate_all_correct_falls_back_to_clopper_pearson():
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    res = stats.paper_accuracy(np.ones(60, bool), labels, np.random.default_rng(0))
    assert res.estimate == 1.0 and res.high == 1.0
    assert res.method.startswith("Clopper-Pearson on 60/60")
    # exact interval for 60/60: lower bound (alpha/2)^(1/n)
    assert res.low == pytest.approx(0.025 ** (1 / 60), rel=1e-9)


def test_clopper_pearson_known_answers():
    assert stats.clopper_pearson(0, 10).high == pytest.approx(1 - 0.025**0.1, rel=1e-9)
    ci = stats.clopper_pearson(230, 256)  # the paper's experts on unexposed cells (3.1)
    assert ci.estimate == pytest.approx(0.8984, abs=1e-4)
    assert 0.85 < ci.low < 0.8984 < ci.high < 0.94


def test_virtual_batches_are_class_balanced():
    """All healthy correct, all sick wrong: every balanced batch scores exactly 0.5."""
    labels = np.r_[np.zeros(40, int), np.ones(15, int)]
    correct = labels == 0
    acc = stats.virtual_batches(correct, labels, np.random.default_rng(0)).mean(axis=1)
    np.testing.assert_array_equal(acc, 0.5)
    # fewer than 10 of a class: drawn with replacement, still balanced
    acc = stats.virtual_batches(correct[:45], labels[:45], np.random.default_rng(0)).mean(axis=1)
    np.testing.assert_array_equal(acc, 0.5)
    idx = stats.virtual_batch_indices(labels, np.random.default_rng(0))
    np.testing.assert_array_equal(labels[idx], np.repeat([[0, 1]], 10, axis=1).repeat(100, 0))
    with pytest.raises(ValueError, match="both classes"):
        stats.virtual_batches(correct[:40], labels[:40], np.random.default_rng(0))
