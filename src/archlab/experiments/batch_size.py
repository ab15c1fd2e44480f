"""`batch-size`: small minibatches generalise better (Masters and Luschi, "Revisiting Small
Batch Training for Deep Neural Networks", 1804.07612; the course: "friends don't let friends
use minibatches larger than 32", after Yann LeCun).

A minibatch of B images gives a noisy estimate of the gradient; a larger B gives a less
noisy one, and on a GPU costs about the same time per step, so it is tempting to make B as
large as memory allows and raise the learning rate with it (the linear scaling rule of
Goyal et al., 1706.02677: η = B·η̃ for a base rate η̃ per image). Masters and Luschi trained
ResNets on CIFAR-10, CIFAR-100 and ImageNet for a fixed number of epochs, with the learning
rate scaled linearly with B, and swept B from 2 into the thousands: "the best performance
has been consistently obtained for mini-batch sizes between m = 2 and m = 32", and the range
of base rates that train stably shrinks as B grows. Their explanation: small steps each use
a gradient computed where the weights are now, while one step of B images sums B gradients
all computed where the weights were at its start; and with equal epochs a batch k times
larger makes k times fewer updates.

Measured: one small ResNet (one block per stage, 16-32-64 channels, 16 px Fashion-MNIST)
trained with B = 8, 32, 128 and 512 for the same epochs, the learning rate scaled linearly
with B from one base rate (0.05 at B = 32, the rate the repository's short SGD recipes use),
one-cycle SGD with its warm-up (which large batches need), several seeds. The test error of
every batch size, with its interval, is plotted against B on a log axis, and every batch
size is compared with the most accurate one of B ≤ 32 by the paired test of
`variants.compare_variants` (McNemar's exact test over seeds and images and the paired
bootstrap interval, Holm-adjusted over the batch sizes).

The verdict: the claim holds when no batch size above 32 is significantly more accurate than
the best of B ≤ 32 and the largest batch is significantly worse than it; it does not hold
when a batch above 32 is significantly more accurate than every one of B ≤ 32 (than the best
of them); anything else (the largest tied with the best small one) is inconclusive. One base
rate, not the paper's sweep of rates per batch size: a rate that suited B = 512 better would
narrow the gap, which is why the verdict asks for a significant difference, not a ranking.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants, delta_text,
                                          top1_text, variant_table)

SMALL = 32           # the claim's bound: the best batches are at most this large
BASE_BATCH = 32      # the batch at which the base learning rate is given

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU: a tenth of Fashion-MNIST at 16 px, three epochs
        "data": {"dataset": "fashion-mnist", "image_size": 16, "val_fraction": 0.02,
                 "train_fraction": 0.1, "test_fraction": 0.5},
        "batch_sizes": (8, 32, 128, 512), "epochs": 3, "lr": 0.05,
        "model_kwargs": {"layers": [1, 1, 1], "widths": [16, 32, 64], "stem_width": 16},
        "seeds": 3, "jobs": 2,
    },
    "full": {    # a GPU: ResNet-20 on CIFAR-10 (the paper's first setting), 2 to 512
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "batch_sizes": (2, 8, 32, 128, 512), "epochs": 30, "lr": 0.05, "model_kwargs": {},
        "seeds": 3, "jobs": 1,
    },
}
RECIPE = {"optimizer": "sgd", "schedule": "onecycle", "weight_decay": 5e-4,
          "small_input": True, "threads": 1}


def label(batch: int) -> str:
    return f"batch-{batch}"


def lr_for(batch: int, base_lr: float) -> float:
    """The linear scaling rule: the rate per image is fixed, so η grows with B."""
    return base_lr * batch / BASE_BATCH


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """One ResNet at every batch size, the same epochs, the rate scaled with the batch."""
    s = SETTINGS[scale]
    return {
        "description": "A small ResNet trained with batches of 8 to 512 for the same epochs, "
                       "the learning rate scaled linearly with the batch (1804.07612).",
        "data": s["data"], "recipe": {**RECIPE, "epochs": s["epochs"]}, "augment": "none",
        "tta": [], "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        # Largest batches last: the small ones are the slow runs, started first.
        "models": [{"name": "resnet20", "label": label(b), "model_kwargs": s["model_kwargs"],
                    "recipe": {"batch_size": b, "lr": lr_for(b, s["lr"])}}
                   for b in sorted(s["batch_sizes"])]}


def best_small(top1: Mapping[int, Sequence[float]]) -> int:
    """The batch size of at most SMALL with the highest mean top-1 (the baseline)."""
    small = [b for b in top1 if b <= SMALL]
    if not small:
        raise ValueError(f"no batch size of {SMALL} or less among {sorted(top1)}")
    return max(small, key=lambda b: float(np.mean(top1[b])))


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From {"batch_sizes": [...], "baseline": B, "variants": as_numbers(...)} (every batch
    size against the best one of at most 32): the verdict on "small batches are best"."""
    v, base = numbers["variants"], numbers["baseline"]
    large = [b for b in numbers["batch_sizes"] if b > SMALL]
    largest = max(numbers["batch_sizes"])
    words = (f"best of B ≤ {SMALL}: B = {base}, top-1 {top1_text(v[label(base)])}%; "
             + "; ".join(f"B = {b} {top1_text(v[label(b)])}%, {delta_text(v[label(b)])} "
                         f"({AGAINST[v[label(b)]['outcome']]} it)" for b in large))
    better = [b for b in large if v[label(b)]["outcome"] == "better"]
    if better:
        return DOES_NOT_HOLD, words + (f"; B = {', '.join(map(str, better))} beats every "
                                       f"batch of {SMALL} or less")
    if v[label(largest)]["outcome"] == "worse":
        tied = [b for b in large if v[label(b)]["outcome"] == "tied"]
        return HOLDS, words + (f"; no larger batch does better and B = {largest} is worse"
                               + (f" (B = {', '.join(map(str, tied))} tied)" if tied else ""))
    return INCONCLUSIVE, words + f"; B = {largest} cannot be told apart from B = {base}"


def error_figure(numbers: Mapping[str, Any], base_lr: float) -> str:
    """Test error against the batch size (log x) with its 95% interval, each point
    labelled with its learning rate."""
    fig = figure(6.5, 3.8, layout="constrained")
    ax = fig.subplots()
    batches = sorted(numbers["batch_sizes"])
    v = numbers["variants"]
    err = [100 * (1 - float(np.mean(v[label(b)]["top1"]))) for b in batches]
    low = [100 * (1 - v[label(b)]["interval"][1]) for b in batches]
    high = [100 * (1 - v[label(b)]["interval"][0]) for b in batches]
    ax.errorbar(batches, err, yerr=[np.subtract(err, low), np.subtract(high, err)],
                marker="o", capsize=3)
    for b, e in zip(batches, err):
        ax.annotate(f"lr {lr_for(b, base_lr):g}", (b, e), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.axvspan(min(batches) / 1.5, SMALL, color="tab:green", alpha=0.08,
               label=f"B ≤ {SMALL} (the claim's best)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size (log scale; learning rate scaled linearly)")
    ax.set_ylabel("test error %")
    ax.set_title("Test error against batch size at equal epochs")
    ax.legend()
    return to_svg(fig, "batch-size")


class BatchSize(Experiment):
    name = "batch-size"
    claim = ("At equal epochs, with the learning rate scaled with the batch, small minibatches "
             "(2 to 32) give the lowest test error: \"friends don't let friends use "
             "minibatches larger than 32\".")
    source = ("Revisiting Small Batch Training for Deep Neural Networks (Masters and Luschi, "
              "1804.07612), sections 4-5; the course's lecture on training")
    paper = ("ResNets on CIFAR-10/100 and ImageNet, B from 2 into the thousands at equal "
             "epochs: the best test performance consistently at B = 2 to 32")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        batches = sorted(s["batch_sizes"])
        base = best_small({b: [float(r.top1) for r in runs[label(b)]] for b in batches})
        variants = compare_variants(runs, label(base))
        numbers = {"variants": as_numbers(variants), "batch_sizes": batches,
                   "baseline": base, "seeds": list(seeds),
                   "lr": {str(b): lr_for(b, s["lr"]) for b in batches}}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, {label(b): f"B = {b} (lr {lr_for(b, s['lr']):g})"
                                                 for b in batches})
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Test error against batch size", error_figure(numbers, s["lr"]),
                    "Mean test error over seeds with its 95% interval at each batch size, "
                    f"the same {s['epochs']} epochs for all; the learning rate (labelled) "
                    f"grows linearly with the batch, {s['lr']:g} at B = {BASE_BATCH}.")],
            numbers=numbers,
            notes=[f"Equal epochs ({s['epochs']}): B = {max(batches)} makes "
                   f"{max(batches) // min(batches)} times fewer steps than B = "
                   f"{min(batches)}, as in the paper's comparison.",
                   f"The baseline of the paired tests is the best batch of {SMALL} or less "
                   "(by mean top-1); 'better'/'worse' need McNemar's test (Holm-adjusted) "
                   "and the paired bootstrap interval to agree.",
                   "One base learning rate for every batch size, where the paper swept "
                   "several: a rate tuned for the large batches could narrow their gap."])


__all__ = ["BatchSize", "best_small", "decide", "lr_for", "protocol"]
