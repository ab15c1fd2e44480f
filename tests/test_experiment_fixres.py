"""fixres: a verdict that needs both "as accurate" (paired test) and "less training time",
the three schedules differing only in their sides, the full protocol valid, and the
experiment run end to end as a tiny study."""
from __future__ import annotations

from archlab.experiments import DOES_NOT_HOLD, HOLDS
from archlab.experiments import fixres as fr
from archlab.study import parse_protocol
from archlab.train import Recipe
from archlab.train.progressive import ProgressivePlan
from study_fixtures import run_experiment_twice


def entry(outcome, delta):
    if outcome == "baseline":
        return {"top1": [0.86, 0.87], "interval": [0.85, 0.88], "outcome": "baseline",
                "delta": None, "delta_ci": None, "p_adjusted": None}
    significant = outcome != "tied"
    return {"top1": [0.865 + delta] * 2, "interval": [0.855 + delta, 0.875 + delta],
            "outcome": outcome, "delta": delta,
            "delta_ci": [delta - 0.004, delta + 0.004] if significant
            else [delta - 0.01, delta + 0.01], "p_adjusted": 0.001 if significant else 0.5}


def numbers(low_high, low_high_s=40.0):
    deltas = {"better": 0.01, "worse": -0.02, "tied": -0.001}
    return {"variants": {"high": entry("baseline", None),
                         "low->high": entry(low_high, deltas[low_high]),
                         "low": entry("worse", -0.03)},
            "train_s": {"high": [100.0, 104.0], "low->high": [low_high_s] * 2,
                        "low": [30.0, 31.0]}}


def test_the_verdict_needs_accuracy_and_less_time():
    verdict, because = fr.decide(numbers("tied"))
    assert verdict == HOLDS and "tied for less training" in because
    assert "0.39x the training time" in because and "worse than high" in because
    assert fr.decide(numbers("better"))[0] == HOLDS
    verdict, because = fr.decide(numbers("worse"))
    assert verdict == DOES_NOT_HOLD and "does not catch up" in because
    # As accurate, but no cheaper: the claim is about the saving.
    verdict, because = fr.decide(numbers("better", low_high_s=110.0))
    assert verdict == DOES_NOT_HOLD and "not cheaper" in because


def test_the_schedules_differ_only_in_their_sides():
    p = fr.protocol("quick", [0])
    models = {m["label"]: m for m in p["models"]}
    assert {k: m["model_kwargs"] for k, m in models.items()} == {
        k: fr.SETTINGS["quick"]["model_kwargs"] for k in fr.LABELS}
    sizes = fr.sizes("quick")
    assert sizes["high"] == sizes["low->high"] > sizes["low"]
    # low -> high: the low side for every epoch but the last, then the high one.
    recipe = Recipe.from_dict({**p["recipe"], **models["low->high"]["recipe"]})
    plan = ProgressivePlan.from_recipe(recipe)
    epochs = p["recipe"]["epochs"]
    assert plan.sizes(epochs, sizes["high"]) == [sizes["low"]] * (epochs - 1) + [sizes["high"]]


def test_the_full_protocol_parses():
    p = parse_protocol(fr.protocol("full", [0, 1, 2]), source="fixres", default_name="f")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == list(fr.LABELS)


def test_fixres_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # The digits, 8 px then 16, two epochs, a ResNet of one block per stage, one seed.
    monkeypatch.setitem(fr.SETTINGS, "quick", {
        "data": {"dataset": "digits", "val_fraction": 0.1, "train_fraction": 0.3},
        "recipe": {"epochs": 2, "batch_size": 64}, "low": 8, "high": 16,
        "model_kwargs": {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8},
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("fixres", fr.decide, tmp_path,
                                           page_shows=("training time, s",))
    assert set(record["numbers"]["train_s"]) == set(fr.LABELS)
    assert len(outcome.rows) == 3 and len(outcome.rows[0]) == len(outcome.headers)
