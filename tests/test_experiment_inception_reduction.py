"""inception-reduction: the module costs are the hand formulas (and the course's 120M and
12.4M), the equal-cost width matches the cost, the verdict follows the numbers both ways, and
the experiment runs end to end as a tiny study on the digits."""
from __future__ import annotations

import copy

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import inception_reduction as ir
from archlab.models.inception import GOOGLENET_TABLE
from study_fixtures import run_experiment_twice


@pytest.mark.parametrize("reduce", [True, False])
def test_inception_3a_costs_what_table_1_says(reduce):
    widths = dict(GOOGLENET_TABLE)["inception3a"]
    measured = ir.module_costs(192, 28, widths, reduce)
    assert measured == ir.hand_costs(192, 28, widths, reduce)
    # By hand once more, written out: 28²·(192·(64+96+16+32) + 9·96·128 + 25·16·32) reduced,
    # 28²·192·(64 + 9·128 + 25·32) naive, whose pooling passes the 192 channels on.
    if reduce:
        assert measured["macs"] == 784 * (192 * 208 + 9 * 96 * 128 + 25 * 16 * 32)
        assert measured["out_chs"] == 256
    else:
        assert measured["macs"] == 784 * 192 * (64 + 9 * 128 + 25 * 32)
        assert measured["out_chs"] == 416


def test_the_courses_example_is_120m_against_12_4m():
    ex = ir.example()
    assert ex["naive"] == ex["naive by hand"] == 120_422_400
    assert ex["reduced"] == ex["reduced by hand"] == 12_443_648


def test_equal_cost_width_costs_no_more_than_the_reduced_net(monkeypatch):
    monkeypatch.setitem(ir.SETTINGS, "quick", {**ir.SETTINGS["quick"], "image": (1, 16)})
    width = ir.equal_cost_width("quick")
    target = ir._net_macs("quick", width=ir.SETTINGS["quick"]["width"])
    assert ir._net_macs("quick", width=width, reduce=False) <= target
    assert ir._net_macs("quick", width=width + 0.002, reduce=False) > target * 0.95


def _numbers(narrow="worse", naive="tied", break_cost=False):
    row = {"module": "inception3a", "in_chs": 192, "size": 28}
    for kind, macs in ((ir.REDUCED, 128), (ir.NAIVE, 303)):
        row[kind] = {"params": macs, "macs": macs, "out_chs": 1}
        row[f"{kind} by hand"] = dict(row[kind])
    numbers = {"modules": [row],
               "example": {"naive": 120, "reduced": 12, "naive by hand": 120,
                           "reduced by hand": 12},
               "network": {ir.REDUCED: {"macs": 1.6e9}, ir.NAIVE: {"macs": 12.6e9}}}
    delta = {"worse": -0.03, "better": 0.03, "tied": 0.002}
    acc = {ir.REDUCED: {"macs": 5e6, "outcome": "baseline"}}
    for label, outcome, macs in ((ir.NARROW, narrow, 5e6), (ir.NAIVE, naive, 3e7)):
        acc[label] = {"macs": macs, "outcome": outcome, "delta": delta[outcome],
                      "delta_ci": [delta[outcome] - 0.01, delta[outcome] + 0.01],
                      "p_adjusted": 0.6 if outcome == "tied" else 0.001}
    numbers["accuracy"] = acc
    if break_cost:
        numbers = copy.deepcopy(numbers)
        numbers["modules"][0][ir.NAIVE]["macs"] = 300
    return numbers


def test_the_verdict_follows_the_numbers():
    verdict, because = ir.decide(_numbers("worse", "tied"))
    assert verdict == HOLDS and "2.4×" in because and "at equal cost" in because
    # The same-width naive net being better (it has 6× the MACs) does not refute the claim.
    assert ir.decide(_numbers("worse", "better"))[0] == HOLDS
    assert ir.decide(_numbers("better", "better"))[0] == DOES_NOT_HOLD
    assert ir.decide(_numbers("tied", "worse"))[0] == INCONCLUSIVE
    verdict, because = ir.decide(_numbers("worse", "tied", break_cost=True))
    assert verdict == DOES_NOT_HOLD and "hand formula" in because


def test_inception_reduction_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(ir.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1},
        "recipe": {"epochs": 1, "batch_size": 32}, "image": (1, 16), "width": 0.125,
        "seeds": 1, "jobs": 1})
    _, record = run_experiment_twice("inception-reduction", ir.decide, tmp_path, figures=2)
    acc = record["numbers"]["accuracy"]
    assert set(acc) == {ir.REDUCED, ir.NAIVE, ir.NARROW}
    assert acc[ir.NARROW]["macs"] <= acc[ir.REDUCED]["macs"] < acc[ir.NAIVE]["macs"]


def test_the_full_protocol_parses():
    from archlab.study import parse_protocol

    proto = parse_protocol(ir.protocol("full", [0, 1, 2], narrow_width=0.4), source="test")
    assert proto.dataset == "cifar10" and len(proto.models) == 3
