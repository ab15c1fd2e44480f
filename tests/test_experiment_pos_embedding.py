"""pos-embedding: a verdict that follows the paired tests both ways (any kind beats none;
the kinds differ little), the four networks differing only in their embedding, the
similarity map of ViT's Figure 7, the full protocol valid, and a tiny end-to-end study."""
from __future__ import annotations

import numpy as np

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import pos_embedding as pe
from archlab.models import create_model
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def _entry(delta, outcome):
    return {"top1": [0.80 + (delta or 0)] * 2, "interval": [0.79, 0.81], "outcome": outcome,
            "delta": delta, "delta_ci": None if delta is None else [delta - 0.005, delta + 0.005],
            "p_adjusted": None if delta is None else 0.001}


def numbers(gains=(0.03, 0.028, 0.029), outcomes=("better",) * 3, between=None):
    between = between or {"learned vs learned_2d": (0.002, "tied"),
                          "learned vs sincos": (0.001, "tied"),
                          "learned_2d vs sincos": (-0.001, "tied")}
    return {"variants": {"none": _entry(None, "baseline"),
                         **{k: _entry(g, o) for k, g, o in zip(pe.KINDS, gains, outcomes)}},
            "between": {pair: {"delta": d, "delta_ci": [d - 0.004, d + 0.004],
                               "p_adjusted": 0.01 if o != "tied" else 0.5, "outcome": o}
                        for pair, (d, o) in between.items()}}


def test_the_verdict_follows_both_parts_of_the_claim():
    verdict, because = pe.decide(numbers())
    assert verdict == HOLDS and "every kind beats none" in because
    # A significant difference between kinds that is small next to the gap still holds.
    small = {"learned vs learned_2d": (0.008, "better"), "learned vs sincos": (0.0, "tied"),
             "learned_2d vs sincos": (-0.008, "worse")}
    assert pe.decide(numbers(between=small))[0] == HOLDS
    # One as large as half the smallest gain over none: the kinds do not differ little.
    large = {**small, "learned vs sincos": (0.015, "better")}
    verdict, because = pe.decide(numbers(between=large))
    assert verdict == DOES_NOT_HOLD and "learned vs sincos" in because
    verdict, because = pe.decide(numbers(outcomes=("better", "better", "tied"),
                                         gains=(0.03, 0.03, 0.004)))
    assert verdict == INCONCLUSIVE and "sincos tied with none" in because
    verdict, _ = pe.decide(numbers(outcomes=("better", "worse", "better"),
                                   gains=(0.03, -0.01, 0.03)))
    assert verdict == DOES_NOT_HOLD


def test_the_four_networks_differ_only_in_the_embedding():
    p = pe.protocol("quick", [0])
    kwargs = {m["label"]: m["model_kwargs"] for m in p["models"]}
    assert list(kwargs) == ["none", "learned", "learned_2d", "sincos"]
    assert all(kw == {**kwargs["none"], "pos_embedding": k} for k, kw in kwargs.items())
    nets = {k: create_model("vit_tiny_patch4_32", num_classes=10, in_chans=1,
                            small_input=True, **kw) for k, kw in kwargs.items()}
    assert nets["learned"].grid_size == (7, 7)
    params = {k: sum(t.numel() for t in n.parameters()) for k, n in nets.items()}
    assert params["learned"] - params["none"] == (49 + 1) * 64
    assert params["learned_2d"] - params["none"] == (7 + 7) * 32
    assert params["sincos"] == params["none"]


def test_the_similarity_map_is_a_grid_of_grids():
    # Embeddings that are one-hot in the row: a patch is alike only to its own row.
    rows, cols = 3, 4
    pos = np.zeros((rows * cols, 8))
    for i in range(rows * cols):
        pos[i, i // cols] = 1.0
    svg = pe.similarity_figure(pos, (rows, cols))
    assert svg.startswith("<svg") or "<svg" in svg[:500]


def test_the_full_protocol_parses():
    p = parse_protocol(pe.protocol("full", [0, 1, 2]), source="pos", default_name="p")
    assert p.dataset == "cifar10" and [m.label for m in p.models] == ["none", *pe.KINDS]


def test_pos_embedding_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # The digits at 8 px in 2x2 patches (a 4x4 grid), one block of width 16, one epoch.
    monkeypatch.setitem(pe.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.1,
                 "train_fraction": 0.3},
        "recipe": {"epochs": 1, "batch_size": 128},
        "model": {"img_size": 8, "patch_size": 2, "small_patch_size": 2, "embed_dim": 16,
                  "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("pos-embedding", pe.decide, tmp_path,
                                           page_shows=("Figure 7", "learned 2-D"))
    assert set(record["numbers"]["between"]) == {"learned vs learned_2d", "learned vs sincos",
                                                 "learned_2d vs sincos"}
    assert len(outcome.rows) == 4
