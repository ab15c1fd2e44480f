"""data-efficiency: the verdict follows the paired tests both ways, the crossing is read off
the curves, every fraction trains for the same steps on nested subsets of one pool, the full
protocol is valid, and the experiment runs end to end as a tiny study."""
from __future__ import annotations

import math

import pytest

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import data_efficiency as de
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def numbers(deltas, outcomes, fractions=(0.05, 0.1, 0.25, 0.5, 1.0)):
    points = []
    for f, d, o in zip(fractions, deltas, outcomes):
        points.append({"fraction": f, "train_images": int(10000 * f),
                       "resnet": {"top1": [0.8, 0.8], "interval": [0.79, 0.81]},
                       "vit": {"top1": [0.8 + d] * 2, "interval": [0.79 + d, 0.81 + d]},
                       "vit_minus_resnet": {"delta": d, "delta_ci": [d - 0.005, d + 0.005],
                                            "p_adjusted": 0.001 if o != "tied" else 0.5,
                                            "outcome": o}})
    return {"points": points, "crossing": de.crossing(points)}


def test_the_verdict_follows_the_curves():
    # The ResNet wins on little data, the ViT catches up and passes it: holds, and crosses.
    n = numbers([-0.08, -0.05, -0.02, 0.002, 0.01], ["resnet", "resnet", "resnet", "tied", "vit"])
    verdict, because = de.decide(n)
    assert verdict == HOLDS and "gap closes" in because and "cross near" in because
    # Still behind at 100%, but by under half the gap at 5%: holds.
    n = numbers([-0.08, -0.07, -0.05, -0.04, -0.03], ["resnet"] * 5)
    assert de.decide(n)[0] == HOLDS and n["crossing"] is None
    # The gap does not shrink: does not hold.
    n = numbers([-0.03, -0.04, -0.04, -0.05, -0.05], ["resnet"] * 5)
    verdict, because = de.decide(n)
    assert verdict == DOES_NOT_HOLD and "does not shrink" in because
    # The ViT is better even on 5%: does not hold.
    n = numbers([0.02, 0.02, 0.01, 0.01, 0.0], ["vit", "vit", "tied", "tied", "tied"])
    assert de.decide(n)[0] == DOES_NOT_HOLD
    # A tie on the smallest share, or a gap shrinking by less than half: inconclusive.
    n = numbers([-0.002, -0.01, -0.02, -0.02, -0.02], ["tied"] + ["resnet"] * 4)
    assert de.decide(n)[0] == INCONCLUSIVE
    n = numbers([-0.08, -0.07, -0.07, -0.06, -0.05], ["resnet"] * 5)
    assert de.decide(n)[0] == INCONCLUSIVE


def test_the_crossing_is_interpolated_on_log_x():
    n = numbers([-0.02, 0.02], ["resnet", "vit"], fractions=(0.1, 0.4))
    assert n["crossing"] == pytest.approx(0.2)          # half way between 0.1 and 0.4 in log
    assert numbers([0.01, 0.02], ["vit"] * 2, (0.1, 1.0))["crossing"] is None


def test_every_fraction_trains_the_same_steps_on_a_share_of_one_pool():
    s = de.SETTINGS["quick"]
    p = parse_protocol(de.protocol("quick", [0, 1]), source="de", default_name="de")
    pool = round(60000 * (1 - s["data"]["val_fraction"]) * s["pool"])
    steps = {}
    for e in p.models:
        r = p.recipe_for(e, 0)
        fraction = r.train_fraction / s["pool"]
        steps[e.label] = math.ceil(pool * fraction / r.batch_size) * r.epochs
        assert r.val_fraction == s["data"]["val_fraction"]
    full = steps[de.label("resnet", 1.0)]
    # The same images seen; the steps agree to a tenth (each epoch ends on a partial batch).
    assert all(abs(n - full) / full < 0.1 for n in steps.values()), steps
    # Fraction and architecture make each run its own: ten entries, ten different keys.
    assert len({r.key for r in p.runs() if r.seed == 0}) == 10
    assert p.recipe_for(p.entry("vit-5pct"), 0).optimizer == "adamw"


def test_the_full_protocol_parses():
    p = parse_protocol(de.protocol("full", [0, 1, 2]), source="de", default_name="de")
    assert p.dataset == "cifar10" and len(p.models) == 10
    assert p.recipe_for(p.entry("resnet-5pct"), 0).epochs == 600


def test_data_efficiency_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # The digits at their own 8 px, two shares of half of them, one epoch at 100%, one
    # seed, tiny widths: four runs of about a second each.
    monkeypatch.setitem(de.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.1},
        "pool": 0.5, "epochs": 1, "batch_size": 64, "fractions": (0.5, 1.0),
        "resnet": {"layers": [1, 1, 1], "widths": [8, 8, 16], "stem_width": 8},
        "vit": {"patch_size": 4, "small_patch_size": 4, "embed_dim": 16, "depth": 1,
                "num_heads": 2},
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("data-efficiency", de.decide, tmp_path,
                                           page_shows=("share of pool",))
    points = record["numbers"]["points"]
    assert [p["fraction"] for p in points] == [0.5, 1.0]
    assert points[0]["train_images"] < points[1]["train_images"]
    assert len(outcome.rows) == 2 and len(outcome.rows[0]) == len(outcome.headers)
