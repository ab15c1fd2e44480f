"""`fixres`: train at a low resolution, fine-tune briefly at a higher one (Touvron, Vedaldi,
Douze and Jégou, "Fixing the train-test resolution discrepancy", NeurIPS 2019, 1906.06423;
DeiT, Touvron et al. 2012.12877, section 6, fine-tunes at 384 px after training at 224).

A convolution's cost grows with the image's area: a network trained at 16 px instead of
28 does about a third of the arithmetic per image. FixRes's observation is that a network
is usually trained at a lower resolution than it could be used at, and that this is not
only cheap but also close to right: random-resized-crop augmentation makes objects look
larger in training than in the centred test crop, so a network tested at a slightly higher
resolution than it was trained at sees objects at the size it learned them. What is left
is a mismatch in the statistics of the last layers (the pooled activations change with the
resolution), which a brief fine-tuning at the test resolution repairs. So: train most of
the time at a low resolution, fine-tune briefly at the high one, and get the accuracy of
training at the high resolution, or better, for less training. The paper's ResNet-50
trained at 128 px and fine-tuned at 224 reaches 77.1% top-1 on ImageNet, the same as the
usual 224 px training (77.0%), at about a third of the training cost (Table 2); DeiT-B
gains 1.7 points by fine-tuning at 384 px.

Measured: a small ResNet (ResNet-20, narrowed) on Fashion-MNIST under one recipe and the
same epochs, three ways: at the high resolution (28 px) throughout (the baseline); at the low
one (16 px, about FixRes's 128/224 ratio) for every epoch but the last, then at 28 px for
the last ("low -> high": the recipe's `progressive: [[0, 16], [E-1, 28]]`, one schedule, so
the high-resolution epoch is the schedule's low-rate tail, as a fine-tuning is); and at the
low resolution throughout, tested at 16 px (what the brief high-resolution phase adds).
All are tested on the same test images (at their own sides) and compared with the
baseline by the paired test of `variants.compare_variants` (Holm over the two); their
training times are the trainer's own, without evaluation.

The verdict: the claim holds when low -> high is at least as accurate as the high
resolution throughout (better, or tied by the paired test: a tie is not proof of equality,
only that this scale cannot separate them) and trains in less time; it does not hold when
it is significantly less accurate or no cheaper; the low resolution throughout is reported
beside them.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, Context, Experiment, Figure,
                                      Outcome)
from archlab.experiments.training import by_label, seeds_for, train_at_sizes
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants,
                                          cost_accuracy_figure, delta_text, top1_text,
                                          variant_table)

HIGH, LOW_HIGH, LOW = "high", "low->high", "low"
LABELS = (HIGH, LOW_HIGH, LOW)
# FixRes Table 2 (ResNet-50, ImageNet top-1 at 224 px test): train at 224 against train at
# 128 then fine-tune at 224.
PAPER_TOP1 = {"train 224": 77.0, "train 128, fine-tune 224": 77.1}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a tenth of Fashion-MNIST, a quarter-width ResNet-20
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.1,
                 "test_fraction": 0.25},
        "recipe": {"epochs": 5, "batch_size": 64}, "low": 16, "high": 28,
        "model_kwargs": {"widths": [8, 16, 32], "stem_width": 8}, "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: CIFAR-10, ResNet-20 at its own width, 16 px then 32 px
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 40, "batch_size": 128}, "low": 16, "high": 32,
        "model_kwargs": {}, "seeds": 3, "jobs": 1,
    },
}
# One-cycle SGD, no augmentation (so the train and test views of an image agree at a size).
RECIPE = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "small_input": True,
          "threads": 1, "channels_last": True}


def names(scale: str) -> dict[str, str]:
    s = SETTINGS[scale]
    e = s["recipe"]["epochs"]
    return {HIGH: f"{s['high']} px throughout",
            LOW_HIGH: f"{s['low']} px for {e - 1} epochs, then {s['high']} px for 1",
            LOW: f"{s['low']} px throughout (tested at {s['low']} px)"}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: one network and recipe three ways; `sizes(scale)` gives each its side."""
    s = SETTINGS[scale]
    last = s["recipe"]["epochs"] - 1
    model = {"name": "resnet20", "model_kwargs": s["model_kwargs"]}
    return {
        "description": "Low resolution then a brief high-resolution phase against the high "
                       "resolution throughout (FixRes, 1906.06423).",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 64, "throughput_seconds": 0.2},
        "models": [{**model, "label": HIGH},
                   {**model, "label": LOW_HIGH,
                    "recipe": {"progressive": [[0, s["low"]], [last, s["high"]]]}},
                   {**model, "label": LOW}]}


def sizes(scale: str) -> dict[str, int]:
    s = SETTINGS[scale]
    return {HIGH: s["high"], LOW_HIGH: s["high"], LOW: s["low"]}


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired tests against the high resolution throughout ({"variants": ...}) and
    the training times ({"train_s": {label: [s per seed]}}): the verdict on "low -> high is
    as accurate for less training"."""
    v = numbers["variants"]
    fit = {label: float(np.mean(t)) for label, t in numbers["train_s"].items()}
    ratio = fit[LOW_HIGH] / fit[HIGH]
    outcome = v[LOW_HIGH]["outcome"]
    words = (f"low -> high {top1_text(v[LOW_HIGH])}% against high throughout "
             f"{top1_text(v[HIGH])}%: {delta_text(v[LOW_HIGH])}, in {ratio:.2f}x the "
             f"training time ({fit[LOW_HIGH]:.0f} s against {fit[HIGH]:.0f} s); low "
             f"throughout {top1_text(v[LOW])}%, {AGAINST[v[LOW]['outcome']]} high "
             f"(FixRes, ResNet-50 on ImageNet: 77.1% for 128 then 224 against 77.0% for 224)")
    if outcome == "worse":
        return DOES_NOT_HOLD, words + "; the brief high-resolution phase does not catch up"
    if ratio >= 1:
        return DOES_NOT_HOLD, words + "; and it is not cheaper to train here"
    if outcome == "better":
        return HOLDS, words + "; more accurate for less training"
    return HOLDS, (words + "; tied for less training (a tie: this scale cannot separate "
                   "them)")


class FixRes(Experiment):
    name = "fixres"
    claim = ("Training at a low resolution and fine-tuning briefly at a higher one is as "
             "accurate as training at the higher one throughout, for less training.")
    source = ("Fixing the train-test resolution discrepancy (Touvron et al., NeurIPS 2019, "
              "1906.06423), Table 2; DeiT (2012.12877), section 6")
    paper = ("ResNet-50 on ImageNet, tested at 224 px: 77.1% trained at 128 px and "
             "fine-tuned at 224, against 77.0% trained at 224")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_at_sizes(self.name, protocol(ctx.scale, seeds),
                                       sizes(ctx.scale), ctx))
        runs = {label: runs[label] for label in LABELS}
        variants = compare_variants(runs, HIGH)
        numbers = {"variants": as_numbers(variants),
                   "train_s": {k: [float(r.train_time) for r in g] for k, g in runs.items()},
                   "seeds": [r.seed for r in runs[HIGH]]}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, names(ctx.scale))
        headers.append("training time, s")
        for row, label in zip(rows, runs):
            row.append(f"{np.mean(numbers['train_s'][label]):.1f}")
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Accuracy against training time", cost_accuracy_figure(
                variants, "Test top-1 against training time", "fixres", cost="train_time"),
                "Mean test top-1 over seeds (95% interval) at each schedule's mean training "
                "time: FixRes's argument is a point up and to the left of the high "
                "resolution throughout (black).")],
            numbers=numbers,
            notes=[f"ResNet-20 (small_input) with {s['model_kwargs'] or 'its own widths'}, "
                   f"{s['recipe']['epochs']} epochs of one-cycle SGD for each, no "
                   "augmentation; the low-resolution images are the same images resized, so all "
                   "three are judged on the same test images.",
                   "The MACs column is at the side each is tested at; the one-cycle "
                   "schedule runs over all the epochs, so the high-resolution epoch of low "
                   "-> high comes at its lowest rates, as a fine-tuning does.",
                   "Times are this machine's, one thread each, runs side by side: compare "
                   "them with one another only.",
                   "The paired test: McNemar's exact test over every seed's test images and "
                   "the paired bootstrap interval of the difference, Holm over the two; "
                   "'better' or 'worse' only when both agree."])


__all__ = ["FixRes", "decide", "protocol", "sizes"]
