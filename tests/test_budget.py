"""A wall-time budget (train/budget.py): the schedule laid over the minutes, the run ended
when they are spent, a resume that goes on with the time spent, and the recipe's checks.

The clock is a fake one that moves one second per training step (and not at all between),
so that the tests count steps, not seconds: no test here depends on the machine's speed.
"""
from __future__ import annotations

import json

import pytest
import torch

from archlab.train import Recipe, TrainingInterrupted, fit
from archlab.train import checkpoint as ckpt
from archlab.train.budget import TimeBudget
from archlab.train.schedules import one_cycle
from conftest import TINY, StopAt


class FakeClock:
    """Seconds that pass only when `tick` is called."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


class Ticks:
    """Callback: one second per training step; records the learning rate each step used."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.lrs = clock, []

    def on_step_end(self, trainer) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])
        self.clock.tick()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(fake))
    return fake


def recipe(**kw) -> Recipe:
    # digits: 1,295 training images after the 10% hold-out, 20 steps of 64 an epoch.
    base = dict(model="resnet20", epochs=3, budget_minutes=0.5, batch_size=64, lr=0.2,
                model_kwargs=TINY, threads=1, progress=False, precision="fp32",
                channels_last=False, compile=False)
    return Recipe(**{**base, **kw})


def test_the_budget_counts_time_and_leaves_out_what_is_paused(clock):
    b = TimeBudget(1.0)                   # 60 s
    clock.tick(5)                         # the setup: counted, before the schedule starts
    b.begin()
    assert b.start == 5 and b.fraction() == 0
    clock.tick(11)
    assert b.fraction() == pytest.approx(11 / 55)
    with b.paused():
        clock.tick(100)                   # e.g. a benchmark's own test evaluation
    assert b.elapsed() == 16
    b.reserve = 5                         # a validation of 5 s ends the schedule 5 s early
    assert b.fraction() == pytest.approx(11 / 50)
    clock.tick(39)
    assert b.spent() and b.fraction() == 1.0
    again = TimeBudget.resumed(b.state(), 1.0)   # a resumed run, started later
    clock.tick(1000)                      # the time between the two runs is not counted
    again.origin = clock()
    assert again.elapsed() == 55 and again.start == 5 and again.spent()


def test_the_schedule_runs_over_the_budget_and_the_run_ends_with_it(clock):
    ticks = Ticks(clock)
    result = fit(None, "digits", recipe(), verbose=False, callbacks=[ticks])
    # 30 s at one second a step: 30 steps, an epoch of 20 and one ended after 10 by the
    # budget, although the recipe's schedule was written for 3 epochs (60 steps).
    assert [row["step"] for row in result.history] == [20, 30]
    assert len(ticks.lrs) == 30
    # The step at second k is at k/30 of the schedule: the one-cycle's step 2k of 60.
    expected = [one_cycle(2 * k, 60, 0.2)[0] for k in range(30)]
    assert ticks.lrs == pytest.approx(expected)
    assert result.history[-1]["lr"] == pytest.approx(expected[-1])
    assert ticks.lrs[-1] < 0.2 / 100      # the low learning rate at the end was reached


def test_the_validation_time_is_kept_back_for_the_last_row(clock, monkeypatch):
    from archlab.train.trainer import Trainer

    validate = Trainer.evaluate

    def slow_validation(self, data=None):
        clock.tick(4)
        return validate(self, data)

    monkeypatch.setattr(Trainer, "evaluate", slow_validation)
    result = fit(None, "digits", recipe(), verbose=False, callbacks=[Ticks(clock)])
    # The first epoch: 20 steps, then 4 s of validation, which the second keeps back: its
    # steps stop at 26 s (2 steps), and its own validation ends the run at 30 s; then the
    # test images are evaluated, outside the budget (4 s more).
    assert [row["step"] for row in result.history] == [20, 22]
    assert result.test is not None and clock() - 1000 == 30 + 4


def test_off_the_clock_work_does_not_eat_the_budget(clock):
    class Measures:
        def on_epoch_end(self, trainer, row) -> None:
            with trainer.off_the_clock():
                clock.tick(25)            # a benchmark's own evaluation

    result = fit(None, "digits", recipe(), verbose=False, callbacks=[Ticks(clock), Measures()])
    assert [row["step"] for row in result.history] == [20, 30]


def test_a_budget_run_killed_mid_epoch_resumes_to_the_same_weights(clock, tmp_path):
    fit(None, "digits", recipe(), run_dir=tmp_path / "full", verbose=False,
        callbacks=[Ticks(clock)])
    with pytest.raises(TrainingInterrupted):
        fit(None, "digits", recipe(), run_dir=tmp_path / "cut", verbose=False,
            callbacks=[Ticks(clock), StopAt(25)])
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["budget"]["spent"] == 25 and state["budget"]["start"] == 0
    clock.tick(500)                       # a while later: not counted
    result = fit(None, "digits", None, run_dir=tmp_path / "cut", resume=True, verbose=False,
                 callbacks=[Ticks(clock)])
    assert [row["step"] for row in result.history] == [20, 30]
    full, cut = ckpt.read_model(tmp_path / "full")[0], ckpt.read_model(tmp_path / "cut")[0]
    assert full.keys() == cut.keys()
    for name in full:
        assert torch.equal(full[name], cut[name]), name


def test_without_a_budget_the_epochs_decide(clock):
    result = fit(None, "digits", recipe(budget_minutes=None, epochs=2), verbose=False,
                 callbacks=[Ticks(clock)])
    assert [row["step"] for row in result.history] == [20, 40]


@pytest.mark.parametrize("changes, message", [
    ({"budget_minutes": 0}, "budget_minutes must be positive"),
    ({"budget_minutes": -3}, "budget_minutes must be positive"),
    ({"budget_minutes": 10, "fine_tune": True, "pretrained": "x.safetensors"},
     "cannot be combined with fine_tune"),
    ({"budget_minutes": 10, "progressive": {"sizes": [16, 32]}},
     "cannot be combined with progressive"),
])
def test_the_recipe_refuses_a_budget_it_cannot_keep(changes, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**changes)


def test_the_cli_takes_a_budget(tmp_path):
    from archlab.cli import main

    # The real clock: a budget of 0.6 s, which the setup may spend before the first step,
    # still trains one step and writes the run.
    assert main(["train", "--model", "resnet20", "--data", "digits", "--budget-minutes",
                 "0.01", "--batch-size", "64", "--set", "model_kwargs={layers: [1,1,1], "
                 "widths: [8,16,32], stem_width: 8}", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    saved = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert saved["recipe"]["budget_minutes"] == 0.01 and saved["step"] >= 1
    assert saved["budget"]["minutes"] == 0.01 and saved["budget"]["spent"] > 0
