"""aux-heads: the two networks differ in the heads alone, the gradient numbers come from the
recorded step curve, the verdict follows accuracy and gradient both ways, and the
experiment runs end to end as a tiny study."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import aux_heads as ah
from archlab.models import create_model
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def numbers(outcome, ratios):
    delta = {"better": 0.01, "worse": -0.01, "tied": 0.001}[outcome]
    return {"variants": {
        ah.BASELINE: {"top1": [0.85], "interval": [0.84, 0.86], "outcome": "baseline",
                      "delta": None, "delta_ci": None, "p_adjusted": None},
        ah.AUX: {"top1": [0.85 + delta], "interval": [0.84, 0.87], "outcome": outcome,
                 "delta": delta, "delta_ci": [delta - 0.004, delta + 0.004],
                 "p_adjusted": 0.01 if outcome != "tied" else 0.5}},
        "gradient": {"ratio": {ah.EARLY: ratios}}}


def test_the_verdict_follows_accuracy_and_gradient():
    verdict, because = ah.decide(numbers("better", [1.4, 1.2, 1.1]))
    assert verdict == HOLDS and "1.40, 1.20, 1.10" in because
    assert ah.decide(numbers("worse", [1.4, 1.2, 1.1]))[0] == DOES_NOT_HOLD
    verdict, because = ah.decide(numbers("tied", [0.8, 0.9, 0.7]))
    assert verdict == DOES_NOT_HOLD and "less gradient" in because
    verdict, because = ah.decide(numbers("tied", [1.4, 1.2, 1.1]))
    assert verdict == INCONCLUSIVE and "more gradient" in because and "tied" in because
    verdict, because = ah.decide(numbers("better", [1.4, 0.9, 1.1]))
    assert verdict == INCONCLUSIVE and "not larger on every seed" in because


def test_the_two_networks_differ_in_the_heads_alone():
    p = ah.protocol("quick", [0])
    kwargs = {m["label"]: m["model_kwargs"] for m in p["models"]}
    assert kwargs[ah.AUX] == {**kwargs[ah.BASELINE], "aux_logits": True}
    nets = {label: create_model("googlenet", num_classes=10, in_chans=1, small_input=True, **kw)
            for label, kw in kwargs.items()}
    heads = {label: [n for n, _ in net.named_children() if n.startswith("aux")
                     and getattr(net, n) is not None] for label, net in nets.items()}
    assert heads == {ah.BASELINE: [], ah.AUX: ["aux1", "aux2"]}
    body = {label: {k: v.shape for k, v in net.state_dict().items() if not k.startswith("aux")}
            for label, net in nets.items()}
    assert body[ah.AUX] == body[ah.BASELINE]
    # Every watched module exists, and the recipe records its gradient.
    assert set(ah.WATCHED) <= set(dict(nets[ah.AUX].named_modules()))
    assert p["recipe"]["grad_norms"] == list(ah.WATCHED) and p["recipe"]["curve_every"] > 0


def curve_run(label, seed, norms, errors):
    steps = list(range(10, 10 * len(norms) + 1, 10))
    columns = {"step": steps, "epoch": [s / 20 for s in steps], "train_error": errors,
               "train_loss": [1.0] * len(steps)}
    columns.update({ah.GRAD + m: [n * k for n in norms] for k, m in enumerate(ah.WATCHED, 1)})
    return SimpleNamespace(label=label, seed=seed, result={"steps": columns})


def test_gradient_numbers_are_means_of_the_recorded_curve():
    runs = {ah.BASELINE: [curve_run(ah.BASELINE, 0, [1.0, 2.0, 3.0], [0.9, 0.5, 0.3])],
            ah.AUX: [curve_run(ah.AUX, 0, [2.0, 4.0, 6.0], [0.8, 0.6, 0.2])]}
    g = ah.gradient_numbers(runs)
    assert g["mean"][ah.BASELINE][ah.EARLY] == [2.0] and g["mean"][ah.AUX][ah.TOP] == [12.0]
    assert g["ratio"][ah.EARLY] == [2.0]
    # Steps 10 and 20 lie in the first epoch (20 steps): the error at step 20.
    assert g["first_epoch_error"] == {ah.BASELINE: [0.5], ah.AUX: [0.6]}


def test_the_full_protocol_parses():
    p = parse_protocol(ah.protocol("full", [0, 1]), source="aux-heads", default_name="a")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == [ah.BASELINE, ah.AUX]


def test_aux_heads_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # A fifth of the digits at 16 px, one epoch, GoogLeNet at a sixteenth of its width, one
    # seed: both networks train in a few seconds and record their gradient every 2 steps.
    monkeypatch.setitem(ah.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1,
                 "train_fraction": 0.3},
        "recipe": {"epochs": 1, "batch_size": 32, "curve_every": 2}, "width": 0.0625,
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("aux-heads", ah.decide, tmp_path, figures=2,
                                           page_shows=("inception5b",))
    grad = record["numbers"]["gradient"]
    assert len(grad["ratio"][ah.EARLY]) == 1 and grad["ratio"][ah.EARLY][0] > 0
    assert len(outcome.rows) == 2 and len(outcome.rows[0]) == len(outcome.headers)


@pytest.mark.parametrize("module", ah.WATCHED)
def test_watched_modules_sit_below_and_above_the_heads(module):
    net = create_model("googlenet", num_classes=10, in_chans=1, small_input=True, width=0.0625,
                       aux_logits=True)
    order = list(dict(net.named_children()))
    taps = [order.index(layer) for layer in net._aux_after]     # inception4a, inception4d
    assert (order.index(module) < min(taps)) == (module != ah.TOP)
