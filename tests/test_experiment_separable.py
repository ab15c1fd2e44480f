"""separable: the counted costs of single convolutions and of MobileNet's knobs, a verdict
that follows the numbers both ways, and the experiment run end to end on the digits."""
from __future__ import annotations

import pytest

from archlab.analysis import profile
from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import separable
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def test_counted_convolutions_equal_the_formula_exactly():
    standard, sep = separable.conv_macs(32, 64, 3, size=7)
    # Hand count: 3·3·32·64·49 for the standard one; 3·3·32·49 + 32·64·49 separable.
    assert standard == 9 * 32 * 64 * 49 and sep == 9 * 32 * 49 + 32 * 64 * 49
    convs = separable.conv_table(channels=(16, 64, 1024), kernels=(3, 5))
    assert len(convs) == 6
    for c in convs:
        assert c["separable"] / c["standard"] == pytest.approx(1 / c["n"] + 1 / c["k"] ** 2,
                                                               rel=1e-12)


def test_whole_mobilenet_with_standard_convolutions_is_table_4():
    sep, standard = separable.full_conv_cost()
    # Table 4: 569 M multiply-adds separable, 4866 M with standard convolutions.
    assert round(sep / 1e6) == 569 and abs(standard / 1e6 - 4866) < 2


def test_the_knobs_cost_the_papers_numbers():
    cost = separable.knob_costs()
    assert [round(m / 1e6) for m in cost["alpha"]["macs"]] == [569, 325, 149, 41]
    assert [round(m / 1e6) for m in cost["rho"]["macs"]] == [569, 418, 291, 186]
    assert 1.8 < separable.exponent(cost["alpha"]["multipliers"], cost["alpha"]["macs"]) < 2
    assert separable.exponent([1, 0.5], [100, 25]) == pytest.approx(2)
    assert separable.exponent([1, 0.5, 0.25], [100, 50, 25]) == pytest.approx(0.5 / 0.5 * 1,
                                                                              rel=0.3)


def step(a, b, delta, significant):
    return {"from": a, "to": b, "delta": delta, "low": delta - 0.01, "high": delta + 0.01,
            "p": 0.001 if significant else 0.5, "significant": significant}


def numbers(convs=None, alpha_cost=(100, 56, 25, 6.25), steps=None, overall=None):
    convs = convs or separable.conv_table(channels=(64, 1024), kernels=(3,))
    steps = steps or [step("a", "b", -0.01, False), step("b", "c", -0.02, True)]
    overall = overall or {"delta": -0.05, "low": -0.06, "high": -0.04, "p": 0.001,
                          "significant": True}
    acc = {"labels": ["a", "b", "c"], "steps": steps, "overall": overall}
    return {"convs": convs,
            "cost": {"alpha": {"multipliers": [1, 0.75, 0.5, 0.25], "macs": list(alpha_cost)},
                     "rho": {"multipliers": [1, 0.5], "macs": [100, 25]}},
            "accuracy": {"alpha": acc, "rho": acc}}


def test_the_verdict_follows_the_numbers():
    verdict, because = separable.decide(numbers())
    assert verdict == HOLDS and "exactly" in because and "α^2.0" in because
    # A count off the formula by one multiply-add breaks the exact identity.
    convs = separable.conv_table(channels=(64,), kernels=(3,))
    convs[0]["separable"] += 1
    assert separable.decide(numbers(convs=convs))[0] == DOES_NOT_HOLD
    # Cost linear in α is not "about α²".
    assert separable.decide(numbers(alpha_cost=(100, 75, 50, 25)))[0] == DOES_NOT_HOLD
    # A cheaper network significantly more accurate than its neighbour: not smooth.
    verdict, because = separable.decide(numbers(steps=[step("a", "b", 0.02, True)]))
    assert verdict == DOES_NOT_HOLD and "b beats a" in because
    # Nothing significant: too few images to see the fall.
    tied = {"delta": -0.003, "low": -0.01, "high": 0.004, "p": 0.4, "significant": False}
    assert separable.decide(numbers(overall=tied))[0] == INCONCLUSIVE


def test_an_8x8_speedup_range_outside_8_9_fails():
    # 3x3 with N = 16 is only 5.5x cheaper: outside "8-9 times" had it been MobileNet's N.
    convs = separable.conv_table(channels=(16,), kernels=(3,))
    assert separable.decide_convs([{**c, "n": 64} for c in convs])[0] == DOES_NOT_HOLD


def test_the_full_protocol_parses():
    for scale in ("quick", "full"):
        proto = separable.protocol(scale, [0, 1, 2])
        sizes = separable.quick_labels(scale)
        assert len(proto["models"]) == 7 and set(sizes) == {m["label"] for m in
                                                            proto["models"]}
        for size in set(sizes.values()):
            parse_protocol({**proto, "data": {**proto["data"], "image_size": size}},
                           source="test")
    assert separable.quick_labels("quick") == {
        "alpha1.00": 28, "alpha0.75": 28, "alpha0.50": 28, "alpha0.25": 28,
        "rho24": 24, "rho20": 20, "rho16": 16}


def test_the_quick_width_is_exactly_alpha():
    # Channels rounded to whole numbers: α = 0.5 of MobileNet-0.25 halves every layer.
    a = profile("mobilenet_v1_100", 28, in_chans=1, num_classes=10, small_input=True,
                width_mult=0.25, ch_divisor=1)
    b = profile("mobilenet_v1_100", 28, in_chans=1, num_classes=10, small_input=True,
                width_mult=0.125, ch_divisor=1)
    assert a.feature_shape[1] == 2 * b.feature_shape[1] == 256


def test_separable_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(separable.SETTINGS, "quick", {
        **separable.SETTINGS["quick"], "side": 16,
        "data": {"dataset": "digits", "val_fraction": 0.1, "train_fraction": 0.3},
        "recipe": {"epochs": 1, "batch_size": 32}, "seeds": 1, "jobs": 1})
    # Fewer convolutions to count: the grid's size is not what this test checks.
    monkeypatch.setattr(separable, "CHANNELS", (8, 64, 1024))
    _, record = run_experiment_twice("separable", separable.decide, tmp_path, figures=3)
    # ρ = 192/224, 160/224, 128/224 of the 16 px base.
    assert {k: v for k, v in record["numbers"]["sizes"].items() if k[:3] == "rho"} == {
        "rho14": 14, "rho11": 11, "rho9": 9}
