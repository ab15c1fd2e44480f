"""The optimizer: SGD with Nesterov momentum or AdamW with decoupled weight decay, and never
any decay on norms and biases; torch's fused kernels where it has them."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from archlab.analysis.speed import fusable

LayerRates = Sequence[tuple[Sequence[nn.Parameter], float]]


def _decays(p: nn.Parameter, name: str | None, skip: set[str]) -> bool:
    return not (p.ndim <= 1 or name in skip)


def param_groups(model: nn.Module, weight_decay: float, layer_lrs: LayerRates | None = None
                 ) -> list[dict[str, Any]]:
    """Weight decay on weights only: norms' scales and all biases (one-dimensional
    parameters) are left alone, as are the names a model lists in `no_weight_decay()`
    (position embeddings, class tokens).

    `layer_lrs` [(parameters, lr_scale)] gives every layer group its own pair of groups
    whose `lr_scale` multiplies the schedule's rate (discriminative fine-tuning)."""
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    if layer_lrs is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        out = []
        for params, scale in layer_lrs:
            params = [p for p in params if p.requires_grad]
            no = [p for p in params if not _decays(p, names.get(id(p)), skip)]
            yes = [p for p in params if _decays(p, names.get(id(p)), skip)]
            out += [{"params": g, "weight_decay": wd, "lr_scale": scale}
                    for g, wd in ((yes, weight_decay), (no, 0.0)) if g]
        return out
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if _decays(p, name, skip) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, recipe, layer_lrs: LayerRates | None = None
                    ) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.wd, layer_lrs)
    fused = fusable([p for g in groups for p in g["params"]]) or None
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.peak_lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0, fused=fused)
    # AdamW: the decay shrinks the weights directly (p -= lr * wd * p), decoupled from
    # the adaptive step (Loshchilov & Hutter 1711.05101), as fastai does.
    return torch.optim.AdamW(groups, lr=recipe.peak_lr, betas=recipe.betas, eps=recipe.eps,
                             fused=fused)
