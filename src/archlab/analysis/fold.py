"""Batch norm folded into the convolution before it, for inference.

In evaluation a batch norm is a fixed per-channel affine map, y = γ (x − μ) / √(σ² + ε) + β,
and a convolution is linear, so the two compose into one convolution with scaled weights
and a bias: the same function, one pass over memory fewer (torch's `fuse_conv_bn_eval` does
the arithmetic). Which norm follows which convolution is read from one forward pass rather
than from the module tree, because the families wire their layers in forward() (a ResNet
block's conv1 and bn1 are siblings, not a Sequential): a norm whose input is exactly a
convolution's output, and that output feeds nothing else, is folded into it. The result is
checked against the original on the example batch.
"""
from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, batch norm) module names where the norm takes the convolution's output
    and nothing else does, found by running `example` through `model` (in eval mode)."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, nn.Module] = {}      # id(output tensor) -> the conv that made it
    consumers: Counter[int] = Counter()      # id(tensor) -> modules that took it as input
    norm_inputs: list[tuple[nn.Module, int]] = []
    keep: list[torch.Tensor] = []            # alive while hooking, so no id is reused

    def pre_hook(module: nn.Module, args) -> None:
        for a in args:
            if isinstance(a, torch.Tensor):
                consumers[id(a)] += 1
                keep.append(a)
        if isinstance(module, nn.BatchNorm2d) and args and isinstance(args[0], torch.Tensor):
            norm_inputs.append((module, id(args[0])))

    def conv_hook(module: nn.Module, args, out) -> None:
        produced[id(out)] = module
        keep.append(out)

    # Hooks on the leaves only: a container that passes a tensor through would count as a
    # second consumer of it.
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(pre_hook) for m in leaves]
    handles += [m.register_forward_hook(conv_hook) for m in leaves
                if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    pairs, seen_convs = [], set()
    for norm, tensor_id in norm_inputs:
        conv = produced.get(tensor_id)
        # The convolution runs once (not a module applied twice, whose two outputs would need
        # two norms) and only this norm reads its output.
        if conv is None or conv in seen_convs or consumers[tensor_id] != 1:
            continue
        seen_convs.add(conv)
        pairs.append((names[conv], names[norm]))
    return pairs


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def fold_batchnorm(model: nn.Module, example: torch.Tensor, tol: float = 1e-3,
                   inplace: bool = False) -> nn.Module:
    """`model` (a copy unless `inplace`) in eval mode with every batch norm that directly
    follows a convolution folded into it (the norm becomes an Identity). The folded
    output on `example` must equal the original's to `tol` relative to its largest value,
    else it is an error: a wiring the tracing misread must never change an answer
    silently."""
    model = model.eval()
    pairs = conv_bn_pairs(model, example)
    with torch.no_grad():
        want = _first(model(example)).float()
    folded = model if inplace else copy.deepcopy(model).eval()
    for conv_name, norm_name in pairs:
        conv = folded.get_submodule(conv_name)
        norm = folded.get_submodule(norm_name)
        _set_module(folded, conv_name, fuse_conv_bn_eval(conv, norm))
        _set_module(folded, norm_name, nn.Identity())
    with torch.no_grad():
        got = _first(folded(example)).float()
    scale = max(1.0, want.abs().max().item())
    error = (want - got).abs().max().item()
    if error > tol * scale:
        raise RuntimeError(f"folding {len(pairs)} batch norms changed the output by {error:.3g}"
                           f" (largest logit {scale:.3g}): leave fuse_bn off for this model")
    folded.folded_batchnorms = len(pairs)
    return folded


def _first(out):
    return out if isinstance(out, torch.Tensor) else out[0]
