"""`relu-vs-tanh`: why AlexNet's neurons are ReLUs (Krizhevsky, Sutskever and Hinton, NeurIPS
2012, section 3.1 and Figure 1).

Until 2012 a neuron's output was a saturating function of its input, tanh or the logistic
sigmoid. Far from zero their slope is almost flat, so the gradient reaching a layer is
multiplied on its way down by many small numbers, and learning crawls. A rectified linear
unit, max(0, x), has slope one wherever it is active: the gradient passes through it
undamped. AlexNet's Figure 1 shows what that buys: a four-layer convolutional network with
ReLUs reaches 25% training error on CIFAR-10 six times faster than the same network with
tanh. Speed of training, not final accuracy, is the claim: with fast learning, large
networks on large data sets become trainable at all.

Measured: the same network (LeNet-5: three convolutions with max pooling, two fully
connected layers, no normalisation that would hide the activation's effect) trained twice
under one recipe, once with `act: relu` and once with `act: tanh` (every tanh replaces a
ReLU; nothing else differs), with several seeds. The recipe is the paper's kind of SGD: a
constant learning rate, momentum 0.9 and no regularisation, since Figure 1 has none. From
each run's training error every few steps we read the first step at which it is at or below
a threshold, and divide tanh's steps by ReLU's seed by seed: the ratio is the paper's "six
times faster".

The threshold is the paper's own, 25% training error, on both scales. Every network here
gets below it on Fashion-MNIST within the first epoch (a linear classifier reaches about
16% error there), so the quick scale measures the same thing the figure does, only sooner;
on CIFAR-10 at full scale it is the figure's exact setting. A run that never gets to the
threshold within its budget has no step count: if a tanh run misses it, the budget stands
in for its steps and the ratio becomes a lower bound (tanh was at least that much slower),
which can still show the claim; if a ReLU run misses it, the measurement cannot say how
fast ReLU is, and the verdict is inconclusive, unless every tanh run got there, which
contradicts the claim.

The ratios are averaged as logarithms (their geometric mean, with the t interval of the
mean log-ratio), since 2x and 0.5x should cancel. The verdict: the claim holds when the 95%
interval of the mean ratio lies above 1 (ReLU faster), does not hold when it lies below 1,
and is inconclusive when it straddles 1. A ratio smaller than the paper's 6 that is still
above 1 holds the claim's direction: how much faster depends on the network, its
initialisation, the data and the learning rate (the paper tuned each network's rate for
speed; here both share one, so that the activation is the only difference).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab._text import pct
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import (by_label, seeds_for, step_curve, steps_to_reach,
                                          train_study)
from archlab.study.stats import mean_interval

ACTS = ("relu", "tanh")
PAPER_RATIO = 6.0

# What changes with the scale: the data, the length of training, the seeds, the threshold.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a tenth of Fashion-MNIST, two epochs
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.1,
                 "test_fraction": 0.2},
        "recipe": {"epochs": 2, "batch_size": 32},
        "seeds": 3, "jobs": 2, "threshold": 0.25,
    },
    "full": {    # a GPU: the paper's setting, CIFAR-10 at 32 px and 25% training error
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 40, "batch_size": 128},
        "seeds": 5, "jobs": 1, "threshold": 0.25,
    },
}

# The paper's SGD (momentum 0.9, a constant rate), without Figure 1's absent regularisation.
RECIPE = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": False,
          "schedule": "constant", "weight_decay": 0.0, "threads": 1, "curve_every": 10}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: LeNet-5 with each activation, one recipe, the scale's data and seeds."""
    s = SETTINGS[scale]
    return {
        "description": "LeNet-5 with ReLU against the same network with tanh (AlexNet, "
                       "Figure 1): steps to a training error.",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": [{"name": "lenet5", "label": act, "model_kwargs": {"act": act}}
                   for act in ACTS],
    }


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the steps each run needed to reach the threshold ({"relu": [...], "tanh": [...]},
    one per seed in the same order, None where a run never got there, and "budget", the
    steps every run had): the verdict on "ReLU trains faster than tanh"."""
    relu, tanh, budget = numbers["relu"], numbers["tanh"], numbers["budget"]
    if any(s is None for s in relu):
        missed = sum(s is None for s in relu)
        words = (f"{missed} of {len(relu)} ReLU runs never reached the threshold in "
                 f"{budget} steps")
        if all(s is not None for s in tanh):
            return DOES_NOT_HOLD, words + ", while every tanh run did"
        return INCONCLUSIVE, words + ": the budget is too short to compare them"
    # A tanh run that never got there took more than the budget: the ratio is a lower bound.
    ratios = [(budget if t is None else t) / r for r, t in zip(relu, tanh)]
    censored = sum(t is None for t in tanh)
    # Ratios multiply: averaged as logarithms (the geometric mean), so that 2x and 0.5x
    # cancel, and an interval cannot reach below zero.
    logs = np.log(ratios)
    mean = float(np.exp(logs.mean()))
    if len(ratios) < 2:
        low = high = mean
        spread = "one seed, so no interval"
    else:
        ci = mean_interval(logs)
        low, high = float(np.exp(ci.low)), float(np.exp(ci.high))
        spread = f"95% interval [{low:.2f}, {high:.2f}] over {len(ratios)} seeds"
    words = (f"tanh needs {mean:.2f}x the steps of ReLU ({spread}); the paper: "
             f"{PAPER_RATIO:g}x")
    if censored:
        words += (f"; {censored} tanh run(s) never reached the threshold in {budget} steps, "
                  "so this is a lower bound")
    if low > 1:
        if mean < PAPER_RATIO:
            words += ": less than the paper's factor, but ReLU is faster, as claimed"
        return HOLDS, words
    if high < 1 and not censored:
        return DOES_NOT_HOLD, words + ": tanh is the faster"
    return INCONCLUSIVE, words + ": the interval holds 1"


class ReluVsTanh(Experiment):
    name = "relu-vs-tanh"
    claim = ("A CNN with ReLUs reaches a given training error several times faster than the "
             "same network with tanh: AlexNet's neurons are rectified linear units.")
    source = ("AlexNet (Krizhevsky, Sutskever and Hinton, NeurIPS 2012), section 3.1 and "
              "Figure 1")
    paper = "25% training error on CIFAR-10: six times fewer epochs with ReLU than with tanh"
    trains = True

    def run(self, ctx: Context) -> Outcome:
        threshold = SETTINGS[ctx.scale]["threshold"]
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        curves = {act: [step_curve(r) for r in runs[act]] for act in ACTS}
        reached = {act: [steps_to_reach(s, e, threshold) for s, e in curves[act]]
                   for act in ACTS}
        budget = max(s[-1] for act in ACTS for s, _ in curves[act])
        numbers = {"threshold": threshold, "budget": budget, **reached,
                   "seeds": [r.seed for r in runs["relu"]],
                   "top1": {act: [r.top1 for r in runs[act]] for act in ACTS}}
        verdict, because = decide(numbers)
        return Outcome(
            verdict, because, ["seed", "ReLU: steps", "tanh: steps", "tanh / ReLU",
                               "ReLU test top-1", "tanh test top-1"],
            _rows(numbers),
            [Figure(f"Training error against steps, to {threshold:.0%}", _curves(
                curves, threshold),
                "Every seed: ReLU solid, tanh dashed, as in the paper's Figure 1; the "
                "training error is the mean over the last few steps' batches. The "
                "dotted line is the threshold both are timed to.")],
            numbers=numbers,
            notes=[f"The training error is recorded every {RECIPE['curve_every']} steps, so "
                   "a step count is exact to that many steps."])


def _rows(numbers: dict[str, Any]) -> list[list[Any]]:
    def shown(steps: int | None) -> str:
        return "never" if steps is None else str(steps)

    rows = []
    for i, seed in enumerate(numbers["seeds"]):
        r, t = numbers["relu"][i], numbers["tanh"][i]
        ratio = "-" if r is None else f"{(numbers['budget'] if t is None else t) / r:.2f}" + (
            " or more" if t is None else "")
        rows.append([seed, shown(r), shown(t), ratio,
                     *(pct(numbers["top1"][act][i], 1) for act in ACTS)])
    return rows


def _curves(curves: dict[str, list[tuple[list[int], list[float]]]], threshold: float) -> str:
    fig = figure(6.5, 3.6, layout="constrained")
    ax = fig.subplots()
    for act, colour, style in (("relu", "tab:blue", "-"), ("tanh", "tab:orange", "--")):
        for i, (steps, error) in enumerate(curves[act]):
            ax.plot(steps, error, style, color=colour, lw=1.2, alpha=0.8,
                    label=act if i == 0 else None)
    ax.axhline(threshold, color="black", ls=":", lw=1, label=f"{threshold:.0%}")
    ax.set_xlabel("training steps")
    ax.set_ylabel("training error")
    ax.set_ylim(0, None)
    ax.legend()
    return to_svg(fig, "relu-vs-tanh")


__all__ = ["ReluVsTanh", "decide", "protocol"]
