"""`regularisation`: dropout, label smoothing, data augmentation and ten-crop test-time
augmentation, each switched on alone against a network trained with none of them
(AlexNet, Krizhevsky, Sutskever and Hinton, NeurIPS 2012, sections 4.1-4.2; Inception v3,
Szegedy et al., 1512.00567, section 7).

A network with millions of weights trained on a few thousand images learns them by heart:
its training error falls to zero while its test error stops falling. A regulariser makes
that memorising harder, so that what is learnt is more of what the images of a class share.
AlexNet's paper is largely about this, since its 60 million parameters overfit even
ImageNet's 1.2 million images:

- dropout (section 4.2): each hidden unit of the first two fully connected layers is set to
  zero with probability 0.5 at every step, so that no unit can rely on particular others;
  "without dropout, our network exhibits substantial overfitting";
- data augmentation (section 4.1): random 224-pixel crops of the 256-pixel images, their
  mirror images, and a random change of the lighting along the principal components of the
  pixel colours; without the crops and mirrors the network "suffers from substantial
  overfitting";
- ten-crop testing (section 4.1): at test time the softmax of the four corner crops, the
  centre crop and the mirrors of all five are averaged;

and Inception v3 (section 7) adds label smoothing: the target of the cross-entropy is 0.9
on the true class and 0.1 spread over all classes instead of a one-hot vector, so the
network is never pushed towards infinitely confident logits; it gained about 0.2 points of
top-1 on ImageNet.

Measured: VGG's configuration A (VGG-11) for small images, narrowed by a width multiplier
and with batch normalisation, on a small stratified share of Fashion-MNIST at its own 28 px,
trained long enough to overfit it, so that regularisation has something to do. Its
classifier is AlexNet's (two hidden fully connected layers, each followed by dropout in the
original); AlexNet itself, without batch normalisation, learns too slowly from PyTorch's
initialisation for a few minutes of CPU (31% test top-1 after 15 epochs of this setting),
which would leave nothing to overfit. One network trained with none of the techniques
(dropout 0, hard targets, no augmentation) is the baseline; each of the three training
techniques is then switched on alone (dropout 0.5, label smoothing 0.1, the `alexnet`
augmentation preset: random crops that translate by up to 1/16 of the side, mirrors and PCA
lighting), and once all three together. Ten-crop testing changes no weights: it is judged
on the runs trained with augmentation (AlexNet's combination: a network trained on shifted
crops and mirrors, then tested on them), every run's test images classified both ways. The
same seeds and test images throughout, so every comparison is a paired one: McNemar's exact
test and the paired bootstrap interval of the difference in top-1, Holm-adjusted over the
eight comparisons made (three techniques, all three together, ten crops, and archlab's
other augmentation presets each alone: `basic` pad-and-crop with mirrors, `rrc` random
resized crops, `randaugment`; shown beside AlexNet's, so a lecturer can say which helps,
but not read by the verdict, since the claim is AlexNet's).

The verdict, on "each of these regularisers improves test accuracy": it holds when all four
(dropout, label smoothing, augmentation, ten crops) are significantly better than without;
it does not hold when any of them is significantly worse; otherwise (none worse, some tied)
it is inconclusive, and the page says which ones did help. "All three together" is shown
but does not enter the verdict: the claim is about each technique, and the combination is
what a practitioner would actually use. A tie means this many images and seeds cannot tell
the two apart, not that the technique does nothing.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, step_curve, train_study
from archlab.experiments.variants import (Variant, as_numbers, compare_variants, correctness,
                                          delta_text, variant_table)
from archlab.study import RunPredictions
from archlab.study.stats import accuracy_interval, compare_accuracy, holm, is_significant

BASELINE, DROPOUT, SMOOTHING, AUGMENT, ALL = (
    "baseline", "dropout", "label-smoothing", "augmentation", "all-three")
TEN_CROP = "ten-crop"
TRAINED = (DROPOUT, SMOOTHING, AUGMENT)       # the training techniques of the claim
TECHNIQUES = (*TRAINED, TEN_CROP)             # what the verdict reads
# archlab's other augmentation presets, each on alone: judged and shown beside AlexNet's
# (which the claim names), not read by the verdict.
OTHER_AUGMENTS = {"augment-basic": "basic", "augment-rrc": "rrc",
                  "augment-randaugment": "randaugment"}
NAMES = {BASELINE: "none (baseline)", DROPOUT: "dropout 0.5 (AlexNet)",
         SMOOTHING: "label smoothing 0.1 (Inception v3)",
         AUGMENT: "crops, mirrors, lighting (AlexNet)", ALL: "all three together",
         TEN_CROP: "ten-crop test, on the augmentation runs",
         "augment-basic": "pad-and-crop, mirrors (basic)",
         "augment-rrc": "random resized crops (rrc)",
         "augment-randaugment": "RandAugment (randaugment)"}
# What each technique changes in the baseline's recipe or network (VGG-11's dropout sits
# after its two hidden fully connected layers, as AlexNet's).
OFF = {"recipe": {"augment": "none", "label_smoothing": 0.0}, "model_kwargs": {"drop_rate": 0.0}}
ON = {DROPOUT: {"model_kwargs": {"drop_rate": 0.5}},
      SMOOTHING: {"recipe": {"label_smoothing": 0.1}},
      AUGMENT: {"recipe": {"augment": "alexnet"}},
      **{label: {"recipe": {"augment": preset}} for label, preset in OTHER_AUGMENTS.items()}}
# The papers' numbers: Inception v3's label smoothing, ImageNet top-1 points (Table 3).
PAPER_SMOOTHING_GAIN = 0.2

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: 2% of Fashion-MNIST (about 1,200 images), 28 px; a
                 # small validation split (it only draws the curves) and a fifth of the test
                 # images, since each is classified eleven times
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.005, "train_fraction": 0.02,
                 "test_fraction": 0.2},
        "recipe": {"epochs": 15, "batch_size": 64},
        "width": 0.25, "fc_dim": 256, "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: the full-width VGG-11 on a tenth of CIFAR-10
        "data": {"dataset": "cifar10", "val_fraction": 0.02, "train_fraction": 0.1},
        "recipe": {"epochs": 60, "batch_size": 128},
        "width": 1.0, "fc_dim": 1024, "seeds": 5, "jobs": 1,
    },
}
MODEL = "vgg11_bn"
# One recipe for every run: SGD with one-cycle, weight decay 5e-4 (AlexNet's and VGG's)
# kept in all of them, since the claim is about what is added to it.
RECIPE = {"optimizer": "sgd", "lr": 0.05, "schedule": "onecycle", "weight_decay": 5e-4,
          "small_input": True, "threads": 1, "curve_every": 10}


def _entry(label: str, setting: Mapping[str, Any]) -> dict[str, Any]:
    """The study's model entry for a label: the baseline with its techniques switched on."""
    recipe = dict(OFF["recipe"])
    kwargs = {**OFF["model_kwargs"], "width": setting["width"], "fc_dim": setting["fc_dim"]}
    for technique in (TRAINED if label == ALL else (label,) if label != BASELINE else ()):
        recipe.update(ON[technique].get("recipe", {}))
        kwargs.update(ON[technique].get("model_kwargs", {}))
    return {"name": MODEL, "label": label, "recipe": recipe, "model_kwargs": kwargs}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: VGG-11 with no regulariser, with each one alone and with all three; every
    run also classified with ten crops."""
    s = SETTINGS[scale]
    return {
        "description": "VGG-11 (BN) with and without dropout, label smoothing and augmentation, "
                       "each alone; every run also tested with ten crops.",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "tta": ["ten_crop:pad"],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": [_entry(label, s)
                   for label in (BASELINE, *TRAINED, *OTHER_AUGMENTS, ALL)]}


# --------------------------------------------------------------------------------------
# Judging: the training techniques against the baseline, ten crops against one view
# --------------------------------------------------------------------------------------


def _tta_correctness(runs) -> np.ndarray:
    rows = []
    for run in runs:
        p = RunPredictions.of(run)
        if p is None or p.pred_tta is None:
            raise ValueError(f"run {run.label} seed {run.seed} stored no ten-crop "
                             "predictions: the protocol's tta must ask for ten_crop")
        rows.append(p.correct(tta=True))
    return np.stack(rows)


def judge(runs: Mapping[str, Sequence], alpha: float = 0.05) -> dict[str, Any]:
    """Every variant against the baseline, and ten crops against the plain view on the
    augmentation runs, every p-value Holm-adjusted together: as_numbers' entries, the
    ten-crop one under TEN_CROP."""
    variants = compare_variants(runs, BASELINE, alpha)
    aug = runs[AUGMENT]
    crops = compare_accuracy(_tta_correctness(aug), correctness(aug), alpha=alpha)
    tested = [v for v in variants.values() if v.vs_baseline is not None]
    adjusted = holm([v.vs_baseline.p_value for v in tested] + [crops.p_value], alpha)

    def readjusted(d, p):
        return dataclasses.replace(d, p_adjusted=p, significant=is_significant(p, d.ci, alpha))

    for v, p in zip(tested, adjusted):
        variants[v.label] = dataclasses.replace(v, vs_baseline=readjusted(v.vs_baseline, p))
    top1 = tuple(float(r.top1_tta) for r in aug)
    ten = Variant(label=TEN_CROP, params=aug[0].params, macs=None, throughput=None,
                  train_time=None, top1=top1,
                  interval=accuracy_interval(top1, crops.images),
                  vs_baseline=readjusted(crops, adjusted[-1]))
    return {"variants": variants, TEN_CROP: ten}


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired tests ({"variants": as_numbers(...)}, with the ten-crop entry among
    them, its delta against the augmentation runs' plain view): the verdict on "each of
    dropout, label smoothing, augmentation and ten-crop testing improves test accuracy"."""
    v = numbers["variants"]
    parts = [f"{t} {delta_text(v[t])} ({v[t]['outcome']})" for t in TECHNIQUES]
    words = "against no regulariser: " + "; ".join(parts)
    if ALL in v:
        words += f"; all three together {delta_text(v[ALL])}"
    others = [f"{label.removeprefix('augment-')} {delta_text(v[label])} ({v[label]['outcome']})"
              for label in OTHER_AUGMENTS if label in v]
    if others:
        words += "; the other augmentation presets: " + ", ".join(others)
    better = [t for t in TECHNIQUES if v[t]["outcome"] == "better"]
    worse = [t for t in TECHNIQUES if v[t]["outcome"] == "worse"]
    if worse:
        return DOES_NOT_HOLD, words + f". Worse with it: {', '.join(worse)}"
    if len(better) == len(TECHNIQUES):
        return HOLDS, words + ". Every one of them helps"
    helped = ", ".join(better) if better else "none"
    return INCONCLUSIVE, words + (f". Significantly better: {helped}; the rest are tied "
                                  "with the baseline at this scale")


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------


class Regularisation(Experiment):
    name = "regularisation"
    claim = ("Each of dropout, data augmentation, ten-crop testing and label smoothing "
             "improves test accuracy: they keep a large network from memorising its "
             "training images.")
    source = ("ImageNet Classification with Deep Convolutional Neural Networks (Krizhevsky, "
              "Sutskever and Hinton, NeurIPS 2012), sections 4.1-4.2; Rethinking the "
              "Inception Architecture (Szegedy et al., 1512.00567), section 7")
    paper = ("AlexNet: without dropout or augmentation 'substantial overfitting'; ten crops "
             "lower top-1 error; Inception v3: label smoothing +0.2 points of ImageNet top-1")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        judged = judge(runs)
        variants = {**judged["variants"], TEN_CROP: judged[TEN_CROP]}
        numbers = {"variants": as_numbers(variants),
                   "train_top1": {label: [_last(r, "train_top1") for r in group]
                                  for label, group in runs.items()},
                   "seeds": [r.seed for r in runs[BASELINE]]}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        headers.insert(5, "train top-1 % (last epoch)")
        for row, label in zip(rows, variants):
            seen = numbers["train_top1"].get(label)
            row.insert(5, "-" if not seen or None in seen else f"{100 * np.mean(seen):.2f}")
        s = SETTINGS[ctx.scale]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("What each regulariser changes in test top-1", _gains_figure(
                numbers["variants"]),
                "The difference in test top-1 with each technique on, against the network "
                "trained with none (ten crops: against the same augmentation runs tested on "
                "one view), with its 95% paired-bootstrap interval; filled when significant "
                "after Holm's correction."),
             Figure("Training error as the runs learn", _curves_figure(runs),
                    "Training error (of the images as trained on: augmented, with dropout) "
                    "every few steps, seed 0. Without regularisation it falls to zero: the "
                    "training images are learnt by heart.")],
            numbers=numbers,
            notes=[f"VGG-11 with batch normalisation, small_input, width {s['width']:g}, "
                   f"fully connected layers of {s['fc_dim']}; seeds "
                   f"{', '.join(map(str, seeds))}, every technique on the same seeds and test "
                   "images.",
                   "Ten crops at the training scale, as AlexNet cut them: the batch is padded "
                   "by reflection by 1/0.875 (not upscaled, a zoom the network never saw) "
                   "and the four corner crops, the centre crop and their mirrors are averaged "
                   "(ten_crop:pad, train/tta.py); on Fashion-MNIST mirrors are allowed.",
                   "The p-values of the eight comparisons (dropout, label smoothing, "
                   "augmentation, the three other augmentation presets, all three, ten "
                   "crops) are Holm-adjusted together; a "
                   "technique is better or worse only when McNemar's test and the bootstrap "
                   "interval agree."])


def _last(run, key: str) -> float | None:
    history = run.history or []
    return history[-1].get(key) if history else None


def _gains_figure(variants: Mapping[str, Mapping]) -> str:
    fig = figure(6.5, 3.2, layout="constrained")
    ax = fig.subplots()
    labels = [*TECHNIQUES, *(x for x in OTHER_AUGMENTS if x in variants), ALL]
    for y, label in enumerate(labels):
        v = variants[label]
        d, (lo, hi) = 100 * v["delta"], v["delta_ci"]
        filled = v["outcome"] in ("better", "worse")
        ax.errorbar([d], [y], xerr=[[d - 100 * lo], [100 * hi - d]], fmt="o", capsize=3,
                    color="C0" if label != TEN_CROP else "C1",
                    markerfacecolor=None if filled else "white")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(labels)), [NAMES[x] for x in labels])
    ax.invert_yaxis()
    ax.set_xlabel("Δ test top-1, points (95% interval)")
    ax.set_title("Each regulariser against none")
    return to_svg(fig, "regularisation-gains")


def _curves_figure(runs: Mapping[str, Sequence]) -> str:
    fig = figure(6.5, 3.6, layout="constrained")
    ax = fig.subplots()
    for label, group in runs.items():
        steps, error = step_curve(group[0])
        ax.plot(steps, [100 * e for e in error], label=NAMES[label], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training error %")
    ax.set_title("Training error (seed 0)")
    ax.legend(fontsize=8)
    return to_svg(fig, "regularisation-curves")


__all__ = ["Regularisation", "decide", "judge", "protocol"]
