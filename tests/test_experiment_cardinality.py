"""cardinality: the networks are built to their costs, the verdict follows the paired tests
both ways, and the experiment runs end to end as a tiny study."""
from __future__ import annotations

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import cardinality as card
from study_fixtures import run_experiment_twice, tiny_resnet_setting


def rival(outcome):
    delta = {"better": 0.01, "worse": -0.01, "tied": 0.001}[outcome]
    return {"outcome": outcome, "delta": delta, "delta_ci": [delta - 0.005, delta + 0.005],
            "p_adjusted": 0.01}


def test_the_verdict_follows_the_tests_at_twice_the_cost():
    # "worse" is the rival minus the ResNeXt: the ResNeXt beat it.
    verdict, because = card.decide({"at_2x": {"wider": rival("worse"),
                                              "deeper": rival("worse")}})
    assert verdict == HOLDS and "wider minus resnext-2x: -1.00 [" in because
    assert card.decide({"at_2x": {"wider": rival("worse"), "deeper": rival("tied")}})[0] \
        == INCONCLUSIVE
    verdict, because = card.decide({"at_2x": {"wider": rival("worse"),
                                              "deeper": rival("better")}})
    assert verdict == DOES_NOT_HOLD and "deeper beat" in because


def test_the_quick_networks_are_built_to_their_costs():
    configs = card.configurations(card.SETTINGS["quick"])
    base, target = configs["resnet"]["macs"], configs["resnext-2x"]["macs"]
    assert configs["resnext"]["macs"] == pytest.approx(base, rel=card.TOLERANCE)
    assert target == pytest.approx(2 * base, rel=card.TOLERANCE)
    for label in ("wider", "deeper"):
        assert configs[label]["macs"] == pytest.approx(target, rel=card.TOLERANCE)
    # More groups than one, the rivals one group wide; the deeper one only deeper.
    assert configs["resnext"]["flags"]["groups"] > 1
    assert configs["resnext-2x"]["flags"]["groups"] > configs["resnext"]["flags"]["groups"]
    assert configs["wider"]["flags"]["groups"] == 1
    assert set(configs["deeper"]["flags"]) == {"layers"}
    assert sum(configs["deeper"]["flags"]["layers"]) > 3


def test_deepening_adds_blocks_to_the_thinnest_later_stage_first():
    setting = card.SETTINGS["quick"]
    block = card.rv.net_costs(setting, {"layers": [1, 1, 2]})["macs"] - \
        card.rv.net_costs(setting, {})["macs"]
    flags, costs = card.deepen(setting, card.rv.net_costs(setting, {})["macs"] + 2 * block)
    assert flags == {"layers": [1, 2, 2]}
    # A block costs the same in every stage: the map's area halves as its width doubles.
    assert card.rv.net_costs(setting, {"layers": [2, 1, 1]})["macs"] == \
        card.rv.net_costs(setting, {"layers": [1, 1, 2]})["macs"]


def test_an_unreachable_cost_is_refused_by_name():
    with pytest.raises(ValueError, match="no cardinality of \\[2\\] comes within"):
        card.most_groups({**card.SETTINGS["quick"], "cardinalities": [2]}, 10**5)


def test_cardinality_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(card.SETTINGS, "quick", tiny_resnet_setting(card.SETTINGS["quick"]))
    outcome, record = run_experiment_twice("cardinality", card.decide, tmp_path)
    assert set(record["numbers"]["at_2x"]) == {"wider", "deeper"}
    assert len(outcome.rows) == 5 and len(outcome.rows[0]) == len(outcome.headers)


def test_the_full_protocol_parses():
    from archlab.study import parse_protocol

    # Table 4's networks as the search finds them on ResNet-50's layout (not searched here:
    # counting the candidates takes a minute).
    configs = {"resnet": {"flags": {}}, "resnext-2x": {"flags": {"groups": 64,
                                                                 "base_width": 4}},
               "wider": {"flags": {"groups": 1, "base_width": 102}}}
    p = parse_protocol(card.protocol("full", [0, 1, 2], configs), source="c", default_name="c")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == list(configs)
    assert p.models[1].model_kwargs == {"layers": [3, 4, 6, 3], "widths": [64, 128, 256, 512],
                                        "stem_width": 64, "groups": 64, "base_width": 4}
