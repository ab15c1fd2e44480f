"""What `tricks`, `se-cost` and `cardinality` share: variants of one bottleneck ResNet,
trained under one recipe and judged against a baseline, and their costs counted exactly.

The three papers make claims about ResNet-50 on ImageNet, which takes days on a GPU. At
quick scale the network keeps what the claims are about and shrinks the rest: the bottleneck
block (1x1 reduce, 3x3, 1x1 expand by 4) with its projection shortcuts, in three stages of
one block each, the second and third halving the map and doubling the width, so that two
blocks downsample (where ResNet-B and -D change something). Its stage widths are 8, 16 and
32 (32, 64 and 128 channels out of each block), a sixteenth of ResNet-50's, and it sees
Fashion-MNIST's 28 px images through the small-input stem (a 3x3 stride-1 convolution, no
max pooling), so the stages work at 28, 14 and 7 px: about 4 million multiply-accumulates
(MACs) per image against ResNet-50's 4.1 billion, and a few seconds per epoch on one core
(channels_last: convolutions on a CPU run about twice as fast in that memory layout).

Every variant is the registered `resnet50` builder with the scale's layout in `model_kwargs`
and the variant's own flags on top, so that nothing but the flags differs. The full scale
is ResNet-50's layout (3, 4, 6, 3 blocks; widths 64 to 512) on CIFAR-10 for a GPU.

A claim about cost is a computation, not a measurement: `net_costs` counts the parameters
and MACs of a configuration on the meta device (no memory, no weights), and `paper_costs`
does so for registered ImageNet models at 224 px, where the papers counted theirs.
"""
from __future__ import annotations

import copy
import functools
import json
from typing import Any, Callable, Mapping, Sequence

import torch

from archlab.analysis import costs_of
from archlab.experiments.base import Context
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import Variant, compare_variants
from archlab.models import create_model
from archlab.study import Run
from archlab.study.entry import canonical

MODEL = "resnet50"              # the registered builder; the scale's layout overrides its size

# What changes with the scale: the data, the network's size, the length of training.
_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a sixth of Fashion-MNIST, two epochs
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.15,
                 "test_fraction": 0.5},
        "recipe": {"epochs": 2, "batch_size": 32},
        "net": {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 16},
        "image_size": 28, "in_chans": 1, "seeds": 3, "jobs": 2,
    },
    "full": {    # a GPU: ResNet-50's layout on CIFAR-10
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128},
        "net": {"layers": [3, 4, 6, 3], "widths": [64, 128, 256, 512], "stem_width": 64},
        "image_size": 32, "in_chans": 3, "seeds": 3, "jobs": 1,
    },
}

# SGD with Nesterov momentum and one-cycle, the trainer's default; the ResNet papers' weight
# decay (not applied to norms and biases). No augmentation: two epochs do not overfit.
RECIPE = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-4, "threads": 1,
          "channels_last": True, "curve_every": 20}


def settings() -> dict[str, dict[str, Any]]:
    """A copy of the scales' settings, for an experiment to own (its tests change them)."""
    return copy.deepcopy(_SETTINGS)


def protocol(setting: Mapping[str, Any], description: str,
             variants: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]
             ) -> dict[str, Any]:
    """The study: every variant (label -> its ResNet flags) on the scale's network, one
    recipe, the scale's data and seeds."""
    return {
        "description": description, "data": setting["data"],
        "recipe": {**RECIPE, **setting["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": setting["jobs"],
        "measure": {"throughput_batch": 64, "throughput_seconds": 0.5},
        "models": [{"name": MODEL, "label": label,
                    "model_kwargs": {**setting["net"], **flags}}
                   for label, flags in variants.items()],
    }


def net_costs(setting: Mapping[str, Any], flags: Mapping[str, Any], num_classes: int = 10
              ) -> dict[str, int]:
    """{params, macs} of the scale's network with `flags`, at the scale's input, as the
    study builds it (small-input stem), counted on the meta device."""
    kwargs = {"num_classes": num_classes, "in_chans": setting["in_chans"],
              "small_input": True, **setting["net"], **flags}
    size = (setting["in_chans"], setting["image_size"], setting["image_size"])
    return dict(_costs(MODEL, canonical(kwargs), size))


def paper_costs(models: Mapping[str, tuple[str, Mapping[str, Any]]], size: int = 224
                ) -> dict[str, dict[str, int]]:
    """{label: {params, macs}} of registered ImageNet models (label -> (name, extra flags)),
    1000 classes at `size` px: the paper's own setting, counted exactly."""
    return {label: dict(_costs(name, canonical(flags), (3, size, size)))
            for label, (name, flags) in models.items()}


@functools.lru_cache(maxsize=512)
def _costs(name: str, kwargs: str, size: tuple[int, ...]) -> tuple[tuple[str, int], ...]:
    # Cached by the model's JSON keywords: an experiment that searches widths, or runs
    # again to resume its study, counts each network once per process.
    with torch.device("meta"):
        model = create_model(name, **json.loads(kwargs))
    params, macs = costs_of(model, size)
    return (("params", params), ("macs", macs))


def train_variants(name: str, settings: Mapping[str, Mapping[str, Any]],
                   make_protocol: Callable[[str, list[int]], dict[str, Any]], ctx: Context,
                   baseline: str) -> tuple[dict[str, Variant], dict[str, list[Run]]]:
    """Train the study `make_protocol(scale, seeds)` (the scale's own number of seeds
    unless the context says) and judge every variant against `baseline` (paired, Holm
    over the family): the variants, and the runs by label."""
    seeds = seeds_for(ctx, settings)
    runs = by_label(train_study(name, make_protocol(ctx.scale, seeds), ctx))
    return compare_variants(runs, baseline), runs


def paper_beside_ours(paper: Mapping[str, float], numbers: Mapping[str, Mapping[str, Any]],
                      names: Mapping[str, str], title: str, prefix: str,
                      paper_label: str = "paper (ImageNet)") -> str:
    """Each variant's difference in top-1 with the baseline, in points: the paper's (a
    bar; `paper` label -> points, absent where the paper has none) beside ours (a point with
    its paired bootstrap interval), one row per variant of `numbers` but the baseline."""
    from archlab._plot import figure, to_svg

    labels = [k for k, v in numbers.items() if v.get("delta") is not None]
    fig = figure(6.5, 0.5 + 0.45 * len(labels), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(labels)))[::-1]
    for y, label in zip(ys, labels):
        if label in paper:
            ax.barh(y + 0.18, paper[label], height=0.32, color="tab:grey", alpha=0.6,
                    label=paper_label if y == ys[0] else None)
        d, (low, high) = 100 * numbers[label]["delta"], numbers[label]["delta_ci"]
        ax.errorbar([d], [y - 0.18], xerr=[[d - 100 * low], [100 * high - d]], fmt="o",
                    color="tab:blue", capsize=3, label="ours (95% interval)"
                    if y == ys[0] else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ys, [names.get(k, k) for k in labels])
    ax.set_xlabel("top-1 difference with the baseline, points")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return to_svg(fig, prefix)


def built(setting: Mapping[str, Any], flags: Mapping[str, Any]):
    """The scale's network with `flags`, initialised, to look at its modules and weights."""
    return create_model(MODEL, num_classes=10, in_chans=setting["in_chans"], small_input=True,
                        **{**setting["net"], **flags})


__all__ = ["MODEL", "RECIPE", "built", "net_costs", "paper_beside_ours",
           "paper_costs", "protocol", "settings", "train_variants"]
