"""What a plugin of the trainer is: an object with any of the hooks below (they are all
optional; subclass `Plugin` for the no-op defaults and the documentation). The trainer calls
them at fixed points of its loop and knows nothing else about the plugin.

Setting up (in this order, once):

    on_model(trainer, net) -> net      the network is built (or given) and not yet on the
                                       device: return it changed or replaced (staged
                                       deepening copies weights; fine-tuning puts a new
                                       head on it)
    on_setup(trainer)                  model, data, optimizer and schedule exist: replace
                                       the optimizer or schedule, load a teacher, copy the
                                       weights for an average

Training (every epoch, every step):

    on_fit_start(trainer)              `run()` begins (after the run summary is logged)
    on_epoch_start(trainer, epoch)     before the epoch's first batch (a resumed epoch too)
    loss(trainer, output, target, x)   (loss, logits) to train on, or None for the next
                                       plugin's or the trainer's own classification loss
    on_step_end(trainer)               after the optimizer step; trainer.step counts it
    on_train_epoch_end(trainer)        the epoch's steps are done and trainer.epoch counts
                                       it; evaluation and the checkpoint follow
    on_epoch_end(trainer, row)         the epoch's metrics row is final and saved
    on_fit_end(trainer, test, status)  `run()` ends: 'finished' (test: the held-out metrics
                                       or None), 'interrupted' (a checkpoint to resume
                                       from) or 'failed'; the loggers close their runs

Evaluation and checkpoints:

    eval_model(trainer) -> module|None the weights to evaluate and save instead of the
                                       trained ones (an average of them)
    checkpoint_tensors(trainer) -> {}  tensors that must survive a resume, stored beside the
                                       optimizer's; names must not start with 'optim.'
    checkpoint_state(trainer) -> {}    JSON values that must survive a resume (a logger's
                                       run id), kept in the checkpoint's state under
                                       'plugin_state'; keys must not clash across plugins
    on_resume(trainer, state, tensors) the checkpoint's weights are loaded, its optimizer
                                       state not yet: restore what the plugin keeps

Callbacks given to the trainer are called the same way, after the plugins: an object with
only `on_step_end(trainer)` and `on_epoch_end(trainer, row)` (the study's watch) is one.
Plugins that follow the recipe are chosen in train/plugins.py.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Plugin:
    """No-op hooks; a plugin overrides those it needs."""

    def on_model(self, trainer, net: nn.Module) -> nn.Module:
        return net

    def on_setup(self, trainer) -> None:
        pass

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def loss(self, trainer, output, target: torch.Tensor, x: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def on_step_end(self, trainer) -> None:
        pass

    def on_train_epoch_end(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, trainer, test, status: str) -> None:
        pass

    def eval_model(self, trainer) -> nn.Module | None:
        return None

    def checkpoint_tensors(self, trainer) -> dict[str, torch.Tensor]:
        return {}

    def checkpoint_state(self, trainer) -> dict[str, Any]:
        return {}

    def on_resume(self, trainer, state: dict[str, Any],
                  tensors: dict[str, torch.Tensor]) -> None:
        pass
