"""The learning-rate range test (Smith, 1506.01186 section 3.3; fastai's `lr_find`).

Train for up to `num_it` steps while the learning rate grows exponentially from `start_lr`
to `end_lr` (1e-7 to 10 over 100 steps: lr_i = start * (end / start) ** (i / (num_it - 1))),
record the loss smoothed by an exponential moving average (beta 0.98, bias-corrected as in
Adam), and stop once it diverges: above 4 times its minimum, or not finite. The weights, the
optimizer's state and the random-number generators are put back afterwards, so the sweep
leaves the run exactly where it was.

The suggestion is fastai's 'valley' (its default since 2.5): the middle of the longest
stretch over which the smoothed loss keeps falling, a rate that is still on the way down
and well short of the blow-up. 'steep' (the steepest fall of loss per decade of lr) and
'minimum' (the rate at the lowest loss divided by 10) are reported beside it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archlab.train.losses import unwrap
from archlab.train.trainer import Trainer

SUGGESTIONS = ("valley", "steep", "minimum")


@dataclass
class LRFinderResult:
    lrs: list[float]                   # the rate of every step taken
    losses: list[float]                # smoothed loss after each step
    raw_losses: list[float]
    suggestion: float
    method: str
    suggestions: dict[str, float] = field(default_factory=dict)
    diverged: bool = False             # stopped early because the loss blew up
    plot_path: Path | None = None

    def plot(self, path: str | Path, skip_end: int = 5) -> Path:
        """Loss against learning rate (log scale), the suggestions marked; a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = max(1, len(self.lrs) - skip_end)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(self.lrs[:n], self.losses[:n], color="C0")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss (smoothed)")
        for k, (name, lr) in enumerate(self.suggestions.items()):
            y = float(np.interp(math.log(lr), np.log(self.lrs), self.losses))
            ax.plot([lr], [y], "o", color=f"C{k + 1}",
                    label=f"{name} {lr:.2e}" + (" (suggested)" if name == self.method else ""))
        ax.legend()
        ax.set_title("learning-rate range test")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        self.plot_path = path
        return path


# --------------------------------------------------------------------------------------
# Suggestions from (lrs, smoothed losses)
# --------------------------------------------------------------------------------------


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's 'valley': the longest decreasing subsequence of the losses spans
    [start, end]; take the point half-way along it."""
    n = len(losses)
    if n < 2:
        return lrs[0]
    run = [1] * n                       # longest decreasing subsequence ending at i
    best_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[i] > run[best_end]:
            best_end = i
    start = best_end - run[best_end]
    third = (best_end - start) / 3
    return lrs[max(0, start + int(third) + int(third / 2))]


def steepest(lrs: list[float], losses: list[float]) -> float:
    """The rate where the loss falls fastest per decade of learning rate."""
    if len(losses) < 3:
        return lrs[0]
    slope = np.gradient(np.asarray(losses), np.log10(np.asarray(lrs)))
    return lrs[int(np.argmin(slope))]


def minimum_tenth(lrs: list[float], losses: list[float]) -> float:
    """The rate at the lowest loss, divided by 10 (the old fastai rule of thumb)."""
    return lrs[int(np.argmin(losses))] / 10


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------


def sweep_lrs(start_lr: float, end_lr: float, num_it: int) -> list[float]:
    return [start_lr * (end_lr / start_lr) ** (i / max(num_it - 1, 1)) for i in range(num_it)]


def lr_find_trainer(trainer, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int = 100,
                    beta: float = 0.98, stop_div: bool = True, suggest: str = "valley",
                    plot: str | Path | None = None) -> LRFinderResult:
    """Run the range test with a Trainer's model, data, loss and optimizer, then restore
    its weights, optimizer state and random generators."""
    if suggest not in SUGGESTIONS:
        raise ValueError(f"suggest must be one of {', '.join(SUGGESTIONS)}, got {suggest!r}")
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_it < 2:
        raise ValueError(f"num_it must be at least 2, got {num_it}")
    net = unwrap(trainer.model)
    optimizer = trainer.optimizer
    saved_model = copy.deepcopy(net.state_dict())
    saved_opt = copy.deepcopy(optimizer.state_dict())
    saved_rng = torch.get_rng_state()
    saved_loader = trainer.train_loader.rng_state()
    saved_epoch = trainer.train_loader.epoch
    schedule = sweep_lrs(start_lr, end_lr, num_it)
    lrs, losses, raw = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    model = trainer.train_model
    was_training = net.training
    model.train()
    device = trainer.device
    try:
        epoch = 0
        while len(lrs) < num_it and not diverged:
            trainer.train_loader.set_epoch(epoch)
            for x, y, _labels in trainer.train_loader:
                i = len(lrs)
                if i >= num_it:
                    break
                lr = schedule[i]
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                with trainer.settings.autocast(device.type):
                    output = model(x)
                loss, _ = trainer.loss(output, y, x)   # a plugin's (distillation) or CE
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                value = float(loss.detach())
                avg = beta * avg + (1 - beta) * value
                smooth = avg / (1 - beta ** (i + 1))
                lrs.append(lr)
                raw.append(value)
                losses.append(smooth)
                best = min(best, smooth)
                if stop_div and (not math.isfinite(smooth) or smooth > 4 * best):
                    diverged = True
                    break
            epoch += 1
    finally:
        net.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_opt)
        optimizer.zero_grad(set_to_none=True)
        torch.set_rng_state(saved_rng)
        trainer.train_loader.set_epoch(saved_epoch, 0, saved_loader)
        net.train(was_training)
    # fastai leaves out the first tenth (the loss barely moves) and the last 5 (the blow-up)
    # before looking for a suggestion.
    lo, hi = len(lrs) // 10, max(len(lrs) // 10 + 2, len(lrs) - 5)
    finite = [(a, b) for a, b in zip(lrs[lo:hi], losses[lo:hi]) if math.isfinite(b)]
    if len(finite) < 2:
        raise RuntimeError(f"the loss diverged after {len(lrs)} steps, too early to suggest a "
                           f"learning rate; lower start_lr (now {start_lr:g})")
    s_lrs, s_losses = [a for a, _ in finite], [b for _, b in finite]
    suggestions = {"valley": valley(s_lrs, s_losses), "steep": steepest(s_lrs, s_losses),
                   "minimum": minimum_tenth(s_lrs, s_losses)}
    result = LRFinderResult(lrs, losses, raw, suggestions[suggest], suggest, suggestions,
                            diverged)
    if plot is not None:
        result.plot(plot)
    return result


def lr_find(model, data, recipe=None, *, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_it: int = 100, beta: float = 0.98, stop_div: bool = True,
            suggest: str = "valley", plot: str | Path | None = None, verbose: bool = False,
            **trainer_kwargs: Any) -> LRFinderResult:
    """The learning-rate range test for `model` (a registered name or a module, left with
    the weights it came with) on `data` under `recipe` (its optimizer, batch size,
    augmentation, loss). Returns the sweep and the suggested rate ('valley' by default);
    `plot` saves loss against lr as a PNG."""
    trainer = Trainer(model, data, recipe, run_dir=None, verbose=verbose, **trainer_kwargs)
    return lr_find_trainer(trainer, start_lr, end_lr, num_it, beta, stop_div, suggest, plot)
