"""The training loss, in one place.

A model usually returns logits. Some return a tuple in training mode: GoogLeNet and
Inception v3 return (logits, aux logits...) and carry a class attribute `aux_weight` (0.3 in
GoogLeNet, 1409.4842: the auxiliary classifiers push gradient into the middle of a deep
network); a distilled DeiT returns (class-token logits, distillation-token logits). Here the
first element is the prediction, and the others add their own cross-entropy times
`aux_weight` when the model declares one. Distillation (a teacher's targets for the second
head) will build on this function.

Targets are class indices, or probabilities (n, classes) after mixup or cutmix; label
smoothing (Inception v3, 1512.00567, eps 0.1) applies to both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under torch.compile / DataParallel wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def split_output(output: torch.Tensor | tuple | list) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(main logits, other outputs) from whatever a model's forward returned."""
    if isinstance(output, (tuple, list)):
        if not output:
            raise ValueError("the model returned an empty tuple")
        return output[0], [o for o in output[1:] if o is not None]
    return output, []


def classification_loss(output: torch.Tensor | tuple, target: torch.Tensor,
                        model: nn.Module | None = None, label_smoothing: float = 0.0
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, logits): cross-entropy of the main logits, plus `aux_weight` times the
    cross-entropy of each auxiliary output when the model has `aux_weight`."""
    logits, others = split_output(output)
    loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    aux_weight = getattr(unwrap(model), "aux_weight", 0) if model is not None else 0
    if aux_weight and others:
        for aux in others:
            loss = loss + aux_weight * F.cross_entropy(aux.float(), target,
                                                       label_smoothing=label_smoothing)
    return loss, logits
