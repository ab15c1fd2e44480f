"""Staged deepening: start a deeper network from a trained shallower one of its family.

VGG (Simonyan & Zisserman 2014, 1409.1556, section 3.1) could not train its deep nets from a
random N(0, 0.01) start, so it trained configuration A (11 layers) first and then "when
training deeper architectures, we initialised the first four convolutional layers and the
last three fully-connected layers with the layers of net A (the intermediate layers were
initialised randomly)". With archlab's layer names (the authors' Caffe names) that is, for
A -> B, C, D or E:

    features.conv1_1, conv2_1, conv3_1, conv3_2   (A's first four convolutions, with their
                                                  batch norms bn1_1 ... for the _bn nets)
    classifier.fc6, fc7, fc8                      (the three fully connected layers)

and everything else of the deeper net (conv1_2, conv2_2, conv3_3, all of stages 4 and 5)
keeps its initialisation. A's own conv4_x and conv5_x have places of the same name and shape
in D and E as well; `rule="all"` copies them too (the paper did not).

The general rule (`rule="all"`, the default outside VGG): a layer of the deeper net is
copied when the shallower net has a layer of the same name with tensors of the same shapes.
Families name layers by (stage, position in the stage) - VGG's conv{stage}_{i}, ResNet's
layer{stage}.{block}, ViT's blocks.{i} - so this copies the stem, the leading blocks of every
stage block by block (the first block of a stage holds its stride and projection, so its
shapes agree), and the head; the blocks only the deeper net has start at random. With
ResNet's `zero_init_last` those extra blocks start as identities, and the deepened net
computes exactly the function of the shallow one before its first step.

A layer is copied whole or not at all; one whose name matches but whose shapes differ (a
head for another number of classes, another width) is reported as a mismatch and keeps its
initialisation.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archlab.models import create_model
from archlab.train.losses import unwrap
from archlab.train.plugin import Plugin

RULES = ("auto", "all", "vgg")
VGG_FIRST_CONVS = 4          # "the first four convolutional layers" of net A
_VGG_LAYER = re.compile(r"features\.(?:conv|bn)(\d+)_(\d+)$")


@dataclass
class DeepenReport:
    """What `deepen` did, layer by layer (a layer: a module holding tensors)."""

    rule: str
    copied: list[str] = field(default_factory=list)       # from the shallow net
    random: list[str] = field(default_factory=list)       # the deeper net's own init
    mismatched: list[tuple[str, str]] = field(default_factory=list)  # (layer, why)
    unused: list[str] = field(default_factory=list)       # shallow layers with no place
    source: str = ""
    copied_params: int = 0                                # parameters copied

    def summary(self) -> list[str]:
        lines = [f"initialised from {self.source or 'the shallow net'} (rule {self.rule}): "
                 f"{len(self.copied)} layers copied ({self.copied_params:,} parameters), "
                 f"{len(self.random)} left at their initialisation"]
        lines.append("  copied: " + (", ".join(self.copied) or "none"))
        if self.random:
            lines.append("  at init: " + ", ".join(self.random))
        for layer, why in self.mismatched:
            lines.append(f"  mismatch: {layer}: {why}; left at init")
        if self.unused:
            lines.append("  unused from the source: " + ", ".join(self.unused))
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "source": self.source, "copied": self.copied,
                "random": self.random, "mismatched": [list(m) for m in self.mismatched],
                "unused": self.unused, "copied_params": self.copied_params}


def _layers(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{layer name: {tensor name: tensor}} in the state dict's order."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        layer, _, leaf = key.rpartition(".")
        out.setdefault(layer, {})[leaf] = value
    return out


def _source_state(source: nn.Module | str | Path | dict) -> tuple[dict[str, torch.Tensor],
                                                                  dict[str, Any], str]:
    """(state dict, its info (model name and kwargs) when known, a name to report)."""
    if isinstance(source, nn.Module):
        net = unwrap(source)
        return (net.state_dict(), {"model": getattr(net, "model_name", None)},
                getattr(net, "model_name", None) or type(net).__name__)
    if isinstance(source, dict):
        return source, {}, "a state dict"
    from archlab.train.checkpoint import read_model

    weights, info = read_model(source)
    return weights, info, str(source)


def _vgg_selection(layers: list[str], first_convs: int) -> set[str]:
    """The paper's choice: the first `first_convs` convolutions of the shallow net (with
    their batch norms) and the fully connected layers."""
    order: list[tuple[str, str]] = []
    for name in layers:
        m = _VGG_LAYER.match(name)
        if m and (m[1], m[2]) not in order:
            order.append((m[1], m[2]))
    keep = set(order[:first_convs])
    chosen = {n for n in layers if (m := _VGG_LAYER.match(n)) and (m[1], m[2]) in keep}
    return chosen | {n for n in layers if n.startswith("classifier.")}


def deepen(shallow: nn.Module | str | Path | dict, deeper: nn.Module | str, *,
           rule: str = "auto", first_convs: int = VGG_FIRST_CONVS,
           exclude: tuple[str, ...] = (), **create_kwargs: Any
           ) -> tuple[nn.Module, DeepenReport]:
    """Initialise `deeper` (a module, or a registered name built with the shallow run's
    num_classes, in_chans and small_input unless `create_kwargs` say otherwise) from
    `shallow` (a trained module, a run directory or checkpoint archlab wrote, or a state
    dict), layer by layer where names and shapes agree.

    rule: 'vgg' copies VGG's choice (the shallow net's first `first_convs` convolutions and
    the three fully connected layers); 'all' every layer that fits; 'auto' is 'vgg' between
    two VGGs and 'all' otherwise. `exclude`: layer-name patterns never copied (e.g.
    'head.*' to keep a fresh classifier). Returns (the deeper module, a DeepenReport)."""
    if rule not in RULES:
        raise ValueError(f"deepen: rule must be one of {', '.join(RULES)}, got {rule!r}")
    state, info, source_name = _source_state(shallow)
    if isinstance(deeper, str):
        kwargs = {**(info.get("model_kwargs") or {}), **create_kwargs}
        if not kwargs and isinstance(shallow, nn.Module):
            kwargs = {k: getattr(shallow, k) for k in ("num_classes", "in_chans")
                      if hasattr(shallow, k)}
        target = create_model(deeper, **kwargs)
    else:
        target = deeper
    net = unwrap(target)
    src_model = info.get("model")
    dst_model = getattr(net, "model_name", None)
    is_vgg = type(net).__name__ == "VGG" and all(
        _VGG_LAYER.match(n) or n.startswith("classifier") for n in _layers(state))
    if rule == "auto":
        rule = "vgg" if is_vgg else "all"
    elif rule == "vgg" and not is_vgg:
        raise ValueError(f"deepen: rule 'vgg' is VGG's staged training; {source_name} -> "
                         f"{dst_model or type(net).__name__} is not VGG to VGG (use rule='all')")

    src_layers = _layers(state)
    dst_state = net.state_dict()
    dst_layers = _layers(dst_state)
    wanted = set(src_layers) if rule == "all" else _vgg_selection(list(src_layers),
                                                                  first_convs)
    report = DeepenReport(rule, source=source_name)
    new_state = {}
    for layer, tensors in dst_layers.items():
        theirs = src_layers.get(layer)
        excluded = any(fnmatch.fnmatchcase(layer, p) for p in exclude)
        if theirs is None or layer not in wanted or excluded:
            report.random.append(layer)
            continue
        why = None
        if set(theirs) != set(tensors):
            why = (f"holds {sorted(theirs)} in the source, {sorted(tensors)} here")
        else:
            bad = [f"{leaf} {tuple(theirs[leaf].shape)} -> {tuple(t.shape)}"
                   for leaf, t in tensors.items() if theirs[leaf].shape != t.shape]
            if bad:
                why = "shapes differ: " + ", ".join(bad)
        if why is not None:
            report.mismatched.append((layer, why))
            report.random.append(layer)
            continue
        report.copied.append(layer)
        for leaf, t in theirs.items():
            new_state[f"{layer}.{leaf}" if layer else leaf] = t
            if t.is_floating_point() and leaf not in ("running_mean", "running_var"):
                report.copied_params += t.numel()
    report.unused = [n for n in src_layers if n not in dst_layers]
    if not report.copied:
        raise ValueError(
            f"deepen: no layer of {source_name} fits {dst_model or type(net).__name__} "
            f"(rule {rule}): the two must be of one family with the same layer names"
            + (f"; {len(report.mismatched)} layers match by name but not by shape "
               f"(first: {report.mismatched[0][0]}: {report.mismatched[0][1]})"
               if report.mismatched else "")
            + (f" (source {src_model})" if src_model else ""))
    with torch.no_grad():
        for key, value in new_state.items():
            dst_state[key].copy_(value.to(dst_state[key].device, dst_state[key].dtype))
    return target, report


class Deepen(Plugin):
    """The trainer's plugin for `init_from`: a fresh run (not a resumed one, whose
    checkpoint holds the weights) starts from the trained shallower net."""

    def __init__(self, source: str | Path) -> None:
        self.source = source

    def on_model(self, trainer, net: nn.Module) -> nn.Module:
        if trainer.resume_state is None:
            for line in deepen(self.source, net)[1].summary():
                trainer.log(line)
        return net
