"""Variants against a baseline: the paired test reads each run's stored predictions, the
outcome follows the difference, and the page's table and plot are drawn."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from archlab.experiments.variants import (compare_variants, cost_accuracy_figure,
                                          variant_table)
from archlab.study import Run, encode_predictions


def run(label, seed, correct, macs=1000, params=10):
    target = np.zeros(len(correct), dtype=int)
    pred = np.where(correct, 0, 1)
    return Run(key=f"{label}-{seed}", protocol_hash="h", position=0, label=label, model="m",
               seed=seed, entry={}, status="done", params=params, macs=macs,
               top1=float(np.mean(correct)), throughput=100.0, train_time=2.0,
               result={"predictions": encode_predictions(target, pred)})


def seeds_of(label, p, n=2000, seeds=3, **kw):
    # A stable seed per label (str's hash changes from process to process).
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    return [run(label, s, rng.random(n) < p, **kw) for s in range(seeds)]


def test_a_variant_is_better_worse_or_tied_by_the_paired_test():
    runs = {"base": seeds_of("base", 0.80), "good": seeds_of("good", 0.90, macs=2000),
            "bad": seeds_of("bad", 0.70), "same": seeds_of("same", 0.80)}
    v = compare_variants(runs, "base")
    assert [v[k].outcome for k in runs] == ["baseline", "better", "worse", "tied"]
    d = v["good"].vs_baseline
    assert d.delta == pytest.approx(v["good"].mean_top1 - v["base"].mean_top1)
    assert d.ci.low > 0 and d.p_adjusted >= d.p_value and d.seeds == 3
    # The interval of a mean over three seeds is Student's t.
    assert v["base"].interval.method == "t" and v["base"].interval.low < 0.8 < \
        v["base"].interval.high
    headers, rows = variant_table(v, {"good": "the good one"})
    assert len(rows[0]) == len(headers) and rows[1][0] == "the good one"
    assert rows[0][5] == "-" and rows[1][-1] == "better"
    assert "<svg" in cost_accuracy_figure(v, "top-1 against MACs", "t")


def test_a_run_without_predictions_is_refused_by_name():
    runs = {"base": seeds_of("base", 0.8), "other": seeds_of("other", 0.8)}
    runs["other"][0].result = {}
    with pytest.raises(ValueError, match="other seed 0 stored no test predictions"):
        compare_variants(runs, "base")
    with pytest.raises(KeyError, match="baseline"):
        compare_variants(runs, "nope")
