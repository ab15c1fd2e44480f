"""The verdict of a study from its runs' per-image predictions: ranks with ties, intervals
in the table and the CSV, the sentences, and the refusals (no predictions, another test
set). Runs are made up here, so the expected answers are known."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from archlab.study.predictions import encode_predictions
from archlab.study.schema import Run
from archlab.study.stats import binomial_interval, mean_interval
from archlab.study.summary import summarize
from archlab.study.table import TABLE_HEADERS, print_results, summary_csv, table_rows
from archlab.study.verdict import judge

N = 2000
RNG = np.random.default_rng(0)
TARGET = RNG.integers(0, 10, N)
HARD = RNG.random(N)          # an image's difficulty: a model of skill s gets it right below s


def _run(label: str, seed: int, skill: float, *, predictions: bool = True,
         target=TARGET, fingerprint: str = "fp") -> Run:
    right = HARD < skill
    pred = np.where(right, target, (target + 1) % 10)
    result = {"test_images": len(target), "family": "resnet",
              "test_fingerprint": {"fingerprint": fingerprint, "images": len(target)}}
    if predictions:
        result["predictions"] = encode_predictions(target, pred)
    return Run(key=f"{label}-{seed}", protocol_hash="h", position=0, label=label,
               model="resnet20", seed=seed, entry={"name": "resnet20", "label": label},
               status="done", top1=float(right.mean()), train_time=10.0 + seed,
               result=result)


def test_one_seed_ties_and_a_clear_loser():
    runs = [_run("a", 0, 0.900), _run("b", 0, 0.897), _run("c", 0, 0.80)]
    summaries = summarize(runs)
    verdict = judge(summaries)
    assert verdict.order == ["a", "b", "c"] and verdict.tested
    assert verdict.tied == ["b"]
    assert verdict.ranks() == {"a": "1", "b": "=1", "c": "3"}
    # b differs from a on a handful of images only (too few for McNemar's exact test to
    # call it, whatever the bootstrap says); c on 200, all the same way.
    few = int(((HARD < 0.9) & (HARD >= 0.897)).sum())
    assert 0 < few < 6
    assert verdict.vs_best("b").a_only == 0 and verdict.vs_best("b").b_only == few
    assert verdict.vs_best("b").p_value == pytest.approx(2 / 2 ** few)
    assert verdict.vs_best("c").delta == pytest.approx(-0.1, abs=0.01)
    text = " ".join(verdict.sentences())
    assert "Tied with #1, a: b" in text and "Significantly below #1: c" in text
    assert "One seed" in text and "2,000 test images" in text and "3 pairs" in text
    # One seed: the interval is Wilson's on the run's images.
    ci = summaries[0].interval()
    assert (ci.low, ci.high) == pytest.approx(tuple(
        getattr(binomial_interval(round(runs[0].top1 * N), N), k) for k in ("low", "high")))
    rows = table_rows(summaries, verdict)
    assert [r[0] for r in rows] == ["1", "=1", "3"]
    col = TABLE_HEADERS.index("top-1 % [95% CI]")
    assert rows[0][col] == f"{100 * runs[0].top1:.2f} [{100 * ci.low:.2f}, {100 * ci.high:.2f}]"


def test_several_seeds_use_t_intervals_and_pool_the_images():
    runs = [_run(m, s, skill + 0.003 * s) for m, skill in (("a", 0.9), ("b", 0.85))
            for s in range(3)]
    summaries = summarize(runs)
    verdict = judge(summaries)
    assert verdict.seeds == 3 and verdict.tied == []
    ci = summaries[0].interval()
    ref = mean_interval([r.top1 for r in runs if r.label == "a"])
    assert (ci.method, ci.low, ci.high) == ("t", ref.low, ref.high)
    assert verdict.vs_best("b").a_only == 0
    assert verdict.vs_best("b").b_only == sum(int(((HARD < 0.9 + 0.003 * s) &
                                                   ~(HARD < 0.85 + 0.003 * s)).sum())
                                              for s in range(3))
    assert "pooled over 3 seeds" in " ".join(verdict.sentences())
    rows = list(csv.DictReader(io.StringIO(summary_csv(summaries, verdict))))
    assert rows[0]["rank"] == "1" and rows[0]["top1_ci_method"] == "t"
    assert float(rows[0]["top1_ci_low"]) == pytest.approx(ref.low)
    assert rows[1]["tied_with_best"] == "False"
    assert float(rows[1]["p_vs_best_adjusted"]) < 1e-10
    assert float(rows[1]["train_time_sd"]) == pytest.approx(1.0)


def test_no_predictions_or_another_test_set_means_no_paired_test(capsys):
    old = [_run("a", 0, 0.9, predictions=False), _run("b", 0, 0.8, predictions=False)]
    verdict = judge(summarize(old))
    assert not verdict.tested and verdict.ranks() == {"a": "1", "b": "2"}
    assert "older archlab" in verdict.sentences()[0]
    other = [_run("a", 0, 0.9), _run("b", 0, 0.8, fingerprint="another")]
    verdict = judge(summarize(other))
    assert not verdict.tested and not verdict.same_images
    assert "not all judged on the same test images" in verdict.sentences()[0]
    print_results(other)
    out = capsys.readouterr().out
    assert "Wilson" in out and "same test images" in out
