"""The learning curve per step: every `every` optimizer steps, the mean training loss and
error of those steps.

An epoch's row says where a run ended each epoch; how fast two architectures learn, and
how noisy their descent is, shows between those points. The values are the ones the loop
already reads from the device to check the loss (train/epoch.py), so recording them adds
no synchronisation and leaves the training itself untouched. The open window is part of
the checkpoint, so a run resumed mid-window ends with exactly the rows of an
uninterrupted one.

Optionally (`recipe.grad_norms`, names of modules) a row also holds the L2 norm of the
gradient that reached each named module's parameters, the mean over the window's steps, in
a column `grad_norm:<module>`: how much learning signal arrives at, say, a network's first
layers (GoogLeNet's auxiliary classifiers were added to increase it). It is measured after
the backward pass and before any clipping, on the device, and read with the loss, so it
costs a few reductions per step and no extra synchronisation.
"""
from __future__ import annotations

import difflib
from typing import Any, Sequence

import torch
from torch import nn

COLUMNS = ("step", "epoch", "train_loss", "train_error")
GRAD_NORM = "grad_norm:"     # the prefix of a gradient-norm column


class StepCurve:
    """Rows {step, epoch (fractional), train_loss, train_error, and the `extra` columns}
    every `every` steps; an extra column is the mean of its per-step values."""

    def __init__(self, every: int, steps_per_epoch: int, extra: Sequence[str] = ()) -> None:
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.extra = tuple(extra)
        self.rows: list[dict[str, Any]] = []
        self._clear()

    def _clear(self) -> None:
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0
        self.extra_sum, self.steps = [0.0] * len(self.extra), 0

    def add(self, steps: Sequence[int], losses: Sequence[float], corrects: Sequence[float],
            sizes: Sequence[int], extras: Sequence[Sequence[float]] | None = None) -> None:
        """Count steps (their index before the optimizer step, their mean loss, how many
        images they got right of how many, and with extra columns each step's values of
        them, in their order), in order."""
        if self.every <= 0:
            return
        if self.extra and extras is None:
            raise ValueError(f"the step curve records {', '.join(self.extra)}: pass each "
                             "step's values of them")
        for i, (step, loss, correct, n) in enumerate(zip(steps, losses, corrects, sizes)):
            self.loss_sum += float(loss) * n      # the mean over images, as the epoch's row
            self.correct += int(correct)
            self.seen += n
            self.steps += 1
            for j, value in enumerate(extras[i] if self.extra else ()):
                self.extra_sum[j] += float(value)
            done = step + 1
            if done % self.every == 0:
                seen = max(self.seen, 1)
                row = {"step": done, "epoch": done / self.steps_per_epoch,
                       "train_loss": self.loss_sum / seen,
                       "train_error": 1.0 - self.correct / seen}
                row.update({name: total / max(self.steps, 1)
                            for name, total in zip(self.extra, self.extra_sum)})
                self.rows.append(row)
                self._clear()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the open window (the rows are kept beside it)."""
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen,
                "extra_sum": list(self.extra_sum), "steps": self.steps}

    def restore(self, rows: list[dict[str, Any]], window: dict[str, Any] | None) -> None:
        self.rows = list(rows)
        self._clear()
        if window:
            self.loss_sum, self.correct = window["loss_sum"], window["correct"]
            self.seen = window["seen"]
            # A checkpoint from before the extra columns has none open.
            self.extra_sum = list(window.get("extra_sum") or self.extra_sum)
            self.steps = window.get("steps", 0)


def step_columns(rows: Sequence[dict[str, Any]]) -> dict[str, list]:
    """The rows as {column: [values]}: the compact form a study stores (the extra columns,
    when recorded, after the four of every curve)."""
    extra = [k for k in (rows[0] if rows else {}) if k not in COLUMNS]
    return {k: [row[k] for row in rows] for k in (*COLUMNS, *extra)}


def grad_norm_groups(model: nn.Module, names: Sequence[str]
                     ) -> list[tuple[str, list[nn.Parameter]]]:
    """[(column, the trainable parameters of the module)] for each module name (as in
    `model.named_modules()`, e.g. 'conv1' or 'layer1.0'); an unknown name, or a module
    with nothing to train, is refused by name."""
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules or not name:
            close = difflib.get_close_matches(name, [m for m in modules if m], n=3)
            raise ValueError(f"grad_norms: the model has no module {name!r}"
                             + (f" (did you mean {', '.join(map(repr, close))}?)" if close
                                else "; names are those of model.named_modules()"))
        params = [p for p in modules[name].parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"grad_norms: module {name!r} has no trainable parameters")
        out.append((GRAD_NORM + name, params))
    return out


@torch.no_grad()
def grad_norms(groups: Sequence[tuple[str, Sequence[nn.Parameter]]]) -> torch.Tensor:
    """(groups,): the L2 norm of each group's gradients together, on their device (a
    parameter the step left without a gradient counts as zero)."""
    norms = []
    for _, params in groups:
        grads = [torch.linalg.vector_norm(p.grad.float()) for p in params if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack(grads)) if grads
                     else torch.zeros((), device=params[0].device))
    return torch.stack(norms)


__all__ = ["COLUMNS", "GRAD_NORM", "StepCurve", "grad_norm_groups", "grad_norms",
           "step_columns"]
