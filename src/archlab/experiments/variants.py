"""What most architecture claims measure: variants of one network trained under one recipe,
each against a baseline, for accuracy (a paired test on the same test images and seeds) and
for cost (parameters, MACs, throughput, all recorded by the study).

`compare_variants(runs, baseline)` judges every variant against the baseline once, with
`archlab.study.stats`: McNemar's exact test over seeds and images, Holm-adjusted over the
variants compared together, and the paired bootstrap interval of the difference in top-1.
A variant is "better" or "worse" only when both agree (`Difference.significant`), and
"tied" otherwise: a tie is not a proof of equality, only that this many images and seeds
cannot tell them apart. `variant_table` and `cost_accuracy_figure` turn the result into the
page's table and its accuracy-against-cost plot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab._text import human, pct
from archlab.study import RunPredictions, Run
from archlab.study.stats import (Difference, Interval, accuracy_interval, compare_accuracy,
                                 holm, is_significant)


@dataclass(frozen=True)
class Variant:
    """One label's runs summed up: its cost, its accuracy with an interval, and (for every
    label but the baseline) its paired difference with the baseline."""

    label: str
    params: int | None
    macs: int | None
    throughput: float | None          # images/s, mean over seeds (the study's measurement)
    train_time: float | None          # seconds, mean over seeds
    top1: tuple[float, ...]           # one per seed
    interval: Interval                # of the mean top-1 (t over seeds; Wilson with one)
    vs_baseline: Difference | None    # this variant minus the baseline

    @property
    def mean_top1(self) -> float:
        return float(np.mean(self.top1))

    @property
    def outcome(self) -> str:
        """'better', 'worse' or 'tied' against the baseline ('baseline' for itself)."""
        d = self.vs_baseline
        if d is None:
            return "baseline"
        if not d.significant:
            return "tied"
        return "better" if d.delta > 0 else "worse"


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def correctness(runs: Sequence[Run]) -> np.ndarray:
    """(seeds, images): whether each run of one label got each test image right, the rows
    in the runs' order (by_label sorts them by seed)."""
    rows = []
    for run in runs:
        predictions = RunPredictions.of(run)
        if predictions is None:
            raise ValueError(f"run {run.label} seed {run.seed} stored no test predictions: "
                             "a paired test needs them (rerun its study)")
        rows.append(predictions.correct())
    return np.stack(rows)


def compare_variants(runs: Mapping[str, Sequence[Run]], baseline: str,
                     alpha: float = 0.05) -> dict[str, Variant]:
    """Every label of `runs` (as `training.by_label` gives them) summed up, and each but
    `baseline` tested against it on the seeds both have; the p-values are adjusted
    together (Holm), since the variants are judged as one family."""
    if baseline not in runs:
        raise KeyError(f"the baseline {baseline!r} is not among the labels {list(runs)}")
    base_seeds = {r.seed: r for r in runs[baseline]}
    raw: dict[str, Difference] = {}
    for label, group in runs.items():
        if label == baseline:
            continue
        shared = [r for r in group if r.seed in base_seeds]
        if not shared:
            continue
        raw[label] = compare_accuracy(correctness(shared),
                                      correctness([base_seeds[r.seed] for r in shared]),
                                      alpha=alpha)
    adjusted = dict(zip(raw, holm([d.p_value for d in raw.values()], alpha)))
    out = {}
    for label, group in runs.items():
        d = raw.get(label)
        if d is not None:
            d = Difference(**{**d.__dict__, "p_adjusted": adjusted[label],
                              "significant": is_significant(adjusted[label], d.ci, alpha)})
        n_images = correctness(group[:1]).shape[1]
        top1 = tuple(float(r.top1) for r in group if r.top1 is not None)
        out[label] = Variant(
            label=label, params=group[0].params, macs=group[0].macs,
            throughput=_mean([r.throughput for r in group]),
            train_time=_mean([r.train_time for r in group]), top1=top1,
            interval=accuracy_interval(top1, n_images), vs_baseline=d)
    return out


def as_numbers(variants: Mapping[str, Variant]) -> dict[str, dict]:
    """The variants as JSON for an outcome's `numbers`: cost, top-1 per seed with its
    interval, and against the baseline the difference, its interval, Holm's p and the
    outcome, which is what a `decide` reads."""
    out = {}
    for v in variants.values():
        d = v.vs_baseline
        out[v.label] = {
            "params": v.params, "macs": v.macs, "throughput": v.throughput,
            "top1": list(v.top1),
            "interval": [v.interval.low, v.interval.high], "outcome": v.outcome,
            "delta": None if d is None else d.delta,
            "delta_ci": None if d is None else [d.ci.low, d.ci.high],
            "p_adjusted": None if d is None else d.p_adjusted}
    return out


# An outcome (of a variant against the baseline) as the words between their two names.
AGAINST = {"worse": "worse than", "better": "better than", "tied": "tied with"}


def top1_text(v: Mapping) -> str:
    """'88.21 [87.90, 88.52]': the mean top-1 % of an `as_numbers` entry, its interval."""
    return (f"{pct(float(np.mean(v['top1'])))} [{pct(v['interval'][0])}, "
            f"{pct(v['interval'][1])}]")


def delta_text(v: Mapping) -> str:
    """'-1.20 [-1.80, -0.60] points, p 0.001': an `as_numbers` entry against its baseline."""
    lo, hi = v["delta_ci"]
    return (f"{100 * v['delta']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] points, "
            f"p {v['p_adjusted']:.2g}")


def variant_table(variants: Mapping[str, Variant], names: Mapping[str, str] | None = None
                  ) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) for the page: cost, top-1 with its interval, and the difference with
    the baseline with its bootstrap interval and Holm-adjusted p-value. `names` gives a
    label a longer description for its first column."""
    names = names or {}
    headers = ["variant", "params", "MACs", "img/s", "test top-1 % [95% interval]",
               "Δ top-1 vs baseline, points [95% interval]", "p (Holm)", "against baseline"]
    rows = []
    for v in variants.values():
        d = v.vs_baseline
        rows.append([
            names.get(v.label, v.label), human(v.params), human(v.macs),
            "-" if v.throughput is None else f"{v.throughput:.0f}",
            f"{pct(v.mean_top1)} [{pct(v.interval.low)}, {pct(v.interval.high)}]",
            "-" if d is None else f"{100 * d.delta:+.2f} [{100 * d.ci.low:+.2f}, "
                                  f"{100 * d.ci.high:+.2f}]",
            "-" if d is None else f"{d.p_adjusted:.3g}", v.outcome])
    return headers, rows


def cost_accuracy_figure(variants: Mapping[str, Variant], title: str, prefix: str,
                         cost: str = "macs") -> str:
    """Test top-1 (mean over seeds, with its 95% interval) against a cost ('macs',
    'params' or 'train_time', the mean over seeds), one labelled point per variant: the
    plot of every accuracy-against-cost argument."""
    fig = figure(6.5, 3.8, layout="constrained")
    ax = fig.subplots()
    for v in variants.values():
        x = getattr(v, cost)
        if x is None:
            continue
        y = 100 * v.mean_top1
        ax.errorbar([x], [y], yerr=[[y - 100 * v.interval.low], [100 * v.interval.high - y]],
                    fmt="o", capsize=3,
                    color="black" if v.vs_baseline is None else None)
        ax.annotate(v.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel({"macs": "MACs per image", "params": "parameters",
                   "train_time": "training time, s"}[cost])
    ax.set_ylabel("test top-1 %")
    ax.set_title(title)
    return to_svg(fig, prefix)


__all__ = ["AGAINST", "Variant", "as_numbers", "compare_variants", "correctness",
           "cost_accuracy_figure", "delta_text", "top1_text", "variant_table"]
