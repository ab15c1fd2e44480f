"""The learning curve per step: every `every` optimizer steps, the mean training loss and
error of those steps.

An epoch's row says where a run ended each epoch; how fast two architectures learn, and
how noisy their descent is, shows between those points. The values are the ones the loop
already reads from the device to check the loss (train/epoch.py), so recording them adds
no synchronisation and leaves the training itself untouched. The open window is part of
the checkpoint, so a run resumed mid-window ends with exactly the rows of an
uninterrupted one.
"""
from __future__ import annotations

from typing import Any, Sequence

COLUMNS = ("step", "epoch", "train_loss", "train_error")


class StepCurve:
    """Rows {step, epoch (fractional), train_loss, train_error} every `every` steps."""

    def __init__(self, every: int, steps_per_epoch: int) -> None:
        self.every = every
        self.steps_per_epoch = steps_per_epoch
        self.rows: list[dict[str, Any]] = []
        self._clear()

    def _clear(self) -> None:
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0

    def add(self, steps: Sequence[int], losses: Sequence[float], corrects: Sequence[float],
            sizes: Sequence[int]) -> None:
        """Count steps (their index before the optimizer step, their mean loss, how many
        images they got right of how many), in order."""
        if self.every <= 0:
            return
        for step, loss, correct, n in zip(steps, losses, corrects, sizes):
            self.loss_sum += float(loss) * n      # the mean over images, as the epoch's row
            self.correct += int(correct)
            self.seen += n
            done = step + 1
            if done % self.every == 0:
                seen = max(self.seen, 1)
                self.rows.append({"step": done, "epoch": done / self.steps_per_epoch,
                                  "train_loss": self.loss_sum / seen,
                                  "train_error": 1.0 - self.correct / seen})
                self._clear()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the open window (the rows are kept beside it)."""
        return {"loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen}

    def restore(self, rows: list[dict[str, Any]], window: dict[str, Any] | None) -> None:
        self.rows = list(rows)
        self._clear()
        if window:
            self.loss_sum, self.correct = window["loss_sum"], window["correct"]
            self.seen = window["seen"]


def step_columns(rows: Sequence[dict[str, Any]]) -> dict[str, list]:
    """The rows as {column: [values]}: the compact form a study stores."""
    return {k: [row[k] for row in rows] for k in COLUMNS}


__all__ = ["COLUMNS", "StepCurve", "step_columns"]
