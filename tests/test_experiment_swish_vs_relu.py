"""swish-vs-relu: a verdict that follows the paired test both ways, the activation really
swapped, the full protocol valid, and the experiment run end to end as a tiny study."""
from __future__ import annotations

from torch import nn

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, list_experiments
from archlab.experiments import swish_vs_relu as sr
from archlab.models import create_model
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def numbers(outcome, delta=0.01):
    significant = outcome != "tied"
    return {"variants": {
        "relu": {"top1": [0.85, 0.86, 0.84], "interval": [0.83, 0.87], "outcome": "baseline",
                 "delta": None, "delta_ci": None, "p_adjusted": None},
        "swish": {"top1": [0.85 + delta] * 3, "interval": [0.84 + delta, 0.86 + delta],
                  "outcome": outcome, "delta": delta,
                  "delta_ci": [delta - 0.004, delta + 0.004] if significant
                  else [delta - 0.01, delta + 0.01],
                  "p_adjusted": 0.001 if significant else 0.4}}}


def test_the_verdict_follows_the_paired_test():
    verdict, because = sr.decide(numbers("better", 0.012))
    assert verdict == HOLDS and "+1.20 [+0.80, +1.60] points" in because
    assert "smaller gain" not in because
    # Better, but by less than the paper's smallest gain: the direction still holds.
    verdict, because = sr.decide(numbers("better", 0.003))
    assert verdict == HOLDS and "smaller gain than the paper's" in because
    verdict, because = sr.decide(numbers("worse", -0.01))
    assert verdict == DOES_NOT_HOLD and "ReLU is the more accurate" in because
    verdict, because = sr.decide(numbers("tied", 0.002))
    assert verdict == INCONCLUSIVE and "tied" in because


def test_the_two_networks_differ_only_in_the_activation():
    p = sr.protocol("quick", [0])
    kwargs = {m["label"]: m["model_kwargs"] for m in p["models"]}
    assert kwargs["relu"] == {**kwargs["swish"], "act": "relu"}
    built = {label: create_model("efficientnet_b0", num_classes=10, in_chans=1,
                                 small_input=True, **kw) for label, kw in kwargs.items()}
    kinds = {label: {type(m) for m in net.modules() if isinstance(m, (nn.ReLU, nn.SiLU))}
             for label, net in built.items()}
    # Every activation swapped, the squeeze-excitation's included: no SiLU left in ReLU's.
    assert kinds == {"relu": {nn.ReLU}, "swish": {nn.SiLU}}
    n_params = {label: sum(t.numel() for t in net.parameters()) for label, net in built.items()}
    assert n_params["relu"] == n_params["swish"]


def test_swish_vs_relu_comes_last_after_compound_scaling():
    names = [e.name for e in list_experiments()]
    assert names.index("swish-vs-relu") > names.index("compound-scaling")


def test_the_full_protocol_parses():
    p = parse_protocol(sr.protocol("full", [0, 1, 2]), source="swish", default_name="s")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == ["relu", "swish"]


def test_swish_vs_relu_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # A fifth of the digits at their own 8 px, one epoch, B0 at an eighth of its width, one
    # seed: a run is about a second of training and several of starting and measuring.
    monkeypatch.setitem(sr.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.1,
                 "train_fraction": 0.2},
        "recipe": {"epochs": 1, "batch_size": 128}, "width": 0.125, "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("swish-vs-relu", sr.decide, tmp_path)
    assert record["numbers"]["seeds"] == [0]
    assert len(record["numbers"]["variants"]["swish"]["top1"]) == 1
    assert len(outcome.rows) == 2 and len(outcome.rows[0]) == len(outcome.headers)
