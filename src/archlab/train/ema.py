"""An exponential moving average of the weights (Polyak averaging), evaluated and saved
instead of the raw weights when the recipe's `ema` decay is on."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from archlab.train.losses import unwrap
from archlab.train.plugin import Plugin

PREFIX = "ema."


class ModelEMA:
    """The average itself. The decay warms up as min(decay, (1 + t) / (10 + t)) so that the
    first, random weights are forgotten quickly; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        src = unwrap(model)
        ema_p = [p for p in self.module.parameters()]
        torch._foreach_lerp_(ema_p, [p.detach() for p in src.parameters()], 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), src.buffers()):
            b_ema.copy_(b)


class EMA(Plugin):
    """The trainer's plugin: averages after every step, and is what gets evaluated."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: ModelEMA | None = None

    def on_setup(self, trainer) -> None:
        self.ema = ModelEMA(trainer.model, self.decay)

    def on_step_end(self, trainer) -> None:
        self.ema.update(trainer.model, trainer.step - 1)   # the step just taken

    def eval_model(self, trainer) -> nn.Module:
        return self.ema.module

    def checkpoint_tensors(self, trainer) -> dict[str, torch.Tensor]:
        return {PREFIX + k: v for k, v in self.ema.module.state_dict().items()}

    def on_resume(self, trainer, state: dict[str, Any],
                  tensors: dict[str, torch.Tensor]) -> None:
        self.ema.module.load_state_dict(
            {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)})
