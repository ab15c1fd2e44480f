"""staged-vgg: a verdict that follows the paired test and the steps to the threshold both
ways, the second stage really starting from A, the full protocol valid, and the experiment
run end to end as a tiny study."""
from __future__ import annotations

import torch

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import staged_vgg as sv
from archlab.study import open_store, parse_protocol
from archlab.train import load_trained
from study_fixtures import run_experiment_twice


def numbers(outcome, staged_steps, scratch_steps):
    delta = {"better": 0.02, "worse": -0.02, "tied": 0.001}[outcome]
    significant = outcome != "tied"
    return {
        "variants": {
            "E-scratch": {"top1": [0.85, 0.86], "interval": [0.84, 0.87],
                          "outcome": "baseline", "delta": None, "delta_ci": None,
                          "p_adjusted": None},
            "E-staged": {"top1": [0.855 + delta] * 2,
                         "interval": [0.845 + delta, 0.865 + delta], "outcome": outcome,
                         "delta": delta, "delta_ci": [delta - 0.005, delta + 0.005]
                         if significant else [delta - 0.01, delta + 0.01],
                         "p_adjusted": 0.01 if significant else 0.6}},
        "threshold": 0.25, "total_steps": 400.0,
        "reached": {"E-staged": staged_steps, "E-scratch": scratch_steps},
        "budget": {"E-staged": [270, 270], "E-scratch": [270, 270]}}


def test_the_verdict_follows_accuracy_then_speed():
    assert sv.decide(numbers("better", [100, 120], [60, 70]))[0] == HOLDS
    verdict, because = sv.decide(numbers("worse", [30, 40], [60, 70]))
    assert verdict == DOES_NOT_HOLD and "from scratch is the more accurate" in because
    # Tied in accuracy: the steps to the threshold decide.
    verdict, because = sv.decide(numbers("tied", [30, 40], [60, 70]))
    assert verdict == HOLDS and "learns sooner" in because
    verdict, because = sv.decide(numbers("tied", [100, 120], [60, 70]))
    assert verdict == DOES_NOT_HOLD and "its own initialisation trains it" in because
    # A scratch run that never gets there counts at its length: the staged E is sooner.
    verdict, because = sv.decide(numbers("tied", [100, 120], [None, 70]))
    assert verdict == HOLDS and "1 E-scratch run(s) never got there" in because
    # Neither E learned: nothing to compare.
    verdict, because = sv.decide(numbers("tied", [None, None], [None, None]))
    assert verdict == INCONCLUSIVE and "neither E reached" in because
    # Faster on average, but a staged run never got there while every scratch run did.
    assert sv.decide(numbers("tied", [None, 20], [260, 260]))[0] == INCONCLUSIVE


def test_the_stages_share_a_recipe_and_the_second_names_its_source():
    first = sv.protocol("quick", [0, 1])
    second = sv.protocol("quick", [0, 1], {1: "/runs/a-s1"})
    assert {m["label"] for m in first["models"]} == {"A", "E-scratch"}
    assert second["seeds"] == [1] and second["recipe"] == first["recipe"]
    (staged,) = second["models"]
    assert staged["recipe"] == {"init_from": "/runs/a-s1"}
    scratch = next(m for m in first["models"] if m["label"] == "E-scratch")
    assert staged["name"] == scratch["name"] == "vgg19"
    assert staged["model_kwargs"] == scratch["model_kwargs"]


def test_the_full_protocol_parses():
    p = parse_protocol(sv.protocol("full", [0, 1, 2]), source="staged", default_name="s")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == ["E-scratch", "A"]


def test_staged_vgg_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # The digits at 16 px, one epoch of each net at width 1/16; two seeds, so that each
    # seed's E starts from its own A.
    monkeypatch.setitem(sv.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1,
                 "train_fraction": 0.3},
        "recipe": {"epochs": 1, "batch_size": 64, "curve_every": 4}, "shallow_epochs": 1,
        "width": 0.0625, "seeds": 2, "jobs": 1})
    outcome, record = run_experiment_twice("staged-vgg", sv.decide, tmp_path,
                                           page_shows=("train error",))
    n = record["numbers"]
    assert set(n["reached"]) == {"A", "E-scratch", "E-staged"}
    assert all(len(steps) == 2 for steps in n["reached"].values())   # one run per seed
    assert 0 < n["a_cost"] < 1 and n["total_steps"] > 0
    # The threshold is what A reached: every A run gets there by its last step.
    assert n["reached"]["A"][0] is not None and 0 < n["threshold"] <= 1
    assert len(outcome.rows) == 3 and len(outcome.rows[0]) == len(outcome.headers)
    # The staged E started from its A: before training, its conv1_1 was A's trained one.
    store = open_store(tmp_path / "staged-vgg" / "study" / "study.db")
    runs = {r.label: r for r in store.runs()}
    study = tmp_path / "staged-vgg" / "study"
    a, _ = load_trained(study / runs["A"].run_dir, "cpu")
    staged, _ = load_trained(study / runs["E-staged"].run_dir, "cpu")
    scratch, _ = load_trained(study / runs["E-scratch"].run_dir, "cpu")
    near = torch.dist(staged.features.conv1_1.weight, a.features.conv1_1.weight)
    far = torch.dist(scratch.features.conv1_1.weight, a.features.conv1_1.weight)
    assert near < far
