"""Learning-rate (and momentum) schedules, as plain functions of the step.

- one-cycle (Smith 1803.09820, as fastai runs it): the learning rate rises by a cosine from
  lr_max/div to lr_max over the first pct_start of the steps, then falls by a cosine to
  lr_max/div_final; momentum moves the other way (0.95 -> 0.85 -> 0.95), since a high
  learning rate wants less momentum to stay stable.
- cosine with linear warm-up (Loshchilov & Hutter 1608.03983, without restarts; Goyal et
  al. 1706.02677 for the warm-up).
- step decay: multiply by gamma at milestone epochs (the ResNet paper's /10 at 32k, 48k).
- constant.

A function gives the value *for* step i (before the i-th update), i = 0 .. total-1. The
`Schedule` object holds nothing but these parameters, so resuming needs only the step.
"""
from __future__ import annotations

import bisect
import math
from typing import Sequence


def cos_anneal(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos: from `start` at pos 0 to `end` at pos 1 along half a cosine."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def one_cycle(step: int, total: int, lr_max: float, pct_start: float = 0.25,
              div: float = 25.0, div_final: float = 1e5,
              moms: Sequence[float] | None = (0.95, 0.85, 0.95)
              ) -> tuple[float, float | None]:
    """(learning rate, momentum) for `step` of a `total`-step one-cycle."""
    pos = step / total
    if pos < pct_start:
        p = pos / pct_start
        lr = cos_anneal(lr_max / div, lr_max, p)
        mom = cos_anneal(moms[0], moms[1], p) if moms else None
    else:
        p = (pos - pct_start) / (1 - pct_start)
        lr = cos_anneal(lr_max, lr_max / div_final, p)
        mom = cos_anneal(moms[1], moms[2], p) if moms else None
    return lr, mom


def warmup_cosine(step: int, total: int, lr_max: float, warmup: int = 0,
                  min_lr: float = 0.0) -> float:
    """Linear warm-up to lr_max over `warmup` steps, then a cosine down to min_lr."""
    if step < warmup:
        return lr_max * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + (lr_max - min_lr) * (1 + math.cos(math.pi * t)) / 2


def step_decay(step: int, lr_max: float, milestones: Sequence[int], gamma: float = 0.1,
               warmup: int = 0) -> float:
    """lr_max times gamma for every milestone (a step index) already reached."""
    if step < warmup:
        return lr_max * (step + 1) / warmup
    return lr_max * gamma ** bisect.bisect_right(sorted(milestones), step)


class Schedule:
    """The recipe's schedule over a run of `total` steps; `apply` sets an optimizer's groups."""

    def __init__(self, kind: str, total: int, lr_max: float, steps_per_epoch: int,
                 pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5,
                 moms: Sequence[float] | None = (0.95, 0.85, 0.95), warmup_epochs: float = 0.0,
                 min_lr: float = 0.0, milestones: Sequence[float] = (), gamma: float = 0.1
                 ) -> None:
        self.kind, self.total, self.lr_max = kind, max(1, total), lr_max
        self.pct_start, self.div, self.div_final = pct_start, div, div_final
        self.moms = tuple(moms) if moms else None
        self.warmup = int(round(warmup_epochs * steps_per_epoch))
        self.min_lr, self.gamma = min_lr, gamma
        self.milestones = [int(round(m * steps_per_epoch)) for m in milestones]

    @classmethod
    def from_recipe(cls, recipe, steps_per_epoch: int) -> "Schedule":
        return cls(recipe.schedule, recipe.epochs * steps_per_epoch, recipe.peak_lr,
                   steps_per_epoch, recipe.pct_start, recipe.div, recipe.div_final,
                   recipe.moms, recipe.warmup_epochs, recipe.min_lr, recipe.milestones,
                   recipe.gamma)

    def __call__(self, step: int) -> tuple[float, float | None]:
        step = min(step, self.total - 1)
        if self.kind == "onecycle":
            return one_cycle(step, self.total, self.lr_max, self.pct_start, self.div,
                             self.div_final, self.moms)
        if self.kind == "cosine":
            return warmup_cosine(step, self.total, self.lr_max, self.warmup, self.min_lr), None
        if self.kind == "step":
            return step_decay(step, self.lr_max, self.milestones, self.gamma, self.warmup), None
        if self.kind == "constant":
            return self.lr_max, None
        raise ValueError(f"unknown schedule {self.kind!r}")

    def apply(self, optimizer, step: int) -> float:
        lr, mom = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if mom is not None:
                if "betas" in group:
                    group["betas"] = (mom, group["betas"][1])
                elif "momentum" in group:
                    group["momentum"] = mom
        return lr
