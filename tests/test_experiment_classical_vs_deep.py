"""classical-vs-deep: a verdict that follows ResNet-20's paired test against the pipeline
both ways, the cost question answered from the times, the full protocol valid, and the
experiment run end to end as a tiny study."""
from __future__ import annotations

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments.registry import PARTS
from archlab.experiments import classical_vs_deep as cd
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def entry(outcome, delta):
    if outcome == "baseline":
        return {"top1": [0.84, 0.85], "interval": [0.83, 0.86], "outcome": "baseline",
                "delta": None, "delta_ci": None, "p_adjusted": None}
    significant = outcome != "tied"
    return {"top1": [0.845 + delta] * 2, "interval": [0.835 + delta, 0.855 + delta],
            "outcome": outcome, "delta": delta,
            "delta_ci": [delta - 0.004, delta + 0.004] if significant
            else [delta - 0.01, delta + 0.01], "p_adjusted": 0.001 if significant else 0.5}


def numbers(resnet, lenet="tied", classical_s=10.0):
    deltas = {"better": 0.03, "worse": -0.03, "tied": 0.002}
    return {"variants": {"sift-bovw": entry("baseline", None),
                         "lenet5": entry(lenet, deltas[lenet]),
                         "resnet20": entry(resnet, deltas[resnet])},
            "times": {"sift-bovw": {"train_s": [classical_s] * 2, "test_ms": [0.5, 0.5]},
                      "lenet5": {"train_s": [20.0, 22.0], "test_ms": [0.05, 0.05]},
                      "resnet20": {"train_s": [60.0, 64.0], "test_ms": [0.4, 0.4]}}}


def test_the_verdict_follows_resnets_paired_test():
    verdict, because = cd.decide(numbers("better"))
    assert verdict == HOLDS and "+3.00 [+2.60, +3.40] points" in because
    assert "LeNet-5" in because and "tied with the pipeline" in because
    verdict, because = cd.decide(numbers("worse", lenet="worse"))
    assert verdict == DOES_NOT_HOLD and "hand-designed pipeline is the more accurate" in because
    assert "worse than the pipeline" in because
    verdict, because = cd.decide(numbers("tied"))
    assert verdict == INCONCLUSIVE and "tied" in because


def test_the_cost_question_is_answered_from_the_times():
    assert "the pipeline is the cheapest to fit" in cd.decide(numbers("better"))[1]
    # Slower to fit than LeNet-5: not the cheapest, whatever the accuracy.
    because = cd.decide(numbers("better", classical_s=30.0))[1]
    assert "not the cheapest to fit here" in because


def test_the_three_share_one_split_and_lenet_trains_longer():
    p = cd.protocol("quick", [0, 1])
    labels = [m["label"] for m in p["models"]]
    assert sorted(labels) == sorted(cd.LABELS)
    lenet = next(m for m in p["models"] if m["label"] == "lenet5")
    assert lenet["recipe"]["epochs"] > p["recipe"]["epochs"]
    # The training part of the course starts from the pipeline the networks replaced.
    assert PARTS["How they are trained"][0].name == "classical-vs-deep"


def test_the_full_protocol_parses():
    p = parse_protocol(cd.protocol("full", [0, 1, 2]), source="classical", default_name="c")
    assert p.dataset == "cifar10" and {m.label for m in p.models} == set(cd.LABELS)


def test_classical_vs_deep_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # A fifth of the digits at 16 px, one epoch, one seed, an 8-word vocabulary and a
    # ResNet of one narrow block per stage: each fits in about a second.
    monkeypatch.setitem(cd.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1,
                 "train_fraction": 0.2},
        "recipe": {"epochs": 1, "batch_size": 64}, "lenet_epochs": 1, "vocab_size": 8,
        "resnet_kwargs": {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8},
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("classical-vs-deep", cd.decide, tmp_path,
                                           page_shows=("test time per image",))
    times = record["numbers"]["times"]
    assert set(times) == set(cd.LABELS)
    assert all(t["train_s"][0] > 0 and t["test_ms"][0] > 0 for t in times.values())
    assert len(outcome.rows) == 3 and len(outcome.rows[0]) == len(outcome.headers)
