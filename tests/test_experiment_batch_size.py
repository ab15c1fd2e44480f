"""batch-size: the verdict follows the paired tests both ways, the learning rate grows with
the batch at equal epochs, the full protocol is valid, and the experiment runs end to end
as a tiny study."""
from __future__ import annotations

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import batch_size as bs
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def numbers(deltas, outcomes, baseline=32, batches=(8, 32, 128, 512)):
    variants = {}
    for b in batches:
        d = deltas.get(b)
        top1 = 0.85 + (d or 0.0)
        variants[bs.label(b)] = {
            "top1": [top1] * 3, "interval": [top1 - 0.005, top1 + 0.005],
            "outcome": outcomes.get(b, "baseline"), "delta": d,
            "delta_ci": None if d is None else [d - 0.004, d + 0.004],
            "p_adjusted": None if d is None else (0.5 if outcomes[b] == "tied" else 0.001)}
    return {"variants": variants, "batch_sizes": list(batches), "baseline": baseline}


def test_the_verdict_follows_the_paired_tests():
    n = numbers({8: -0.002, 128: -0.003, 512: -0.04}, {8: "tied", 128: "tied", 512: "worse"})
    verdict, because = bs.decide(n)
    assert verdict == HOLDS and "B = 512 is worse" in because and "128 tied" in because
    n = numbers({8: -0.01, 128: 0.015, 512: -0.02}, {8: "worse", 128: "better", 512: "worse"})
    verdict, because = bs.decide(n)
    assert verdict == DOES_NOT_HOLD and "B = 128 beats" in because
    n = numbers({8: -0.01, 128: 0.001, 512: -0.003}, {8: "worse", 128: "tied", 512: "tied"})
    assert bs.decide(n)[0] == INCONCLUSIVE


def test_the_baseline_is_the_best_small_batch():
    assert bs.best_small({8: [0.80, 0.82], 32: [0.84, 0.83], 128: [0.9, 0.9]}) == 32
    with pytest.raises(ValueError, match="no batch size of 32 or less"):
        bs.best_small({64: [0.8]})


def test_the_rate_grows_with_the_batch_at_equal_epochs():
    p = parse_protocol(bs.protocol("quick", [0]), source="bs", default_name="bs")
    recipes = {e.label: p.recipe_for(e, 0) for e in p.models}
    assert [r.batch_size for r in recipes.values()] == [8, 32, 128, 512]
    assert {r.epochs for r in recipes.values()} == {bs.SETTINGS["quick"]["epochs"]}
    # lr / batch is the same for all: the rate per image is fixed.
    assert len({round(r.lr / r.batch_size, 12) for r in recipes.values()}) == 1
    assert recipes[bs.label(32)].lr == bs.SETTINGS["quick"]["lr"]


def test_the_full_protocol_parses():
    p = parse_protocol(bs.protocol("full", [0, 1, 2]), source="bs", default_name="bs")
    assert p.dataset == "cifar10" and len(p.models) == 5


def test_batch_size_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # A fifth of the digits at their own 8 px, batches of 8 and 64, one epoch, one seed,
    # tiny widths: two runs of about a second each.
    monkeypatch.setitem(bs.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.1,
                 "train_fraction": 0.2},
        "batch_sizes": (8, 64), "epochs": 1, "lr": 0.05,
        "model_kwargs": {"layers": [1, 1, 1], "widths": [8, 8, 16], "stem_width": 8},
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("batch-size", bs.decide, tmp_path,
                                           page_shows=("B = 64 (lr 0.1)",))
    assert record["numbers"]["baseline"] == 8
    assert len(outcome.rows) == 2 and len(outcome.rows[0]) == len(outcome.headers)
