"""The learning curve per step: its rows against the epoch's numbers, the files and the
checkpoint that keep it, a resume mid-window, and training left exactly as it was."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archlab.train import Recipe, TrainingInterrupted, fit
from archlab.train import checkpoint as ckpt
from archlab.train.step_curve import StepCurve, grad_norm_groups, grad_norms, step_columns
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
    r = tiny_recipe(epochs=3, curve_every=3, ema=0.9, grad_norms=["conv1"])
    full = fit("resnet20", "digits", r, run_dir=tmp_path / "full", verbose=False)
    with pytest.raises(TrainingInterrupted):
        fit("resnet20", "digits", r, run_dir=tmp_path / "cut", verbose=False,
            callbacks=[StopAt(28)])            # mid-epoch, one step into a window of 3
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["step"] == 28 and state["step_window"]["seen"] > 0
    assert state["step_window"]["steps"] == 1 and state["step_window"]["extra_sum"][0] > 0
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


def test_extra_columns_are_the_mean_over_the_window_and_survive_a_resume():
    curve = StepCurve(2, steps_per_epoch=4, extra=["grad_norm:conv1"])
    curve.add([0], [1.0], [3], [4], [[1.0]])
    again = StepCurve(2, steps_per_epoch=4, extra=["grad_norm:conv1"])
    again.restore(curve.rows, json.loads(json.dumps(curve.state())))
    for c in (curve, again):
        c.add([1, 2, 3], [3.0, 0.5, 0.5], [1, 4, 4], [4, 4, 4], [[3.0], [0.5], [1.5]])
    assert curve.rows == again.rows
    assert [r["grad_norm:conv1"] for r in curve.rows] == [2.0, 1.0]
    assert list(step_columns(curve.rows)) == ["step", "epoch", "train_loss", "train_error",
                                              "grad_norm:conv1"]
    with pytest.raises(ValueError, match="grad_norm:conv1"):
        curve.add([4], [1.0], [1], [4])           # values of the extra column are due


def test_grad_norm_groups_name_the_modules_and_measure_their_gradient():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(2, 3))
    with pytest.raises(ValueError, match=r"no module '4'"):
        grad_norm_groups(net, ["4"])
    with pytest.raises(ValueError, match="no trainable parameters"):
        grad_norm_groups(net, ["1"])
    groups = grad_norm_groups(net, ["0", "3"])
    assert [c for c, _ in groups] == ["grad_norm:0", "grad_norm:3"]
    net(torch.randn(5, 1, 3, 3)).pow(2).sum().backward()
    by_hand = [torch.cat([net[0].weight.grad.flatten(), net[0].bias.grad]).norm(),
               torch.cat([net[3].weight.grad.flatten(), net[3].bias.grad]).norm()]
    assert torch.allclose(grad_norms(groups), torch.stack(by_hand))
    net[3].weight.grad = net[3].bias.grad = None  # a module the step did not reach: zero
    assert grad_norms(groups)[1] == 0


class GradByHand:
    """Trainer callback: the gradient norm of `module`, read after each step."""

    def __init__(self, module: str) -> None:
        self.module, self.norms = module, []

    def on_step_end(self, trainer) -> None:
        params = getattr(trainer.model, self.module).parameters()
        self.norms.append(float(torch.cat([p.grad.flatten() for p in params]).norm()))


def test_the_trainer_records_the_gradient_before_clipping_and_trains_as_without(tmp_path):
    r = tiny_recipe(epochs=1, curve_every=2)
    seen = GradByHand("layer1")
    on = fit("resnet20", "digits", r.replace(grad_norms=["conv1", "layer1"]),
             run_dir=tmp_path / "on", verbose=False, callbacks=[seen])
    fit("resnet20", "digits", r, run_dir=tmp_path / "off", verbose=False)
    rows = on.step_history
    assert set(rows[0]) >= {"grad_norm:conv1", "grad_norm:layer1"}
    # Each row: the mean of its window's two steps' norms, as a callback reads them.
    assert [row["grad_norm:layer1"] for row in rows] == pytest.approx(
        [sum(seen.norms[i:i + 2]) / 2 for i in range(0, 2 * len(rows), 2)], rel=1e-5)
    off, on_w = ckpt.read_model(tmp_path / "off")[0], ckpt.read_model(tmp_path / "on")[0]
    assert all(torch.equal(off[k], on_w[k]) for k in off)   # recording changes nothing
    # With clipping the callback sees the clipped gradient (0.01 at most, all parameters
    # together); the curve keeps the one backpropagation delivered, larger.
    clipped = GradByHand("layer1")
    res = fit("resnet20", "digits", r.replace(grad_norms=["layer1"], clip_grad=0.01),
              verbose=False, callbacks=[clipped])
    assert max(clipped.norms) <= 0.01 + 1e-6
    assert min(row["grad_norm:layer1"] for row in res.step_history) > 0.01
    with pytest.raises(ValueError, match="no module 'layer9'.*layer1"):
        fit("resnet20", "digits", r.replace(grad_norms=["layer9"]), verbose=False)
    with pytest.raises(ValueError, match="curve_every"):
        Recipe(curve_every=0, grad_norms=["conv1"])
