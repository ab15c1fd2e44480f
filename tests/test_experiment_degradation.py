"""degradation: the final training error read off a curve, a verdict that follows the gaps
both ways, and the experiment run end to end as a tiny study on the digits."""
from __future__ import annotations

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import degradation
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def numbers(plain20, plain56, resnet20, resnet56):
    return {"final_train_error": {"plain20": plain20, "plain56": plain56,
                                  "resnet20": resnet20, "resnet56": resnet56}}


def test_final_error_is_the_mean_of_the_last_tenth():
    assert degradation.final_error([0.9] * 18 + [0.2, 0.4]) == pytest.approx(0.3)
    # A short curve still has its last value.
    assert degradation.final_error([0.5, 0.25]) == 0.25


def test_the_verdict_follows_the_gaps():
    # The paper's picture: plain-56 worse than plain-20, ResNet-56 better than ResNet-20.
    verdict, because = degradation.decide(numbers(
        [0.10, 0.11, 0.09], [0.20, 0.22, 0.19], [0.08, 0.09, 0.08], [0.06, 0.07, 0.06]))
    assert verdict == HOLDS and "even trains better" in because and "[" in because
    # ResNet-56 tied with ResNet-20 (its gap's interval holds 0): still no degradation.
    assert degradation.decide(numbers(
        [0.10, 0.11, 0.09], [0.20, 0.22, 0.19], [0.08, 0.09, 0.08], [0.09, 0.08, 0.08]
    ))[0] == HOLDS
    # No degradation: the deeper plain net trains better.
    verdict, because = degradation.decide(numbers(
        [0.20, 0.22, 0.19], [0.10, 0.11, 0.09], [0.08, 0.09, 0.08], [0.06, 0.07, 0.06]))
    assert verdict == DOES_NOT_HOLD and "no degradation" in because
    # The deeper ResNet trains worse too: the shortcuts did not fix it.
    verdict, because = degradation.decide(numbers(
        [0.10, 0.11, 0.09], [0.20, 0.22, 0.19], [0.08, 0.09, 0.08], [0.15, 0.16, 0.15]))
    assert verdict == DOES_NOT_HOLD and "ResNet trains worse too" in because
    # One seed each way on the plain nets: the interval holds 0.
    verdict, because = degradation.decide(numbers(
        [0.10, 0.20, 0.15], [0.20, 0.10, 0.16], [0.08, 0.09, 0.08], [0.08, 0.09, 0.08]))
    assert verdict == INCONCLUSIVE and "holds 0" in because


def test_one_seed_decides_by_its_gaps_and_says_so():
    verdict, because = degradation.decide(numbers([0.1], [0.2], [0.1], [0.08]))
    assert verdict == HOLDS and "one seed" in because
    assert degradation.decide(numbers([0.2], [0.1], [0.1], [0.08]))[0] == DOES_NOT_HOLD


def test_the_full_protocol_is_the_papers_schedule():
    proto = parse_protocol(degradation.protocol("full", [0, 1, 2]), source="test")
    entry = degradation.protocol("full", [0])
    assert entry["recipe"]["milestones"] == [91, 136.5] and entry["recipe"]["lr"] == 0.1
    assert entry["data"]["dataset"] == "cifar10"
    assert [m["name"] for m in entry["models"]] == ["plain20", "plain56", "resnet20", "resnet56"]
    assert proto is not None


def test_degradation_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # A fifth of the digits at 8 px, one epoch: a second or two per run.
    monkeypatch.setitem(degradation.SETTINGS, "quick", {
        "data": {"dataset": "digits", "val_fraction": 0.1, "train_fraction": 0.2,
                 "test_fraction": 0.3},
        "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05, "milestones": [0.5, 0.75],
                   "curve_every": 2},
        "augment": "none", "seeds": 2, "jobs": 1})
    _, record = run_experiment_twice("degradation", degradation.decide, tmp_path, figures=2)
    assert record["numbers"]["seeds"] == [0, 1]
    assert len(record["numbers"]["final_train_error"]["plain56"]) == 2
    assert all(v is not None for v in record["numbers"]["final_val_error"]["resnet56"])
