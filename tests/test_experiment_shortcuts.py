"""shortcuts: a verdict that follows the paired tests' outcomes both ways, the protocol
picks each unit by name, and the experiment runs end to end as a tiny study."""
from __future__ import annotations

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import shortcuts
from archlab.models.resnet import UNITS
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def numbers(b, c, d, e):
    outcome = {"a": "baseline", "b": b, "c": c, "d": d, "e": e}
    sign = {"baseline": 0.0, "better": 1.0, "worse": -1.0, "tied": 0.1}
    return {"outcome": outcome, "delta": {k: sign[v] for k, v in outcome.items()}}


def test_the_verdict_follows_the_paired_tests():
    verdict, because = shortcuts.decide(numbers("worse", "worse", "tied", "tied"))
    assert verdict == HOLDS and "(b) worse, -1.00 points" in because
    assert shortcuts.decide(numbers("worse", "worse", "tied", "better"))[0] == HOLDS
    # (d) is not judged: whatever it does, the verdict is the same.
    assert shortcuts.decide(numbers("worse", "worse", "worse", "better"))[0] == HOLDS
    # Ties where the paper sees a difference: this scale cannot tell.
    verdict, because = shortcuts.decide(numbers("tied", "worse", "tied", "tied"))
    assert verdict == INCONCLUSIVE and "(b) cannot be told" in because
    assert shortcuts.decide(numbers("tied", "tied", "tied", "tied"))[0] == INCONCLUSIVE
    # Contradictions: (b) better than the original, or (e) worse.
    verdict, because = shortcuts.decide(numbers("better", "worse", "tied", "tied"))
    assert verdict == DOES_NOT_HOLD and "for (b)" in because
    assert shortcuts.decide(numbers("worse", "worse", "tied", "worse"))[0] == DOES_NOT_HOLD


def test_the_protocol_trains_every_unit_of_figure_4():
    proto = shortcuts.protocol("quick", [0, 1])
    assert [m["model_kwargs"]["unit"] for m in proto["models"]] == list(UNITS)
    assert [m["label"] for m in proto["models"]] == ["a", "b", "c", "d", "e"]
    full = shortcuts.protocol("full", [0, 1, 2])
    assert full["models"][0]["name"] == "resnet110" and full["data"]["dataset"] == "cifar10"
    assert parse_protocol(full, source="test") is not None


def test_shortcuts_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(shortcuts.SETTINGS, "quick", {
        "model": "resnet20",
        "data": {"dataset": "digits", "val_fraction": 0.1, "train_fraction": 0.2,
                 "test_fraction": 0.3},
        "recipe": {"epochs": 1, "batch_size": 64, "lr": 0.05, "milestones": [0.5, 0.75],
                   "curve_every": 2},
        "augment": "none", "seeds": 2, "jobs": 1})
    _, record = run_experiment_twice("shortcuts", shortcuts.decide, tmp_path, figures=2, page_shows=('6.37',))
    assert record["numbers"]["outcome"]["a"] == "baseline"
    assert set(record["numbers"]["outcome"]) == set("abcde")
    assert all(len(v) == 2 for v in record["numbers"]["top1"].values())
