"""receptive-field: the field measured from gradients is 5 and 7, the costs are the hand
formulas, the verdict follows the numbers both ways, and the experiment runs end to end as a
tiny study on the digits."""
from __future__ import annotations

import numpy as np
import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import receptive_field as rf
from study_fixtures import run_experiment_twice


@pytest.mark.parametrize("layers", [2, 3])
def test_stacks_cost_the_formulas_and_see_1_plus_2n(layers):
    c = rf.costs(layers, channels=8, size=10)
    k = 2 * layers + 1
    assert c["params_stack"] == layers * (9 * 64 + 8) and c["params_single"] == k * k * 64 + 8
    assert c["macs_stack"] == layers * 9 * 64 * 100 and c["macs_single"] == k * k * 64 * 100
    assert c["rf_profile_stack"] == c["rf_profile_single"] == c["rf_calc"] == k
    for single in (False, True):
        energy = rf.gradient_energy(layers, single, draws=4)
        assert rf.extent(energy) == k
        # Exactly zero outside the field: a pixel one step further out gets nothing.
        centre = rf.FIELD_SIZE // 2
        assert energy[centre, centre + layers + 1] == 0 and energy[centre, centre + layers] > 0


def test_path_counts_and_the_centre_share():
    assert rf.path_counts(2, single=False)[2].tolist() == [3, 6, 9, 6, 3]   # (1,2,3,2,1)·3
    assert rf.centre_share(rf.path_counts(2, single=False)) == pytest.approx(49 / 81)
    assert rf.centre_share(rf.path_counts(3, single=True)) == pytest.approx(9 / 49)
    assert rf.extent(np.zeros((5, 5))) == 0


def _numbers(b="worse", d="tied", bad_field=False):
    rows = []
    for n in (2, 3):
        k = 2 * n + 1
        row = {"layers": n, "kernel": k, "rf_theory": k, "rf_calc": k, "rf_measured_stack": k,
               "rf_measured_single": k, "rf_profile_stack": float(k),
               "rf_profile_single": float(k)}
        for key, stack, single in (("params", n * 9, k * k), ("macs", n * 90, k * k * 10)):
            row.update({f"{key}_stack": stack, f"formula_{key}_stack": stack,
                        f"{key}_single": single, f"formula_{key}_single": single})
        rows.append(row)
    if bad_field:
        rows[1]["rf_measured_stack"] = 5
    delta = {"worse": -0.02, "better": 0.02, "tied": -0.001}
    acc = {c: {"outcome": o, "delta": delta[o], "delta_ci": [delta[o] - 0.01, delta[o] + 0.01],
               "p_adjusted": 0.01 if o != "tied" else 0.6, "kernel": k}
           for (c, o), k in zip((("B", b), ("D", d)), (5, 7))}
    return {"fields": rows, "accuracy": acc}


def test_the_verdict_follows_the_numbers():
    verdict, because = rf.decide(_numbers("worse", "tied"))
    assert verdict == HOLDS and "5×5" in because and "fewer weights" in because
    assert rf.decide(_numbers("worse", "worse"))[0] == HOLDS
    # A single large kernel that beats its stack contradicts the claim.
    assert rf.decide(_numbers("worse", "better"))[0] == DOES_NOT_HOLD
    assert rf.decide(_numbers("tied", "tied"))[0] == INCONCLUSIVE
    # A field that is not 1 + 2n fails the exact part, whatever the accuracy.
    verdict, because = rf.decide(_numbers("worse", "worse", bad_field=True))
    assert verdict == DOES_NOT_HOLD and "rf_measured_stack is 5" in because


def test_receptive_field_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(rf.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1},
        "recipe": {"epochs": 1, "batch_size": 32},
        "model": {"width": 0.125, "fc_dim": 32, "drop_rate": 0.0},
        "seeds": 1, "jobs": 1, "draws": 2})
    _, record = run_experiment_twice("receptive-field", rf.decide, tmp_path, figures=3)
    assert [r["rf_measured_stack"] for r in record["numbers"]["fields"]] == [5, 7]
    assert set(record["numbers"]["accuracy"]) == {"B", "D"}


def test_the_full_protocol_parses():
    from archlab.study import parse_protocol

    proto = parse_protocol(rf.protocol("full", [0, 1, 2]), source="test")
    assert proto.dataset == "cifar10" and len(proto.models) == 4
    assert [m.label for m in proto.models] == ["B 3x3", "B 5x5", "D 3x3", "D 7x7"]
