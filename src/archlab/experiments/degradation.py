"""`degradation`: deeper plain networks train worse; residual ones do not (He, Zhang, Ren and
Sun, "Deep Residual Learning for Image Recognition", 1512.03385, figures 1 and 6, section
4.2).

Stack more layers on a network that trains well and, past a point, it trains *worse*: on
CIFAR-10 a 56-layer plain network ends with a higher training error than a 20-layer one,
and so a higher test error too (figure 1). This is not overfitting, which would lower the
training error, and not vanishing gradients, which batch norm already prevents: the deeper
net could copy the shallow one and set its extra layers to the identity, yet SGD does not
find that solution (or anything as good) in the same time. The paper calls it the
degradation problem. Its answer: let every pair of layers learn a residual F(x) and output
F(x) + x, so that the identity costs nothing (zero weights). With these shortcuts the order
flips (figure 6, right): ResNet-56 trains to a lower error than ResNet-20, and tests better.

Measured: the CIFAR networks of section 4.2, plain-20 and plain-56 (`plain20`, `plain56`:
three stages of 3x3 convolutions with 16, 32 and 64 channels, batch norm after each) and
their residual twins ResNet-20 and ResNet-56 (the same layers with parameter-free shortcuts,
option A), trained under one recipe, the paper's: SGD with momentum 0.9, weight decay 1e-4,
a learning rate divided by 10 at half and three quarters of training. The training error is
recorded every few steps (the mean over those steps' batches, as the paper's dashed
curves); the held-out error (the bold curves) after every epoch, on a validation split the
runs never train on, and the test error once at the end.

The verdict reads the *final training error* of every run: the mean of its recorded
training error over the last tenth of its steps (a single window would be a few batches).
Seed by seed, it takes the deeper net's final error minus the shallower one's, once for the
plain nets and once for the ResNets, and the difference of those two gaps; each is averaged
over the seeds with Student's t interval (paired: a seed shares its data split and order
between the four networks). The claim holds when three things are seen at once: the deeper
plain net trains worse (the plain gap's interval lies above 0); the deeper ResNet does not
(the ResNet gap's interval reaches 0 or lies below it); and the shortcuts shrink the gap
(the difference of the gaps lies above 0). It does not hold when the deeper plain net
trains better (the plain gap lies below 0) or the deeper ResNet trains worse (the ResNet
gap lies above 0). Anything else is inconclusive: too few seeds or steps to tell.

At quick scale the runs are short, a few hundred steps on a few thousand Fashion-MNIST
images, against the paper's 64,000 on CIFAR-10. A deep network is slower to start, plain or
residual, so a short run can show a deeper ResNet still behind the shallower one: that is
this scale's answer, not the paper's, and the page says so.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab._text import pct
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, step_curve, train_study
from archlab.study.stats import mean_interval

FAMILIES = ("plain", "resnet")
DEPTHS = (20, 56)
LABELS = tuple(f"{f}{d}" for f in FAMILIES for d in DEPTHS)
TAIL = 0.1   # the final training error: the mean over this last share of the steps

# The paper's SGD (section 4.2, and 1603.05027's): momentum 0.9 without Nesterov, weight
# decay 1e-4, the rate divided by 10 twice.
RECIPE = {"optimizer": "sgd", "momentum": 0.9, "nesterov": False, "schedule": "step",
          "gamma": 0.1, "weight_decay": 1e-4, "label_smoothing": 0.0, "threads": 1}
# Its CIFAR-10 schedule, for a GPU: 64k iterations of batch 128 on a 45k/5k split, flips and
# 4-pixel translations; as epochs, 64,000 / 352 steps = 182, the rate cut at 32k and 48k.
PAPER_CIFAR: dict[str, Any] = {
    "data": {"dataset": "cifar10", "val_fraction": 0.1},
    "recipe": {"epochs": 182, "batch_size": 128, "lr": 0.1, "milestones": [91, 136.5],
               "curve_every": 50},
    "augment": "basic",
}

# What changes with the scale: the data, the length of training, the seeds.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: ~2,400 Fashion-MNIST images, three epochs
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.01, "train_fraction": 0.04,
                 "test_fraction": 0.1},
        "recipe": {"epochs": 3, "batch_size": 32, "lr": 0.05, "milestones": [1.5, 2.25],
                   "curve_every": 5},
        "augment": "none", "seeds": 3, "jobs": 2,
    },
    "full": {**PAPER_CIFAR, "seeds": 3, "jobs": 1},
}

def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: the four CIFAR networks under one recipe, the scale's data and seeds."""
    return cifar_protocol(
        "Plain-20 and plain-56 against ResNet-20 and ResNet-56 (1512.03385, figures 1 and "
        "6): the training error as depth grows.", SETTINGS[scale], seeds,
        [{"name": label, "label": label} for label in LABELS])


def cifar_protocol(description: str, settings: dict[str, Any], seeds: Sequence[int],
                   models: list[dict[str, Any]]) -> dict[str, Any]:
    """A study of `models` under the paper's SGD (RECIPE) with a scale's `settings` (data,
    recipe, augment, jobs): the protocol of the ResNet papers' CIFAR experiments."""
    return {
        "description": description, "data": settings["data"],
        "recipe": {**RECIPE, **settings["recipe"]}, "augment": settings["augment"],
        "tta": [], "seeds": list(seeds), "jobs": settings["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1}, "models": models,
    }


def final_error(errors: Sequence[float], tail: float = TAIL) -> float:
    """A run's final training error: the mean of its recorded values over the last `tail`
    share of them (at least one)."""
    n = max(1, int(round(len(errors) * tail)))
    return float(np.mean(errors[-n:]))


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of per-seed values: Student's t, or the value itself for one seed."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean, mean
    ci = mean_interval(values)
    return mean, ci.low, ci.high


def _gap_words(name: str, gap: tuple[float, float, float]) -> str:
    mean, low, high = gap
    return f"{name} {100 * mean:+.2f} points [{100 * low:+.2f}, {100 * high:+.2f}]"


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From each run's final training error ({"final_train_error": {label: [one per seed,
    the same seeds in the same order]}}): the verdict on "the deeper plain net trains worse,
    the deeper ResNet does not"."""
    e = {k: np.asarray(v, dtype=float) for k, v in numbers["final_train_error"].items()}
    plain_gaps = e["plain56"] - e["plain20"]
    res_gaps = e["resnet56"] - e["resnet20"]
    plain, res = _interval(plain_gaps), _interval(res_gaps)
    shrink = _interval(plain_gaps - res_gaps)
    spread = ("one seed, so no interval" if len(plain_gaps) < 2
              else f"95% intervals over {len(plain_gaps)} seeds")
    words = ("final training error, 56 layers minus 20: "
             + "; ".join([_gap_words("plain", plain), _gap_words("ResNet", res),
                          _gap_words("plain gap minus ResNet gap", shrink)])
             + f" ({spread})")
    if plain[2] < 0:
        return DOES_NOT_HOLD, words + ": the deeper plain net trains better, no degradation"
    if res[1] > 0:
        return DOES_NOT_HOLD, words + ": the deeper ResNet trains worse too"
    if plain[1] > 0 and shrink[1] > 0:
        if res[2] < 0:
            words += "; the deeper ResNet even trains better, as in the paper's figure 6"
        return HOLDS, words + ": the deeper plain net trains worse and the deeper ResNet does not"
    if plain[1] <= 0:
        return INCONCLUSIVE, words + ": the plain gap's interval holds 0"
    return INCONCLUSIVE, words + ": the shortcuts' effect on the gap cannot be told from 0"


class Degradation(Experiment):
    name = "degradation"
    claim = ("A deeper plain network ends with a higher training error than a shallower one "
             "(degradation); with residual shortcuts the deeper network trains no worse.")
    source = ("ResNet (He, Zhang, Ren and Sun, 1512.03385), figures 1 and 6, section 4.2")
    paper = ("CIFAR-10: plain-56's training and test error stay above plain-20's "
             "throughout (figure 1); ResNet-56's fall below ResNet-20's, test error 6.97% "
             "against 8.75% (table 6)")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        curves = {label: [step_curve(r) for r in runs[label]] for label in LABELS}
        held_out = {label: [_val_curve(r.history or []) for r in runs[label]]
                    for label in LABELS}
        numbers = {
            "tail": TAIL, "seeds": [r.seed for r in runs["plain20"]],
            "final_train_error": {label: [final_error(e) for _, e in curves[label]]
                                  for label in LABELS},
            "final_val_error": {label: [v[1][-1] if v[1] else None for v in held_out[label]]
                                for label in LABELS},
            "test_error": {label: [None if r.top1 is None else 1 - r.top1
                                   for r in runs[label]] for label in LABELS},
            "params": {label: runs[label][0].params for label in LABELS},
        }
        verdict, because = decide(numbers)
        headers, rows = _table(numbers)
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Training and held-out error against steps, plain (left) and ResNet "
                    "(right)", _curves(curves, held_out),
                    "Drawn like the paper's figure 6: dashed, the training error (the mean "
                    "over the seeds of each few steps' batches); bold, the error on the "
                    "validation split after every epoch. Plain nets on the left, ResNets on "
                    "the right; 20 layers in orange, 56 in red."),
             Figure("Final training error per network", _finals(numbers),
                    "The final training error (the last tenth of the steps), mean over the "
                    "seeds with its 95% t interval; a dot per seed.")],
            numbers=numbers,
            notes=[f"Training error: the mean over the batches of every "
                   f"{s['recipe']['curve_every']} steps, in training mode (batch norm on the "
                   "batch, weight decay on); held-out error: the validation split after "
                   "each epoch; test error: the test split once, at the end.",
                   "The paper's figure 6 shows one run per depth, with the training error on "
                   "augmented batches; here each curve is the mean over the seeds."])


def _val_curve(history: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(steps, validation error) at the end of every epoch."""
    rows = [h for h in history if h.get("val_top1") is not None]
    return [int(h["step"]) for h in rows], [1.0 - float(h["val_top1"]) for h in rows]


def _table(numbers: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["network", "params", "final training error % [95% interval]",
               "validation error %", "test error %"]
    rows = []
    for label in LABELS:
        tr = _interval(numbers["final_train_error"][label])
        val = [v for v in numbers["final_val_error"][label] if v is not None]
        test = [v for v in numbers["test_error"][label] if v is not None]
        rows.append([label, f"{numbers['params'][label]:,}" if numbers["params"][label] else "-",
                     f"{pct(tr[0])} [{pct(tr[1])}, {pct(tr[2])}]",
                     pct(float(np.mean(val))) if val else "-",
                     pct(float(np.mean(test))) if test else "-"])
    return headers, rows


COLOURS = {20: "tab:orange", 56: "tab:red"}


def _mean_curve(curves: Sequence[tuple[list[int], list[float]]]
                ) -> tuple[list[int], np.ndarray]:
    """The seeds' curves averaged step by step, over the steps all of them recorded."""
    n = min(len(s) for s, _ in curves)
    return list(curves[0][0][:n]), np.mean([e[:n] for _, e in curves], axis=0)


def _curves(curves: dict[str, list], held_out: dict[str, list]) -> str:
    fig = figure(9.0, 3.6, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, family, title in zip(axes, FAMILIES, ("plain", "ResNet")):
        for depth in DEPTHS:
            label = f"{family}{depth}"
            steps, err = _mean_curve(curves[label])
            ax.plot(steps, 100 * err, "--", color=COLOURS[depth], lw=1)
            vsteps, verr = _mean_curve(held_out[label])
            ax.plot(vsteps, 100 * np.asarray(verr), "-", color=COLOURS[depth], lw=2.2,
                    marker="o", ms=3, label=f"{title}-{depth}")
        ax.set_xlabel("training steps")
        ax.set_title(title)
        ax.legend()
    axes[0].set_ylabel("error % (dashed: training, bold: validation)")
    axes[0].set_ylim(0, None)
    return to_svg(fig, "degradation")


def _finals(numbers: dict[str, Any]) -> str:
    fig = figure(6.0, 3.2, layout="constrained")
    ax = fig.subplots()
    for x, label in enumerate(LABELS):
        values = 100 * np.asarray(numbers["final_train_error"][label])
        mean, low, high = (100 * v for v in _interval(numbers["final_train_error"][label]))
        colour = COLOURS[int(label[-2:])]
        ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                    color=colour)
        ax.plot([x + 0.12] * len(values), values, ".", color="grey")
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_ylabel("final training error %")
    return to_svg(fig, "degradation-final")


__all__ = ["PAPER_CIFAR", "RECIPE", "Degradation", "cifar_protocol", "decide",
           "final_error", "protocol"]
