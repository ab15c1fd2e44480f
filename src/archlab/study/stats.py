"""Telling a real difference from noise: intervals on accuracies and paired tests between
models judged on the same test images.

A top-1 accuracy measured on n test images is a binomial proportion: on 5,000 images its 95%
interval is about ±0.9 points near 88%, so two models 0.6 points apart may be the same model.
Two models evaluated on the *same* images are compared image by image (paired), which is far
more sensitive than comparing their two intervals: only the images where they disagree carry
information about which one is better.

    binomial_interval(k, n)            Wilson score interval of k right out of n
    mean_interval(values)              t-based interval of a mean over seeds
    accuracy_interval(top1s, n)        either, as fits the number of seeds
    compare_accuracy(a, b)             -> Difference(delta, ci, p_value, significant, ...)
    pairwise(correct)                  every pair, p-values Holm-adjusted for their number
    tied_with_best(order, pairs)       the models no test separates from the first

`a` and `b` are boolean arrays, "image i was classified right", of shape (images,) for one
seed or (seeds, images) with the rows of the same seed in both (a seed fixes the split, the
data order and the initialisation, so the two runs of one seed form a pair).

The tests behind the verdicts:
- McNemar's exact test on the discordant images: of the images exactly one model gets
  right, a count b for model a and c for model b, is the split b : c plausible as a fair
  coin? With several seeds the discordant counts are pooled over the seeds (each seed's own
  p-value is kept too). Images are treated as independent draws, the assumption behind
  every per-image test.
- A paired bootstrap of the difference in accuracy: the same resampled images for both
  models (and, with several seeds, resampled seeds first), percentile interval.
- Holm's step-down correction when many pairs are tested at once: with 8 models there are
  28 pairs, and at 5% each about one would look "significant" by chance alone.

A difference is called real (`significant`) when both agree: the Holm-adjusted McNemar
p-value is under alpha AND the bootstrap interval leaves out zero. Each guards the other's
blind spot. With one seed and very few disagreeing images (four, all one way) the percentile
bootstrap, which rarely resamples none of the four, misses zero while McNemar's exact
p = 2/16 does not: the exact test is right there. With several seeds the pooled McNemar
count treats every seed's images as fresh draws and ignores how much the trainings differ,
which the bootstrap's resampled seeds carry: two seeds far apart widen its interval over
zero, and the architectures are then not told apart, as they should not be.

Computed with scipy and statsmodels; the bootstrap is a few lines of numpy because it draws
seeds and images at two levels, which scipy.stats.bootstrap does not.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

CONFIDENCE = 0.95
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """[low, high] at `confidence`, and how it was computed ('wilson', 't', 'bootstrap')."""

    low: float
    high: float
    method: str
    confidence: float = CONFIDENCE

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    """Model a against model b on the same test images.

    delta: mean top-1 of a minus that of b (over the shared seeds); ci: its paired
    bootstrap interval; a_only / b_only: images (summed over seeds) that only a / only b
    gets right; p_value: McNemar's exact test on those; p_adjusted: after Holm's correction
    for the pairs tested together (p_value itself for a single comparison); significant:
    p_adjusted < alpha and the interval leaves out zero (see the module's docstring);
    per_seed_p: each seed's own McNemar p-value."""

    delta: float
    ci: Interval
    a_only: int
    b_only: int
    p_value: float
    p_adjusted: float
    significant: bool
    per_seed_p: tuple[float, ...] = ()
    seeds: int = 1
    images: int = 0


# --------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------


def binomial_interval(correct: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson's score interval for `correct` right out of `n`: unlike the normal
    approximation it stays inside [0, 1] and keeps its coverage near 0% and 100%."""
    if n <= 0:
        raise ValueError(f"an accuracy needs at least one image, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must lie in [0, n={n}], got {correct}")
    low, high = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    return Interval(float(low), float(high), "wilson", confidence)


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student's t interval of the mean of `values` (one per seed): wide with few seeds,
    as it should be (with 3 seeds the half-width is 2.48 standard errors)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) < 2:
        raise ValueError(f"a t interval needs at least two values, got {len(v)}; with one "
                         "seed use binomial_interval")
    mean = float(v.mean())
    sem = float(sps.sem(v))
    if sem == 0.0:
        return Interval(mean, mean, "t", confidence)
    low, high = sps.t.interval(confidence, df=len(v) - 1, loc=mean, scale=sem)
    return Interval(float(low), float(high), "t", confidence)


def accuracy_interval(top1: Sequence[float], n_images: int,
                      confidence: float = CONFIDENCE) -> Interval:
    """The interval of a model's top-1 over its seeds: the t interval of the mean with two
    or more seeds (the spread between trainings on this test set), cut to [0, 1] where an
    accuracy lies (two seeds give t = 12.7 standard errors), and Wilson's binomial interval
    of the one run with a single seed (the test set's sampling noise alone)."""
    values = [x for x in top1 if x is not None]
    if len(values) >= 2:
        ci = mean_interval(values, confidence)
        return Interval(max(0.0, ci.low), min(1.0, ci.high), ci.method, confidence)
    if len(values) == 1:
        return binomial_interval(round(values[0] * n_images), n_images, confidence)
    raise ValueError("no accuracy to put an interval on")


# --------------------------------------------------------------------------------------
# Paired tests
# --------------------------------------------------------------------------------------


def _as_seed_rows(correct: np.ndarray) -> np.ndarray:
    a = np.asarray(correct, dtype=bool)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"correctness is (images,) or (seeds, images), got shape {a.shape}")
    return a


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """(a_only, b_only, p): the discordant counts and McNemar's exact two-sided p-value,
    the binomial test of a_only successes in a_only + b_only fair-coin draws."""
    a, b = np.asarray(a_correct, bool).ravel(), np.asarray(b_correct, bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the two models were judged on different images: {a.shape} "
                         f"against {b.shape}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if a_only + b_only == 0:
        return 0, 0, 1.0
    table = [[int(np.sum(a & b)), a_only], [b_only, int(np.sum(~a & ~b))]]
    return a_only, b_only, float(mcnemar(table, exact=True).pvalue)


def paired_bootstrap(a_correct: np.ndarray, b_correct: np.ndarray,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
                     seed: int = 0) -> Interval:
    """Percentile interval of mean(a) - mean(b) over seeds and images, both models taking
    the same resampled seeds and images: seeds are drawn with replacement first (with one
    seed, none), then the images."""
    a, b = _as_seed_rows(a_correct), _as_seed_rows(b_correct)
    if a.shape != b.shape:
        raise ValueError(f"the two models were judged on different images or seeds: "
                         f"{a.shape} against {b.shape}")
    diff = a.astype(np.float32) - b.astype(np.float32)      # (seeds, images), in {-1, 0, 1}
    s, n = diff.shape
    rng = np.random.default_rng(seed)
    out = np.empty(n_resamples)
    chunk = max(1, min(n_resamples, 4_000_000 // n))
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        if s > 1:
            per_image = diff[rng.integers(0, s, size=(k, s))].mean(axis=1)   # (k, images)
        else:
            per_image = np.broadcast_to(diff, (k, n))
        images = rng.integers(0, n, size=(k, n))
        out[start:start + k] = np.take_along_axis(per_image, images, axis=1).mean(
            axis=1, dtype=np.float64)
    tail = (1 - confidence) / 2
    low, high = np.quantile(out, [tail, 1 - tail])
    return Interval(float(low), float(high), "bootstrap", confidence)


def compare_accuracy(a_correct: np.ndarray, b_correct: np.ndarray, *, alpha: float = ALPHA,
                     n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Difference:
    """Is model a more accurate than model b on these test images, beyond noise?
    The arrays are (images,) or (seeds, images), rows paired by seed."""
    a, b = _as_seed_rows(a_correct), _as_seed_rows(b_correct)
    if a.shape != b.shape:
        raise ValueError(f"the two models were judged on different images or seeds: "
                         f"{a.shape} against {b.shape}")
    per_seed = tuple(mcnemar_exact(a[i], b[i])[2] for i in range(len(a)))
    a_only, b_only, p = mcnemar_exact(a, b)
    ci = paired_bootstrap(a, b, n_resamples, 1 - alpha, seed)
    return Difference(
        delta=float(a.mean() - b.mean()), ci=ci, a_only=a_only, b_only=b_only, p_value=p,
        p_adjusted=p, significant=is_significant(p, ci, alpha), per_seed_p=per_seed,
        seeds=len(a), images=a.shape[1])


def is_significant(p_adjusted: float, ci: Interval, alpha: float) -> bool:
    """The test and the interval agree that there is a difference."""
    return p_adjusted < alpha and 0.0 not in ci


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm's step-down adjusted p-values (compare each with alpha): controls the chance of
    any false "significant" among the family, without assuming the tests independent."""
    if not len(p_values):
        return []
    return [float(p) for p in multipletests(list(p_values), alpha=alpha, method="holm")[1]]


def pairwise(correct: Mapping[str, Mapping[int, np.ndarray]], *, alpha: float = ALPHA,
             n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
             ) -> dict[tuple[str, str], Difference]:
    """Every pair of models, {(a, b): Difference of a against b}, for a before b in the
    mapping's order. `correct[model][seed]` is the boolean array of that run; a pair is
    judged on the seeds both have (a pair with none in common is left out). The p-values
    are adjusted together (Holm)."""
    raw: dict[tuple[str, str], Difference] = {}
    for m_a, m_b in itertools.combinations(correct, 2):
        seeds = sorted(set(correct[m_a]) & set(correct[m_b]))
        if not seeds:
            continue
        a = np.stack([np.asarray(correct[m_a][s], bool) for s in seeds])
        b = np.stack([np.asarray(correct[m_b][s], bool) for s in seeds])
        raw[(m_a, m_b)] = compare_accuracy(a, b, alpha=alpha, n_resamples=n_resamples,
                                           seed=seed)
    adjusted = holm([d.p_value for d in raw.values()], alpha)
    return {pair: Difference(**{**d.__dict__, "p_adjusted": p,
                                "significant": is_significant(p, d.ci, alpha)})
            for (pair, d), p in zip(raw.items(), adjusted)}


def difference(pairs: Mapping[tuple[str, str], Difference], a: str, b: str
               ) -> Difference | None:
    """The Difference of a against b from `pairs`, whichever way round it was computed."""
    if (a, b) in pairs:
        return pairs[(a, b)]
    d = pairs.get((b, a))
    if d is None:
        return None
    return Difference(**{**d.__dict__, "delta": -d.delta, "a_only": d.b_only,
                         "b_only": d.a_only,
                         "ci": Interval(-d.ci.high, -d.ci.low, d.ci.method, d.ci.confidence)})


def tied_with_best(order: Sequence[str], pairs: Mapping[tuple[str, str], Difference]
                   ) -> list[str]:
    """The models after the first of `order` (ranked best first) that no test separates
    from it: its pair with the first is not significant, or could not be tested."""
    if not order:
        return []
    best = order[0]
    out = []
    for m in order[1:]:
        d = difference(pairs, best, m)
        if d is None or not d.significant:
            out.append(m)
    return out


__all__ = ["ALPHA", "CONFIDENCE", "Difference", "Interval", "accuracy_interval",
           "binomial_interval", "compare_accuracy", "difference", "holm", "is_significant",
           "mcnemar_exact", "mean_interval", "paired_bootstrap", "pairwise", "tied_with_best"]
