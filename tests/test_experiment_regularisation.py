"""regularisation: each label switches on exactly its technique, the ten crops are judged on
the augmentation runs with the five comparisons Holm-adjusted together, the verdict follows
the tests both ways, and the experiment runs end to end as a tiny study."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from torch import nn

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import regularisation as rg
from archlab.models import create_model
from archlab.study import parse_protocol
from archlab.study.predictions import encode_predictions
from study_fixtures import run_experiment_twice


def numbers(**outcomes):
    variants = {rg.BASELINE: {"top1": [0.8], "interval": [0.79, 0.81], "outcome": "baseline",
                              "delta": None, "delta_ci": None, "p_adjusted": None}}
    for label in (*rg.TECHNIQUES, rg.ALL):
        outcome = outcomes.get(label.replace("-", "_"), "tied")
        delta = {"better": 0.02, "worse": -0.02, "tied": 0.001}[outcome]
        ci = [delta - 0.005, delta + 0.005] if outcome != "tied" else [-0.01, 0.012]
        variants[label] = {"top1": [0.8 + delta], "interval": [0.79, 0.83], "outcome": outcome,
                           "delta": delta, "delta_ci": ci,
                           "p_adjusted": 0.001 if outcome != "tied" else 0.6}
    return {"variants": variants}


def test_the_verdict_needs_every_technique_better_and_none_worse():
    every = dict(dropout="better", label_smoothing="better", augmentation="better",
                 ten_crop="better")
    verdict, because = rg.decide(numbers(**every))
    assert verdict == HOLDS and "dropout +2.00 [+1.50, +2.50] points" in because
    verdict, because = rg.decide(numbers(**{**every, "label_smoothing": "tied"}))
    assert verdict == INCONCLUSIVE
    assert "Significantly better: dropout, augmentation, ten-crop" in because
    verdict, because = rg.decide(numbers(**{**every, "ten_crop": "worse"}))
    assert verdict == DOES_NOT_HOLD and "Worse with it: ten-crop" in because
    # "All three together" is shown, not judged: its being worse changes nothing.
    assert rg.decide(numbers(**every, all_three="worse"))[0] == HOLDS


def test_each_label_switches_on_exactly_its_technique():
    p = rg.protocol("quick", [0])
    entries = {m["label"]: m for m in p["models"]}
    base = entries[rg.BASELINE]
    assert base["recipe"] == {"augment": "none", "label_smoothing": 0.0}
    assert entries[rg.SMOOTHING]["recipe"] == {**base["recipe"], "label_smoothing": 0.1}
    assert entries[rg.AUGMENT]["recipe"] == {**base["recipe"], "augment": "alexnet"}
    assert entries[rg.DROPOUT]["recipe"] == base["recipe"]
    for label in (rg.SMOOTHING, rg.AUGMENT):
        assert entries[label]["model_kwargs"] == base["model_kwargs"]
    assert entries[rg.ALL]["recipe"] == {"augment": "alexnet", "label_smoothing": 0.1}
    for label, preset in rg.OTHER_AUGMENTS.items():     # each other preset alone
        assert entries[label]["recipe"] == {**base["recipe"], "augment": preset}
        assert entries[label]["model_kwargs"] == base["model_kwargs"]
    assert p["tta"] == ["ten_crop:pad"]   # AlexNet's crops, at the training scale
    drops = {label: [m.p for m in create_model(rg.MODEL, num_classes=10, in_chans=1,
                                               small_input=True, **e["model_kwargs"]).modules()
                     if isinstance(m, nn.Dropout)] for label, e in entries.items()}
    assert drops[rg.BASELINE] == [0.0, 0.0] and drops[rg.DROPOUT] == drops[rg.ALL] == [0.5, 0.5]


def fake_run(label, seed, correct, correct_tta=None):
    target = np.zeros(len(correct), dtype=int)
    pred = np.where(correct, 0, 1)
    tta = None if correct_tta is None else np.where(correct_tta, 0, 1)
    return SimpleNamespace(
        label=label, seed=seed, params=10, macs=20, throughput=None, train_time=None,
        top1=float(np.mean(correct)),
        top1_tta=None if correct_tta is None else float(np.mean(correct_tta)),
        result={"predictions": encode_predictions(target, pred, tta)})


def test_ten_crops_are_judged_on_the_augmentation_runs_and_holm_covers_all_five():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.random((2, n)) < 0.7
    runs = {label: [fake_run(label, s, base[s], base[s]) for s in range(2)]
            for label in (rg.BASELINE, rg.DROPOUT, rg.SMOOTHING, rg.ALL)}
    aug = base | (rng.random((2, n)) < 0.3)         # better than the baseline
    crops = aug | (rng.random((2, n)) < 0.5)        # ten crops better still
    runs[rg.AUGMENT] = [fake_run(rg.AUGMENT, s, aug[s], crops[s]) for s in range(2)]
    judged = rg.judge(runs)
    ten = judged[rg.TEN_CROP]
    assert ten.vs_baseline.delta == pytest.approx(crops.mean() - aug.mean())
    assert ten.outcome == "better" and judged["variants"][rg.AUGMENT].outcome == "better"
    assert judged["variants"][rg.DROPOUT].outcome == "tied"     # identical to the baseline
    # Holm over five: the smallest raw p-value is multiplied by five.
    raw = sorted([ten.vs_baseline.p_value] + [v.vs_baseline.p_value
                                              for v in judged["variants"].values()
                                              if v.vs_baseline is not None])
    adjusted = sorted([ten.vs_baseline.p_adjusted] + [
        v.vs_baseline.p_adjusted for v in judged["variants"].values() if v.vs_baseline])
    assert len(raw) == 5 and adjusted[0] == pytest.approx(min(1.0, 5 * raw[0]))


def test_the_full_protocol_parses():
    p = parse_protocol(rg.protocol("full", [0, 1]), source="regularisation", default_name="r")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == [
        rg.BASELINE, rg.DROPOUT, rg.SMOOTHING, rg.AUGMENT, *rg.OTHER_AUGMENTS, rg.ALL]


def test_regularisation_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # A fifth of the digits at their own 8 px, one epoch, VGG-11 at an eighth of its width
    # with thin fully connected layers, a fifth of the test images, one seed.
    monkeypatch.setitem(rg.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.1,
                 "train_fraction": 0.2, "test_fraction": 0.2},
        "recipe": {"epochs": 1, "batch_size": 64}, "width": 0.125, "fc_dim": 16, "seeds": 1,
        "jobs": 1})
    outcome, record = run_experiment_twice("regularisation", rg.decide, tmp_path, figures=2,
                                           page_shows=("ten-crop",))
    assert set(record["numbers"]["variants"]) == {rg.BASELINE, *rg.TECHNIQUES, rg.ALL,
                                                  *rg.OTHER_AUGMENTS}
    assert "the other augmentation presets: basic" in record["because"]
    assert len(outcome.rows) == 9 and len(outcome.rows[0]) == len(outcome.headers)
