"""`swish-vs-relu`: why EfficientNet's neurons are Swish, not ReLU (Ramachandran, Zoph and Le,
"Searching for Activation Functions", 1710.05941, Table 3 and section 5; adopted by
EfficientNet, Tan and Le, ICML 2019, 1905.11946).

A ReLU, max(0, x), passes a positive input unchanged and sets a negative one to zero: its
slope jumps from 0 to 1 at the origin, and a unit whose input stays negative passes no
gradient at all. Swish, x·sigmoid(x) (also called SiLU), is a smooth version of it: about x
for large x, about 0 for very negative x, but with a small dip below zero around x ≈ -1.3
and a slope that changes gradually. Ramachandran et al. found it by an automated search over
formulas of activations and then replaced every ReLU by it in networks designed for ReLU,
with their hyperparameters unchanged. On ImageNet it was better by 0.9 points of top-1 for
Mobile NASNet-A and 0.6 for Inception-ResNet-v2 (Table 3), and across their nine networks and
three data sets it matched or beat ReLU almost everywhere. EfficientNet, whose B0 came out of
a search with Swish in it, uses Swish in every layer: "about one point", the course's
comparison article says.

Measured: EfficientNet-B0 for small images (stride-1 stem), narrowed by a width multiplier
so that it trains on this CPU, trained twice under one recipe: once with its own activation,
Swish, and once with `act: relu`, which replaces every Swish, the squeeze-excitation's
inner one included (as the paper replaced every ReLU); nothing else differs. Several seeds;
dropout and stochastic depth are off, as the short runs barely overfit. The two are compared
on the same test images and seeds by the paired test of `variants.compare_variants`
(McNemar's exact test over seeds and images, with the paired bootstrap interval of the
difference in top-1), with ReLU as the baseline, since Swish is the change the claim is
about.

The verdict: the claim holds when Swish is significantly more accurate than ReLU, does not
hold when it is significantly less accurate, and is inconclusive when the test cannot tell
them apart (a tie is not equality, only that this many images and seeds cannot separate
them). A significant gain smaller than the paper's still holds the claim's direction: how
large it is depends on the network, its depth, the data and how long it trains.
"""
from __future__ import annotations

from typing import Any, Sequence

from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import (as_numbers, compare_variants, cost_accuracy_figure,
                                          delta_text, top1_text, variant_table)

BASELINE, SWISH = "relu", "swish"
ACTS = (BASELINE, SWISH)
NAMES = {BASELINE: "EfficientNet-B0 with ReLU", SWISH: "EfficientNet-B0 with Swish (its own)"}
# Table 3 of 1710.05941: ImageNet top-1 gained by replacing ReLU with Swish, in points.
PAPER_GAIN = {"Mobile NASNet-A": 0.9, "Inception-ResNet-v2": 0.6}

# What changes with the scale: the data, the network's width and side, the training, the seeds.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: B0 at a quarter width, 16 px, a tenth of Fashion-MNIST
        "data": {"dataset": "fashion-mnist", "image_size": 16, "val_fraction": 0.02,
                 "train_fraction": 0.1, "test_fraction": 0.25},
        "recipe": {"epochs": 2, "batch_size": 64},
        "width": 0.25, "seeds": 3, "jobs": 2,
    },
    "full": {    # a GPU: B0 at full width on CIFAR-10 at 32 px
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128},
        "width": 1.0, "seeds": 5, "jobs": 1,
    },
}
# One recipe for both, as the paper kept ReLU's hyperparameters for Swish: one-cycle SGD, no
# augmentation; no dropout or stochastic depth, which a short run does not need.
RECIPE = {"optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-5,
          "small_input": True, "threads": 1}
NO_DROP = {"drop_rate": 0.0, "drop_path_rate": 0.0}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: the scale's narrowed B0 with ReLU and with Swish, one recipe."""
    s = SETTINGS[scale]
    return {
        "description": "EfficientNet-B0 with Swish against the same network with ReLU "
                       "(1710.05941, Table 3): test top-1 on one recipe.",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": [{"name": "efficientnet_b0", "label": act,
                    "model_kwargs": {"act": act, "width": s["width"], **NO_DROP}}
                   for act in ACTS]}


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired test of Swish against ReLU ({"variants": as_numbers(...)}, its
    "swish" entry's outcome, delta, delta_ci and p_adjusted): the verdict on "Swish is more
    accurate than ReLU"."""
    v = numbers["variants"]
    swish = v[SWISH]
    paper = ", ".join(f"{g:+.1f} for {net}" for net, g in PAPER_GAIN.items())
    words = (f"Swish {top1_text(swish)}% against ReLU {top1_text(v[BASELINE])}%: "
             f"{delta_text(swish)} (the paper, ImageNet: {paper})")
    if swish["outcome"] == "better":
        if 100 * swish["delta"] < min(PAPER_GAIN.values()):
            words += "; a smaller gain than the paper's, but Swish is the more accurate"
        return HOLDS, words
    if swish["outcome"] == "worse":
        return DOES_NOT_HOLD, words + "; ReLU is the more accurate"
    return INCONCLUSIVE, words + "; tied: this scale cannot tell them apart"


class SwishVsRelu(Experiment):
    name = "swish-vs-relu"
    claim = ("Swish (x·sigmoid(x)) in place of ReLU makes the same network about one point "
             "more accurate: EfficientNet's activation is Swish.")
    source = ("Searching for Activation Functions (Ramachandran, Zoph and Le, 1710.05941), "
              "Table 3; EfficientNet (Tan and Le, ICML 2019, 1905.11946)")
    paper = ("ImageNet top-1, ReLU replaced by Swish with nothing else changed: +0.9 points "
             "for Mobile NASNet-A, +0.6 for Inception-ResNet-v2")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        variants = compare_variants(runs, BASELINE)
        numbers = {"variants": as_numbers(variants),
                   "seeds": [r.seed for r in runs[BASELINE]]}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        s = SETTINGS[ctx.scale]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Swish against ReLU: accuracy and cost", cost_accuracy_figure(
                variants, "Test top-1 against MACs", "swish-vs-relu"),
                "Mean test top-1 over seeds (95% interval) at each network's MACs: the two "
                "differ only in the activation, so they sit at the same cost (the MAC "
                "counter does not count an activation's arithmetic; Swish's sigmoid costs "
                "time, shown as img/s in the table).")],
            numbers=numbers,
            notes=[f"EfficientNet-B0 at width {s['width']:g}, small_input (stride-1 stem), "
                   "no dropout or stochastic depth; every activation, the squeeze-"
                   "excitation's included, is the one named.",
                   "The paired test: McNemar's exact test over every seed's test images, "
                   "and the paired bootstrap interval of the difference in top-1; Swish is "
                   "'better' or 'worse' only when both agree."])


__all__ = ["SwishVsRelu", "decide", "protocol"]
