"""What a study keeps for a paired comparison: every run's class per test image (networks
with and without TTA, the classical baseline), the fingerprint of the test set it was
judged on (the same for every model and seed, a folder's fixed holdout included), and the
learning curve per step; the encoding itself and the eval loader's order."""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
from PIL import Image

from study_fixtures import postgres, tiny_protocol  # noqa: F401

from archlab.data import load_dataset, load_splits
from archlab.study import RunPredictions, compare, encode_predictions, open_store
from archlab.train import Recipe, evaluate_tta, fit
from conftest import TINY

pytestmark = pytest.mark.usefixtures("isolated")


# --------------------------------------------------------------------------------------
# The encoding
# --------------------------------------------------------------------------------------


def test_predictions_round_trip_compactly():
    target = np.array([0, 1, 2, 9, 9])
    pred = torch.tensor([0, 2, 2, 9, 1])
    stored = json.loads(json.dumps(encode_predictions(target, pred, [0, 1, 2, 9, 1])))
    assert stored["n"] == 5 and stored["dtype"] == "uint8"
    assert len(base64.b64decode(stored["pred"])) == 5             # one byte per image
    p = RunPredictions.of({"predictions": stored})
    assert p.target.tolist() == target.tolist() and p.pred.tolist() == pred.tolist()
    assert p.correct().tolist() == [True, False, True, True, False]
    assert p.correct(tta=True).tolist() == [True, True, True, True, False]
    # A thousand classes take two bytes per image; no TTA leaves pred_tta None.
    wide = RunPredictions.of({"predictions": encode_predictions([999, 3], [999, 4])})
    assert wide.pred.tolist() == [999, 4] and wide.pred_tta is None
    assert encode_predictions([999, 3], [999, 4])["dtype"] == "uint16"
    with pytest.raises(ValueError, match="no test-time augmented"):
        wide.correct(tta=True)


def test_runs_without_predictions_and_bad_input():
    assert RunPredictions.of({"confusion": [[1]]}) is None      # a study older than them
    assert RunPredictions.of({}) is None

    class Failed:
        result = None
    assert RunPredictions.of(Failed()) is None
    with pytest.raises(ValueError, match="same images"):
        encode_predictions([0, 1], [0])
    with pytest.raises(ValueError, match="65536"):
        encode_predictions([0, 70000], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        encode_predictions([[0, 1]], [[0, 1]])


# --------------------------------------------------------------------------------------
# evaluate_tta: the predictions of both views, in the dataset's order
# --------------------------------------------------------------------------------------


def test_evaluate_tta_keeps_both_predictions_in_the_dataset_order(digits):
    r = Recipe(epochs=1, batch_size=64, lr=0.2, model_kwargs=TINY, threads=1, progress=False)
    res = fit("resnet20", digits, r, verbose=False)
    test = load_dataset("digits", "test")
    plain, tta = evaluate_tta(res.model, res.info["preprocess"], test, ["flip"],
                              torch.device("cpu"), batch_size=100)   # several batches
    for m in (plain, tta):
        assert m.predictions.dtype == m.targets.dtype == torch.long
        assert torch.equal(m.targets, test.targets)               # the loader's order
        assert m.predictions.device.type == "cpu" and len(m.predictions) == len(test)
        assert (m.predictions == m.targets).float().mean().item() == pytest.approx(m.top1)
        k = len(m.classes)
        counts = torch.bincount(m.targets * k + m.predictions, minlength=k * k).view(k, k)
        assert counts.tolist() == m.confusion
        assert "predictions" not in m.as_dict() and "targets" not in m.as_dict()
    alone, none = evaluate_tta(res.model, res.info["preprocess"], test, [], torch.device("cpu"))
    assert none is None and torch.equal(alone.predictions, plain.predictions)


# --------------------------------------------------------------------------------------
# A study's runs
# --------------------------------------------------------------------------------------


def test_every_run_stores_its_predictions_test_set_and_curve(tmp_path):
    proto = tiny_protocol(tmp_path / "tiny.yaml", seeds=(0, 1), extra="""\
        - name: sift-bovw
          model_kwargs: {upscale: 32, step: 4, patch: 8, vocab_size: 8, pca_dims: 16}
        """)
    study = tmp_path / "study"
    result = compare(proto, study=study, progress=False, report=False,
                     overrides={"recipe.curve_every": 5})
    assert result.done_here == 6 and result.failed_here == 0
    with open_store(study / "study.db") as store:         # as another machine reads them
        runs = store.runs(result.runs[0].protocol_hash)
    assert len(runs) == 6
    first = RunPredictions.of(runs[0])
    for r in runs:
        p = RunPredictions.of(r)
        assert len(p.target) == r.result["test_images"] == 359
        assert np.array_equal(p.target, first.target), r.label
        assert r.result["test_fingerprint"] == runs[0].result["test_fingerprint"]
        assert p.correct().mean() == pytest.approx(r.top1)
        k = len(r.result["classes"])
        assert np.bincount(p.target * k + p.pred, minlength=k * k).reshape(k, k).tolist() \
            == r.result["confusion"]
        if r.model == "sift-bovw":
            assert p.pred_tta is None and "steps" not in r.result
            continue
        assert p.correct(tta=True).mean() == pytest.approx(r.top1_tta)
        steps = r.result["steps"]
        assert set(steps) == {"step", "epoch", "train_loss", "train_error"}
        assert steps["step"] == list(range(5, len(steps["step"]) * 5 + 1, 5))
        assert len(steps["step"]) >= 3 and len(steps["train_loss"]) == len(steps["step"])
        assert steps["epoch"][0] == pytest.approx(5 / (r.history[-1]["step"]))
        run_steps = [json.loads(x) for x in (study / r.run_dir / "steps.jsonl")
                     .read_text().splitlines()]
        assert [row["train_loss"] for row in run_steps] == steps["train_loss"]
    test = load_splits("digits", image_size=16)[1]
    assert runs[0].result["test_fingerprint"] == {"fingerprint": test.fingerprint(),
                                                  "images": len(test)}


def test_a_study_on_postgres_keeps_them_for_every_reader(tmp_path, postgres):  # noqa: F811
    proto = tiny_protocol(tmp_path / "tiny.yaml")
    db = postgres.new_database()
    local = compare(proto, study=tmp_path / "local", progress=False, report=False,
                    models=["resnet-tiny"])
    shared = compare(proto, study=tmp_path / "shared", db=db, progress=False, report=False,
                     models=["resnet-tiny"])
    with open_store(db) as store:
        (run,) = store.runs(shared.runs[0].protocol_hash)
    here, there = RunPredictions.of(local.runs[0]), RunPredictions.of(run)
    assert np.array_equal(here.pred, there.pred) and np.array_equal(here.pred_tta,
                                                                     there.pred_tta)
    assert run.result["test_fingerprint"] == local.runs[0].result["test_fingerprint"]


def test_a_folder_without_a_test_split_is_judged_on_one_holdout(tmp_path):
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "shades"
    for cls, base in (("dark", 40), ("mid", 128), ("bright", 210)):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            arr = (base + torch.randint(-30, 30, (12, 12, 3), generator=g)).clamp(0, 255)
            Image.fromarray(arr.to(torch.uint8).numpy()).save(root / cls / f"{i}.png")
    proto = tiny_protocol(tmp_path / "folder.yaml", seeds=(0, 1))
    proto.write_text(proto.read_text().replace("dataset: digits", f"dataset: {root}")
                     .replace("seeds: [0, 1]", "seeds: 2"))       # a count: seeds 0 and 1
    result = compare(proto, study=tmp_path / "study", progress=False, report=False,
                     overrides={"recipe.workers": 0})
    assert result.done_here == 4 and result.failed_here == 0
    assert sorted((r.label, r.seed) for r in result.runs) == [
        ("resnet-tiny", 0), ("resnet-tiny", 1), ("resnet-tiny-w", 0), ("resnet-tiny-w", 1)]
    holdout = load_splits(str(root), image_size=16)[1]
    assert holdout.split == "holdout" and len(holdout) == 6
    for r in result.runs:
        assert r.result["test_fingerprint"] == {"fingerprint": holdout.fingerprint(),
                                                "images": 6}
        assert RunPredictions.of(r).target.tolist() == holdout.targets.tolist()
