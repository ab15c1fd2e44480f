"""The learning curve per step: its rows against the epoch's numbers, the files and the
checkpoint that keep it, a resume mid-window, and training left exactly as it was."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archlab.train import Recipe, TrainingInterrupted, fit
from archlab.train import checkpoint as ckpt
from archlab.train.step_curve import StepCurve, step_columns
from conftest import TINY, StopAt

pytestmark = pytest.mark.usefixtures("isolated")


def tiny_recipe(**kw) -> Recipe:
    base = dict(epochs=2, batch_size=64, lr=0.2, model_kwargs=TINY, threads=1,
                progress=False)
    return Recipe(**{**base, **kw})


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_every_n_steps_agree_with_the_epoch_rows(tmp_path):
    spe = fit("resnet20", "digits", tiny_recipe(epochs=1, curve_every=0), verbose=False)
    steps_per_epoch = spe.history[-1]["step"]
    assert spe.step_history == []                       # 0 turns the curve off
    # A window of exactly one epoch gives the epoch's own train loss and accuracy.
    res = fit("resnet20", "digits", tiny_recipe(curve_every=steps_per_epoch),
              run_dir=tmp_path / "run", verbose=False)
    assert [r["step"] for r in res.step_history] == [steps_per_epoch, 2 * steps_per_epoch]
    assert [r["epoch"] for r in res.step_history] == [1.0, 2.0]
    for row, epoch in zip(res.step_history, res.history):
        assert row["train_loss"] == pytest.approx(epoch["train_loss"], rel=1e-12)
        assert row["train_error"] == pytest.approx(1 - epoch["train_top1"], abs=1e-12)
    assert _jsonl(tmp_path / "run" / "steps.jsonl") == res.step_history
    # Windows that do not divide the epoch: fractional epochs, windows across epochs.
    res = fit("resnet20", "digits", tiny_recipe(curve_every=7), verbose=False)
    assert [r["step"] for r in res.step_history] == list(range(7, 2 * steps_per_epoch + 1, 7))
    assert res.step_history[0]["epoch"] == pytest.approx(7 / steps_per_epoch)
    assert all(0 <= r["train_error"] <= 1 and r["train_loss"] > 0 for r in res.step_history)


def test_recording_the_curve_leaves_training_unchanged(tmp_path):
    r = tiny_recipe(augment="randaugment", mixup=0.2)
    fit("resnet20", "digits", r.replace(curve_every=0), run_dir=tmp_path / "off", verbose=False)
    fit("resnet20", "digits", r.replace(curve_every=1), run_dir=tmp_path / "on", verbose=False)
    off, on = ckpt.read_model(tmp_path / "off")[0], ckpt.read_model(tmp_path / "on")[0]
    assert off.keys() == on.keys() and all(torch.equal(off[k], on[k]) for k in off)
    strip = lambda h: [{k: v for k, v in row.items() if "time" not in k and k not in (  # noqa: E731
        "images_per_s", "data_frac")} for row in h]
    assert strip(_jsonl(tmp_path / "off" / "metrics.jsonl")) == \
        strip(_jsonl(tmp_path / "on" / "metrics.jsonl"))


def test_a_run_resumed_mid_window_ends_with_the_same_rows(tmp_path):
    r = tiny_recipe(epochs=3, curve_every=3, ema=0.9)
    full = fit("resnet20", "digits", r, run_dir=tmp_path / "full", verbose=False)
    with pytest.raises(TrainingInterrupted):
        fit("resnet20", "digits", r, run_dir=tmp_path / "cut", verbose=False,
            callbacks=[StopAt(28)])            # mid-epoch, one step into a window of 3
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["step"] == 28 and state["step_window"]["seen"] > 0
    assert [row["step"] for row in state["steps"]] == list(range(3, 28, 3))
    resumed = fit(None, "digits", None, run_dir=tmp_path / "cut", resume=True, verbose=False)
    assert resumed.step_history == full.step_history
    assert _jsonl(tmp_path / "cut" / "steps.jsonl") == full.step_history


def test_step_curve_window_state_and_columns():
    curve = StepCurve(2, steps_per_epoch=4)
    curve.add([0], [1.0], [3], [4])
    again = StepCurve(2, steps_per_epoch=4)
    again.restore(curve.rows, json.loads(json.dumps(curve.state())))
    for c in (curve, again):
        c.add([1, 2, 3], [3.0, 0.5, 0.5], [1, 4, 4], [4, 4, 4])
    assert curve.rows == again.rows == [
        {"step": 2, "epoch": 0.5, "train_loss": 2.0, "train_error": 0.5},
        {"step": 4, "epoch": 1.0, "train_loss": 0.5, "train_error": 0.0}]
    assert step_columns(curve.rows) == {"step": [2, 4], "epoch": [0.5, 1.0],
                                      "train_loss": [2.0, 0.5], "train_error": [0.5, 0.0]}


def test_curve_every_is_checked():
    with pytest.raises(ValueError, match="curve_every"):
        Recipe(curve_every=-1)
