"""relu-vs-tanh: steps to a training error read off a curve, a verdict that follows the
numbers both ways, and the experiment run end to end as a tiny study on the digits."""
from __future__ import annotations

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, list_experiments
from archlab.experiments import relu_vs_tanh
from archlab.experiments.training import steps_to_reach
from study_fixtures import run_experiment_twice


def numbers(relu, tanh, budget=1000):
    return {"relu": relu, "tanh": tanh, "budget": budget, "threshold": 0.25}


def test_steps_to_reach_is_the_first_step_at_or_below_the_threshold():
    steps, error = [10, 20, 30, 40, 50], [0.9, 0.5, 0.3, 0.25, 0.1]
    assert steps_to_reach(steps, error, 0.25) == 40
    assert steps_to_reach(steps, error, 0.95) == 10
    # A curve that never gets there has no step count.
    assert steps_to_reach(steps, error, 0.05) is None


def test_the_verdict_follows_the_ratio():
    verdict, because = relu_vs_tanh.decide(numbers([100, 110, 90], [600, 650, 560]))
    assert verdict == HOLDS and "6x" in because and "[" in because
    # ReLU faster, but by less than the paper's factor: the direction still holds.
    verdict, because = relu_vs_tanh.decide(numbers([100, 110, 90], [150, 160, 140]))
    assert verdict == HOLDS and "less than the paper's factor" in because
    assert relu_vs_tanh.decide(numbers([300, 310, 290], [100, 120, 90]))[0] == DOES_NOT_HOLD
    # One seed faster each way: the interval holds 1.
    assert relu_vs_tanh.decide(numbers([100, 200, 150], [200, 100, 160]))[0] == INCONCLUSIVE


def test_one_seed_decides_by_its_ratio_and_says_so():
    verdict, because = relu_vs_tanh.decide(numbers([100], [300]))
    assert verdict == HOLDS and "one seed" in because
    assert relu_vs_tanh.decide(numbers([300], [100]))[0] == DOES_NOT_HOLD


def test_runs_that_never_reach_the_threshold():
    # tanh never got there: the budget is a lower bound on its steps, which shows the claim.
    verdict, because = relu_vs_tanh.decide(numbers([100, 110, 90], [None, None, 800]))
    assert verdict == HOLDS and "lower bound" in because
    # ...but a lower bound barely above 1 (ReLU near the budget too) cannot show it.
    assert relu_vs_tanh.decide(numbers([900, 950, 990], [None, None, None]))[0] == INCONCLUSIVE
    # ReLU never got there while tanh always did: the claim fails.
    verdict, because = relu_vs_tanh.decide(numbers([None, 100, 100], [200, 200, 200]))
    assert verdict == DOES_NOT_HOLD and "never reached" in because
    # Neither got there in every run: the budget was too short to say.
    assert relu_vs_tanh.decide(numbers([None, 100, 100], [None, 200, 200]))[0] == INCONCLUSIVE


def test_relu_vs_tanh_is_the_first_architecture_claim():
    # The course starts with what a convolution is; AlexNet's ReLU is its first claim about
    # an architecture, and the first experiment that trains.
    names = [e.name for e in list_experiments()]
    assert names[:2] == ["conv-mechanics", "relu-vs-tanh"]
    assert next(e for e in list_experiments() if e.trains).name == "relu-vs-tanh"


def test_relu_vs_tanh_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # The digits at 16 px, one epoch: a few seconds per run.
    monkeypatch.setitem(relu_vs_tanh.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1},
        "recipe": {"epochs": 1, "batch_size": 32}, "seeds": 2, "jobs": 1, "threshold": 0.5})
    # Its page, and a second run that resumes the study: nothing trained twice, the same
    # numbers back.
    _, record = run_experiment_twice("relu-vs-tanh", relu_vs_tanh.decide, tmp_path)
    assert record["numbers"]["seeds"] == [0, 1] and len(record["numbers"]["tanh"]) == 2
