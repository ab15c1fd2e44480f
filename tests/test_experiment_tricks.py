"""tricks: every tweak changes the quick network, the verdict follows the costs and the
paired tests both ways, and the experiment runs end to end as a tiny study."""
from __future__ import annotations

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import tricks
from study_fixtures import run_experiment_twice, tiny_resnet_setting


def numbers(outcomes, macs_d=4.33e9, params_d=25.6e6):
    costs = {"resnet": {"macs": 3.86e9, "params": 25.6e6},
             "resnet-b": {"macs": 4.09e9, "params": 25.6e6},
             "resnet-c": {"macs": 4.33e9, "params": 25.6e6},
             "resnet-d": {"macs": macs_d, "params": params_d}}
    variants = {"resnet": {"outcome": "baseline"}}
    for label, outcome in outcomes.items():
        delta = {"better": 0.01, "worse": -0.01, "tied": 0.001}[outcome]
        variants[label] = {"outcome": outcome, "delta": delta,
                           "delta_ci": [delta - 0.005, delta + 0.005], "p_adjusted": 0.01}
    return {"paper_costs": costs, "variants": variants}


TIED = {"resnet-b": "tied", "resnet-c": "tied", "resnet-d": "tied", "zero-gamma": "tied"}


def test_the_verdict_follows_the_tests_and_the_costs():
    verdict, because = tricks.decide(numbers({**TIED, "resnet-d": "better"}))
    assert verdict == HOLDS and "1.122x the MACs" in because
    assert tricks.decide(numbers(TIED))[0] == INCONCLUSIVE
    # Any tweak that hurts fails the claim, even with D better.
    verdict, because = tricks.decide(numbers({**TIED, "resnet-d": "better",
                                              "zero-gamma": "worse"}))
    assert verdict == DOES_NOT_HOLD and "zero-gamma less accurate" in because
    # A tweak that is not cheap fails the claim, however accurate.
    verdict, because = tricks.decide(numbers({**TIED, "resnet-d": "better"}, macs_d=5e9))
    assert verdict == DOES_NOT_HOLD and "cost more than" in because
    assert tricks.decide(numbers({**TIED, "resnet-d": "better"}, params_d=40e6))[0] \
        == DOES_NOT_HOLD


def test_each_tweak_changes_the_quick_network():
    ex = tricks.exercised(tricks.SETTINGS["quick"])
    base = ex["resnet"]
    # B: the two downsampling bottlenecks stride their 3x3; the original none.
    assert base["strided_3x3"] == 0 and ex["resnet-b"]["strided_3x3"] == 2
    # C: three convolutions in the stem instead of one.
    assert base["stem_convs"] == 1 and ex["resnet-c"]["stem_convs"] == 3
    # D: both projection shortcuts that downsample pool first.
    assert ex["resnet-c"]["pooled_shortcuts"] == 0 and ex["resnet-d"]["pooled_shortcuts"] == 2
    # Zero γ: every block's last norm starts at zero, and nothing else changes.
    assert base["zero_gamma"] == 0 and ex["zero-gamma"] == {**base, "zero_gamma": 3}


def test_the_costs_at_224_are_table_5s():
    costs = tricks.rv.paper_costs({k: (name, {}) for k, (_, name) in tricks.VARIANTS.items()
                                   if k in tricks.PAPER})
    for label, (_, gflops) in tricks.PAPER.items():
        # Table 5 gives one decimal of GFLOPs (multiply-adds).
        assert costs[label]["macs"] / 1e9 == pytest.approx(gflops, abs=0.05)
        assert costs[label]["params"] / 1e6 == pytest.approx(25.6, abs=0.05)


def test_tricks_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(tricks.SETTINGS, "quick", tiny_resnet_setting(tricks.SETTINGS["quick"]))
    outcome, record = run_experiment_twice("tricks", tricks.decide, tmp_path)
    assert set(record["numbers"]["variants"]) == set(tricks.VARIANTS)
    assert len(record["numbers"]["variants"]["resnet-d"]["top1"]) == 2
    assert len(outcome.rows) == 5 and len(outcome.rows[0]) == len(outcome.headers)


def test_the_full_protocol_parses():
    from archlab.study import parse_protocol

    p = parse_protocol(tricks.protocol("full", [0, 1, 2]), source="tricks", default_name="t")
    assert p.dataset == "cifar10" and len(p.models) == 5 and p.seeds == [0, 1, 2]
    assert p.models[0].model_kwargs["layers"] == [3, 4, 6, 3]
