"""The statistics behind every comparison, against hand computations and scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from archlab.study.stats import (
    accuracy_interval, binomial_interval, compare_accuracy, difference, holm, mcnemar_exact,
    mean_interval, paired_bootstrap, pairwise, tied_with_best,
)


def test_wilson_interval_by_hand_and_by_scipy():
    k, n, z = 4410, 5000, sps.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    ci = binomial_interval(k, n)
    assert ci.method == "wilson"
    assert ci.low == pytest.approx(centre - half, abs=1e-12)
    assert ci.high == pytest.approx(centre + half, abs=1e-12)
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert (ci.low, ci.high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    # The figure: about ±0.9 points near 88% on 5,000 images.
    assert 0.0085 < ci.half_width < 0.0095
    # It never leaves [0, 1], even at 100%.
    top = binomial_interval(50, 50)
    assert top.high == pytest.approx(1.0) and 0.9 < top.low < 1.0
    with pytest.raises(ValueError, match="at least one image"):
        binomial_interval(0, 0)


def test_t_interval_by_hand():
    values = [0.881, 0.884, 0.879]
    m, s = np.mean(values), np.std(values, ddof=1)
    half = sps.t.ppf(0.975, 2) * s / math.sqrt(3)
    assert sps.t.ppf(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    ci = mean_interval(values)
    assert (ci.low, ci.high) == pytest.approx((m - half, m + half), abs=1e-12)
    assert ci.method == "t"
    with pytest.raises(ValueError, match="binomial_interval"):
        mean_interval([0.9])


def test_accuracy_interval_follows_the_number_of_seeds():
    assert accuracy_interval([0.88], 5000).method == "wilson"
    assert accuracy_interval([0.88, 0.885], 5000).method == "t"
    assert accuracy_interval([0.88, 0.88, 0.88], 5000).half_width == 0.0


def _pair(a_only: int, b_only: int, both: int, neither: int):
    a = np.array([1] * both + [1] * a_only + [0] * b_only + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * a_only + [1] * b_only + [0] * neither, dtype=bool)
    return a, b


def test_mcnemar_exact_known_case():
    # 10 images only a gets right, 2 only b: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2)
    # = 2 * (1 + 12 + 66) / 4096.
    a, b = _pair(10, 2, both=80, neither=8)
    a_only, b_only, p = mcnemar_exact(a, b)
    assert (a_only, b_only) == (10, 2)
    assert p == pytest.approx(2 * 79 / 4096, abs=1e-12)
    assert p == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue, abs=1e-12)
    # Symmetric, and a fair split is no evidence at all.
    assert mcnemar_exact(b, a)[2] == pytest.approx(p)
    assert mcnemar_exact(*_pair(5, 5, 50, 0))[2] == pytest.approx(1.0)


def test_identical_models_are_not_different():
    rng = np.random.default_rng(0)
    a = rng.random(2000) < 0.85
    d = compare_accuracy(a, a.copy())
    assert d.delta == 0.0 and (d.a_only, d.b_only) == (0, 0)
    assert d.p_value == 1.0 and not d.significant
    assert (d.ci.low, d.ci.high) == (0.0, 0.0)


def test_a_clearly_better_model_is_significant():
    rng = np.random.default_rng(1)
    b = rng.random(5000) < 0.80
    a = b | (rng.random(5000) < 0.75)          # a right wherever b is, and often elsewhere
    d = compare_accuracy(a, b)
    assert d.delta == pytest.approx(a.mean() - b.mean())
    assert d.delta > 0.1 and d.b_only == 0
    assert d.significant and d.p_value < 1e-100
    assert d.ci.low > 0.1 and d.delta in d.ci


def test_paired_bootstrap_matches_scipy_with_one_seed():
    rng = np.random.default_rng(2)
    a = rng.random(3000) < 0.88
    b = np.where(rng.random(3000) < 0.9, a, ~a)
    ours = paired_bootstrap(a, b, n_resamples=4000, seed=3)
    ref = sps.bootstrap((a.astype(float), b.astype(float)),
                        lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True,
                        n_resamples=4000, method="percentile", random_state=4)
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.003)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.003)
    # Two seeds whose differences disagree give a wider interval than either alone: the
    # seeds are resampled too.
    c = np.where(rng.random(3000) < 0.9, b, ~b)
    two = paired_bootstrap(np.stack([a, a]), np.stack([b, c]), seed=3)
    assert two.high - two.low > ours.high - ours.low


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 -> 0.01*3, 0.03*2, 0.04*1, made monotone: 0.03, 0.06, 0.06.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    assert holm([]) == []


def test_pairwise_adjusts_and_finds_the_ties():
    rng = np.random.default_rng(5)
    truth = rng.random(4000)
    correct = {
        "best": {0: truth < 0.90, 1: truth < 0.905},
        # As many images gained as lost against "best", on both seeds.
        "twin": {0: (truth > 0.005) & (truth < 0.905), 1: (truth > 0.005) & (truth < 0.91)},
        "worse": {0: truth < 0.70, 1: truth < 0.71},
        "alone": {7: truth < 0.5},               # no seed in common with the others
    }
    pairs = pairwise(correct)
    assert ("best", "alone") not in pairs and len(pairs) == 3
    raw = [pairs[p].p_value for p in pairs]
    assert [pairs[p].p_adjusted for p in pairs] == pytest.approx(holm(raw))
    assert pairs[("best", "worse")].significant and pairs[("best", "worse")].seeds == 2
    assert not pairs[("best", "twin")].significant
    assert tied_with_best(["best", "twin", "worse", "alone"], pairs) == ["twin", "alone"]
    back = difference(pairs, "worse", "best")
    assert back.delta == pytest.approx(-pairs[("best", "worse")].delta)
    assert back.ci.high == pytest.approx(-pairs[("best", "worse")].ci.low)
    assert back.a_only == pairs[("best", "worse")].b_only


def test_different_test_sets_are_refused():
    with pytest.raises(ValueError, match="different images"):
        compare_accuracy(np.ones(10, bool), np.ones(11, bool))


def test_a_difference_is_real_only_when_the_test_and_the_interval_agree():
    # Four images, all one way: the bootstrap interval misses zero, McNemar (p = 2/16) does
    # not call it; the verdict follows the exact test.
    a, b = _pair(4, 0, both=1800, neither=196)
    d = compare_accuracy(a, b)
    assert d.ci.low > 0 and d.p_value == pytest.approx(2 / 16) and not d.significant
    # Two seeds that disagree: pooled over seeds the images say a is better, but the
    # trainings differ so much that the interval, resampling the seeds, covers zero.
    rng = np.random.default_rng(6)
    truth = rng.random(3000)
    a2 = np.stack([truth < 0.95, truth < 0.80])
    b2 = np.stack([truth < 0.80, truth < 0.84])
    d2 = compare_accuracy(a2, b2)
    assert d2.p_value < 1e-10 and 0.0 in d2.ci and not d2.significant
    # Two seeds in accord: both say yes.
    d3 = compare_accuracy(np.stack([truth < 0.95, truth < 0.94]),
                          np.stack([truth < 0.80, truth < 0.81]))
    assert d3.significant


def test_intervals_of_an_accuracy_stay_in_zero_one():
    ci = accuracy_interval([0.98, 0.999], 1000)
    assert ci.method == "t" and 0.0 <= ci.low and ci.high == 1.0
