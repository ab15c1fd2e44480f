"""`shortcuts`: where a residual unit puts its batch norm and ReLU matters, and the best place
leaves the shortcut a pure identity (He, Zhang, Ren and Sun, "Identity Mappings in Deep
Residual Networks", 1603.05027, figure 4 and table 2).

A residual unit computes x_{l+1} = f(x_l + F(x_l)). The paper's analysis shows that when
both the shortcut and f are identities, any later unit's signal is the earlier one plus a
sum of residuals, and the gradient reaches every unit directly: nothing on the shortcut's
path may scale, normalise or clip it. Figure 4 then tries five places for the same layers
(two 3x3 convolutions, two batch norms, two ReLUs):

(a) original: conv-BN-ReLU-conv-BN, addition, ReLU (f is a ReLU);
(b) BN after addition: the last BN moves onto the shortcut's path: worse, it rescales the
    signal every unit passes on;
(c) ReLU before addition: f is the identity, but the branch ends in a ReLU and can only add,
    never subtract: worse, less representational freedom;
(d) ReLU-only pre-activation: ReLU-conv-BN twice, addition: about as good as (a), since its
    BN no longer feeds a ReLU;
(e) full pre-activation: BN-ReLU-conv twice, addition: f and the shortcut both identities,
    and the best. On CIFAR-10 with ResNet-110 (table 2, test error): 6.61% (a), 8.17% (b),
    7.84% (c), 6.71% (d), 6.37% (e).

Measured: the CIFAR ResNet-20 (three stages of three units, 16, 32 and 64 channels,
zero-padding shortcuts) with each unit (`archlab.models.resnet.UNITS`; every unit moves the
same layers, so all five have the same 269,722 parameters at 10 classes), trained under one
recipe, the paper's (SGD, momentum 0.9, weight decay 1e-4, the rate divided by 10 at half
and three quarters of training), with several seeds. Each variant is compared with (a) by
`archlab.experiments.variants.compare_variants`: McNemar's exact test over the seeds and
the test images, Holm-adjusted over the four comparisons, and the paired bootstrap
interval of the difference in test accuracy; a variant is "worse" or "better" only when
both agree, "tied" otherwise.

The verdict: the claim is three comparisons with (a), (b) worse, (c) worse and (e) not
worse. It holds when all three are seen: (b) and (c) "worse", (e) "tied" or "better". It
does not hold when one is contradicted: (b) or (c) significantly *better* than (a), or (e)
significantly worse. Otherwise it is inconclusive: ties where the paper sees a difference.
(d) is shown, not judged: the paper finds it about equal to (a) and draws no claim on it.

Expect ties at quick scale. The paper's differences are one to two points of error on
ResNet-110, a network deep enough that what sits on the shortcut's path, 54 times over,
adds up; it says the effect is smaller on shallower nets, and ResNet-20 crosses only nine
units, trained for minutes on a few thousand Fashion-MNIST images. The full scale runs the
paper's setting: ResNet-110 on CIFAR-10 for its 64k iterations.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.degradation import PAPER_CIFAR, cifar_protocol
from archlab.experiments.training import by_label, seeds_for, step_curve, train_study
from archlab.experiments.variants import Variant, compare_variants, variant_table

# Figure 4's letters, the unit's name in archlab.models.resnet, and table 2's test error.
VARIANTS = {"a": ("original", 6.61), "b": ("bn_after_add", 8.17),
            "c": ("relu_before_add", 7.84), "d": ("relu_preact", 6.71),
            "e": ("full_preact", 6.37)}
NAMES = {"a": "(a) original", "b": "(b) BN after addition", "c": "(c) ReLU before addition",
         "d": "(d) ReLU-only pre-activation", "e": "(e) full pre-activation"}
BASELINE = "a"
WORSE_CLAIMED, NOT_WORSE_CLAIMED = ("b", "c"), ("e",)

# What changes with the scale: the network, the data, the length of training, the seeds.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: ResNet-20 on ~4,000 Fashion-MNIST images, two epochs
        "model": "resnet20",
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.01, "train_fraction": 0.07,
                 "test_fraction": 0.2},
        "recipe": {"epochs": 2, "batch_size": 32, "lr": 0.05, "milestones": [1.0, 1.5],
                   "curve_every": 10},
        "augment": "none", "seeds": 3, "jobs": 2,
    },
    "full": {**PAPER_CIFAR, "model": "resnet110", "seeds": 3, "jobs": 1},
}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: one depth with each of the five units, under the paper's recipe."""
    s = SETTINGS[scale]
    return cifar_protocol(
        "The five residual units of 1603.05027's figure 4 on one depth.", s, seeds,
        [{"name": s["model"], "label": letter, "model_kwargs": {"unit": unit}}
         for letter, (unit, _) in VARIANTS.items()])


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From each variant's outcome against (a) ({"outcome": {"b": "worse" | "tied" |
    "better", ...}}, the paired tests' verdicts) and its difference in test top-1
    ({"delta": {...}}, points): the verdict on "(b) and (c) are worse than the original,
    full pre-activation (e) is at least as good"."""
    outcome, delta = numbers["outcome"], numbers["delta"]
    words = "; ".join(f"({k}) {outcome[k]}, {delta[k]:+.2f} points of top-1"
                      for k in (*WORSE_CLAIMED, *NOT_WORSE_CLAIMED))
    words = "against (a): " + words
    contradicted = ([k for k in WORSE_CLAIMED if outcome[k] == "better"]
                    + [k for k in NOT_WORSE_CLAIMED if outcome[k] == "worse"])
    if contradicted:
        return DOES_NOT_HOLD, words + ": the paired test contradicts the paper for " + \
            ", ".join(f"({k})" for k in contradicted)
    seen = (all(outcome[k] == "worse" for k in WORSE_CLAIMED)
            and all(outcome[k] in ("tied", "better") for k in NOT_WORSE_CLAIMED))
    if seen:
        return HOLDS, words + ": (b) and (c) worse, (e) no worse, as in table 2"
    tied = [k for k in WORSE_CLAIMED if outcome[k] == "tied"]
    return INCONCLUSIVE, words + ": " + ", ".join(f"({k})" for k in tied) + \
        " cannot be told from (a) at this scale"


class Shortcuts(Experiment):
    name = "shortcuts"
    claim = ("Where a residual unit puts its batch norm and ReLU matters: BN after the "
             "addition (b) or a ReLU before it (c) is worse than the original (a), and full "
             "pre-activation (e), which leaves the shortcut a pure identity, is at least as "
             "good.")
    source = ("Identity Mappings in Deep Residual Networks (He, Zhang, Ren and Sun, "
              "1603.05027), figure 4 and table 2")
    paper = ("ResNet-110 on CIFAR-10, test error: (a) 6.61%, (b) 8.17%, (c) 7.84%, "
             "(d) 6.71%, (e) 6.37%")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        variants = compare_variants(runs, BASELINE)
        numbers = {
            "model": s["model"], "seeds": [r.seed for r in runs[BASELINE]],
            "outcome": {k: v.outcome for k, v in variants.items()},
            "delta": {k: 0.0 if v.vs_baseline is None else 100 * v.vs_baseline.delta
                      for k, v in variants.items()},
            "top1": {k: list(v.top1) for k, v in variants.items()},
            "p_adjusted": {k: None if v.vs_baseline is None else v.vs_baseline.p_adjusted
                           for k, v in variants.items()},
        }
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        headers.append("paper's test error %")
        for row, letter in zip(rows, variants):
            row.append(f"{VARIANTS[letter][1]:.2f}")
        curves = {k: [step_curve(r) for r in runs[k]] for k in VARIANTS}
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Test error per unit, ours and the paper's", _errors(variants),
                    f"Our {s['model']}: the test error of each unit, mean over the seeds with "
                    "its 95% interval (left axis); the paper's ResNet-110 on CIFAR-10 "
                    "(table 2) as hollow diamonds (right axis): the scales differ, the "
                    "order is what to compare."),
             Figure("Training error against steps, per unit", _curves(curves),
                    "The training error (mean over the seeds of each few steps' batches); "
                    "the paper's figure 6 plots (a) against (b), and (a) against (e).")],
            numbers=numbers,
            notes=["All five units move the same layers, so they have the same parameters "
                   "and MACs; (e) takes the stem's batch norm to the network's end, (d) its "
                   "ReLU."])


def _errors(variants: Mapping[str, Variant]) -> str:
    fig = figure(6.5, 3.6, layout="constrained")
    ax = fig.subplots()
    letters = list(variants)
    for x, k in enumerate(letters):
        v = variants[k]
        err, low, high = (100 * (1 - t) for t in (v.mean_top1, v.interval.high,
                                                  v.interval.low))
        colour = "black" if k == BASELINE else f"C{x}"
        ax.errorbar([x], [err], yerr=[[err - low], [high - err]], fmt="o", capsize=4,
                    color=colour)
    ax.set_xticks(range(len(letters)), [NAMES[k].replace(" ", "\n", 1) for k in letters],
                  fontsize=7)
    ax.set_ylabel("our test error %")
    paper = ax.twinx()
    paper.plot(range(len(letters)), [VARIANTS[k][1] for k in letters], "D", mfc="none",
               color="grey")
    paper.set_ylabel("paper's test error % (ResNet-110, CIFAR-10)", color="grey")
    return to_svg(fig, "shortcuts")


def _curves(curves: Mapping[str, Sequence[tuple[list[int], list[float]]]]) -> str:
    fig = figure(6.5, 3.6, layout="constrained")
    ax = fig.subplots()
    for x, (k, runs) in enumerate(curves.items()):
        n = min(len(s) for s, _ in runs)
        mean = np.mean([e[:n] for _, e in runs], axis=0)
        ax.plot(runs[0][0][:n], 100 * mean, "-" if k in ("a", "e") else "--",
                color="black" if k == BASELINE else f"C{x}", lw=1.3, label=NAMES[k])
    ax.set_xlabel("training steps")
    ax.set_ylabel("training error %")
    ax.set_ylim(0, None)
    ax.legend(fontsize=7)
    return to_svg(fig, "shortcuts-curves")


__all__ = ["Shortcuts", "decide", "protocol"]
