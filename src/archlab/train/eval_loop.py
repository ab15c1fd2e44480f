"""The one evaluation loop: a pass over a loader in eval mode that scores the plain view's
logits, test-time augmented probabilities, or both at once (the study's plain and TTA
metrics come from one pass). The trainer's validation, `evaluate`, TTA and the study all
go through `eval_pass`."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from archlab.analysis.speed import autocast
from archlab.train.losses import split_output
from archlab.train.metrics import Meter, Metrics

# (probabilities (N, classes), the plain view's logits when they were computed, else None)
ProbsOf = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def logits_of(model: nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The main logits of `model` on `x`, in float32 (computed under autocast to
    `precision`)."""
    with autocast(x.device.type, precision):
        logits, _ = split_output(model(x))
    return logits.float()


@torch.no_grad()
def eval_pass(model: nn.Module, loader, num_classes: int, classes: Sequence[str] | None,
              device: torch.device, precision: str = "fp32", progress=None, *,
              probs_of: ProbsOf | None = None, plain: bool = True,
              keep_predictions: bool = False) -> tuple[Metrics | None, Metrics | None]:
    """(plain metrics or None, averaged-view metrics or None) of one pass over `loader`.

    plain: loss, top-1/top-5, per-class and confusion of the logits. probs_of: metrics of
    the probabilities it returns per batch (the loss is the negative log of the
    probability of the true class); its plain logits are reused when it computed them.
    keep_predictions: each Metrics also holds every image's predicted and true class."""
    was_training = model.training
    model.eval()
    plain_meter = Meter(num_classes, device, keep_predictions) if plain else None
    views_meter = Meter(num_classes, device, keep_predictions) if probs_of is not None else None
    try:
        for x, _y, labels in loader:
            logits = None
            if views_meter is not None:
                probs, logits = probs_of(x)
                log_p = probs.clamp_min(1e-12).log()
                views_meter.update(log_p, labels, nn.functional.nll_loss(
                    log_p, labels, reduction="sum"))
            if plain_meter is not None:
                logits = logits if logits is not None else logits_of(model, x, precision)
                plain_meter.update(logits, labels, nn.functional.cross_entropy(
                    logits, labels, reduction="sum"))
            if progress is not None:
                progress.update(1, len(labels))
    finally:
        model.train(was_training)
    return (plain_meter.result(classes) if plain_meter is not None else None,
            views_meter.result(classes) if views_meter is not None else None)


def run_eval(model: nn.Module, loader, num_classes: int, classes: Sequence[str] | None,
             device: torch.device, precision: str = "fp32", progress=None) -> Metrics:
    """One plain pass over `loader` in eval mode: loss, top-1/top-5, per-class, confusion."""
    return eval_pass(model, loader, num_classes, classes, device, precision, progress)[0]
