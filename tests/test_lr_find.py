"""The learning-rate range test: the sweep is exponential, it stops when the smoothed loss
passes 4x its minimum, it leaves weights and optimizer bit-exactly as they were, and its
suggestion on digits is a rate that trains."""
from __future__ import annotations

import math

import pytest
import torch

from archlab.cli import main
from archlab.train import Recipe, fit
from archlab.train.lr_find import lr_find, lr_find_trainer, sweep_lrs, valley
from archlab.train import Trainer
from conftest import TINY


pytestmark = pytest.mark.usefixtures("isolated")


def recipe(**kw) -> Recipe:
    return Recipe(**{**dict(batch_size=32, threads=1, progress=False, model_kwargs=TINY), **kw})


def test_valley_is_the_middle_of_the_longest_descent():
    lrs = [10.0 ** (i - 7) for i in range(12)]
    losses = [3, 3.1, 3.0, 2.9, 2.5, 2.0, 1.5, 1.0, 0.8, 0.7, 2.0, 9.0]
    # The longest decreasing run: 3.1 (index 1) .. 0.7 (index 9), length 8: start 9 - 8 = 1,
    # thirds of 8/3 -> 1 + 2 + 1 = index 4.
    assert valley(lrs, losses) == lrs[4]


def test_sweep_is_exponential_and_weights_come_back(digits, tmp_path):
    trainer = Trainer("resnet20", digits, recipe(), verbose=False)
    # One real step first, so that the optimizer has momentum buffers to restore.
    x, y, _ = next(iter(trainer.train_loader))
    trainer.model.train()
    loss = torch.nn.functional.cross_entropy(trainer.model(x), y)
    loss.backward()
    trainer.optimizer.step()
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    opt = trainer.optimizer.state_dict()
    buffers = {i: s["momentum_buffer"].clone() for i, s in opt["state"].items()}
    result = lr_find_trainer(trainer, num_it=40, plot=tmp_path / "lr.png")
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for i, s in trainer.optimizer.state_dict()["state"].items():
        assert torch.equal(s["momentum_buffer"], buffers[i])
    n = len(result.lrs)
    assert result.lrs == sweep_lrs(1e-7, 10.0, 40)[:n]
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) == pytest.approx(1e8 ** (1 / 39))
    assert (tmp_path / "lr.png").stat().st_size > 1000


def test_stops_when_the_loss_diverges(digits):
    result = lr_find("resnet20", digits, recipe(), start_lr=1e-3, end_lr=1e6, num_it=100)
    assert result.diverged and len(result.lrs) < 100
    assert result.losses[-1] > 4 * min(result.losses)
    assert all(b <= 4 * min(result.losses[:i + 1])
               for i, b in enumerate(result.losses[:-1]))


def test_suggestion_trains_on_digits(digits, capsys, tmp_path):
    result = lr_find("resnet20", digits, recipe(), num_it=60)
    assert 1e-4 < result.suggestion < 1.0
    trained = fit("resnet20", digits, recipe(epochs=2, lr=result.suggestion),
                  verbose=False)
    assert trained.history[-1]["val_top1"] > 0.5
    assert main(["lr-find", "resnet20", "--data", "digits", "--num-it", "30", "--threads",
                 "1", "--plot", str(tmp_path / "p.png"), "--set",
                 "model_kwargs={layers: [1,1,1], widths: [8,16,32], stem_width: 8}"]) == 0
    assert "suggested" in capsys.readouterr().out and (tmp_path / "p.png").exists()
    assert math.isfinite(result.suggestions["steep"])
