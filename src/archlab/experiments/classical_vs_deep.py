"""`classical-vs-deep`: why the course leaves hand-designed features behind (the bag of
visual words of Csurka et al. 2004 and Lazebnik et al. 2006, against LeNet-5, LeCun et al.
1998, and a residual network, He et al. 2015; AlexNet's context, Krizhevsky et al. 2012).

Before 2012 the best image classifiers were pipelines of hand-designed stages: describe
small patches with SIFT (histograms of gradient orientation, Lowe 2004), quantise the
descriptors into "visual words" learned by k-means, pool them into one vector per image over
a spatial pyramid, and separate the classes with a linear SVM (archlab.classical.bovw: dense
RootSIFT, VLAD codes, a linear SVM). Only the vocabulary and the last, linear stage learn
anything from the labels. AlexNet won ILSVRC 2012 with 15.3% top-5 error against 26.2% for
the best such pipeline (Fisher vectors over SIFT), and the course's lesson is that learned
features beat hand-designed ones: a network learns its filters, its "vocabulary" (feature
maps) and its pooling end to end, for the task. The price the course names is cost: a
network needs many passes over the data, where the classical pipeline is fitted in one
(describe, cluster, solve a convex problem), so it is the cheaper one to fit.

Measured: the SIFT bag-of-words baseline, LeNet-5 (1998, two convolutions, no batch norm)
and a small ResNet (ResNet-20, the CIFAR network of He et al.) on the same training images,
the same split and seeds, each given a training length that suits it (the classical
pipeline one fit; LeNet several epochs, as it trains slowly without batch norm). For each,
the test top-1 with its interval, the training time and the test time per image (the
networks' at a batch of 128; the pipeline's over the whole test set, description included),
all on this CPU at one thread. Each network is compared with the pipeline on the same test
images by the paired test of `variants.compare_variants` (McNemar over seeds and images,
paired bootstrap interval, Holm over the two networks).

The verdict is on the accuracy claim, judged by the modern network (ResNet-20): it holds
when ResNet-20 is significantly more accurate than the pipeline, does not hold when it is
significantly less, and is inconclusive when the test cannot tell them apart. LeNet-5 is
reported beside it, the 1998 network that the pipelines of the 2000s did beat on harder
data. The cost question is answered from the measured training times: the pipeline is
"cheaper to fit" when its mean training time is below every network's.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants, delta_text,
                                          top1_text, variant_table)

CLASSICAL, LENET, RESNET = "sift-bovw", "lenet5", "resnet20"
LABELS = (CLASSICAL, LENET, RESNET)
NAMES = {CLASSICAL: "dense SIFT + bag of words (VLAD) + linear SVM",
         LENET: "LeNet-5 (1998)", RESNET: "ResNet-20 (2015)"}
# ILSVRC 2012, top-5 error: AlexNet against the best hand-designed pipeline (SIFT + Fisher
# vectors), from the AlexNet paper's Table 2.
PAPER_TOP5_ERROR = {"AlexNet (CNN)": 15.3, "SIFT + Fisher vectors": 26.2}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a tenth of Fashion-MNIST at its own 28 px
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.1,
                 "test_fraction": 0.25},
        "recipe": {"epochs": 3, "batch_size": 32}, "lenet_epochs": 8, "vocab_size": 32,
        "resnet_kwargs": {}, "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU for the networks (the pipeline stays on the CPU): all of CIFAR-10
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128}, "lenet_epochs": 60, "vocab_size": 64,
        "resnet_kwargs": {}, "seeds": 3, "jobs": 1,
    },
}
# The quick tour's recipe: one-cycle SGD, no augmentation (the pipeline has none either).
RECIPE = {"optimizer": "sgd", "lr": 0.1, "small_input": True, "threads": 1,
          "channels_last": True}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: the pipeline, LeNet-5 and ResNet-20 on one split and the same seeds."""
    s = SETTINGS[scale]
    return {
        "description": "Hand-designed features (dense SIFT, bag of words, linear SVM) against "
                       "learned ones (LeNet-5, ResNet-20): accuracy and time.",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 128, "throughput_seconds": 0.5},
        "models": [{"name": RESNET, "label": RESNET, "model_kwargs": s["resnet_kwargs"]},
                   {"name": CLASSICAL, "label": CLASSICAL,
                    "model_kwargs": {"vocab_size": s["vocab_size"]}},
                   # No batch norm: LeNet needs more epochs and a gentler rate.
                   {"name": LENET, "label": LENET,
                    "recipe": {"epochs": s["lenet_epochs"], "lr": 0.05}}]}


def _times(runs) -> dict[str, dict[str, list[float]]]:
    """Per label, per seed: training time (s) and test time per image (ms)."""
    return {label: {"train_s": [float(r.train_time) for r in group],
                    "test_ms": [1000.0 / float(r.throughput) for r in group]}
            for label, group in runs.items()}


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired tests against the pipeline ({"variants": as_numbers(...)} with the
    pipeline as baseline) and the times ({"times": {label: {"train_s": [...]}}}): the verdict
    on "learned features beat the hand-designed pipeline", and the answer to "the pipeline
    is cheaper to fit"."""
    v, times = numbers["variants"], numbers["times"]
    fit = {label: float(np.mean(t["train_s"])) for label, t in times.items()}
    cheaper = all(fit[CLASSICAL] < fit[n] for n in (LENET, RESNET))
    words = (f"ResNet-20 {top1_text(v[RESNET])}% against the SIFT pipeline "
             f"{top1_text(v[CLASSICAL])}%: {delta_text(v[RESNET])}; LeNet-5 "
             f"{top1_text(v[LENET])}%, {AGAINST[v[LENET]['outcome']]} the pipeline "
             f"({delta_text(v[LENET])}). Fitting took {fit[CLASSICAL]:.0f} s for the "
             f"pipeline, {fit[LENET]:.0f} s for LeNet-5, {fit[RESNET]:.0f} s for ResNet-20: "
             + ("the pipeline is the cheapest to fit" if cheaper else
                "the pipeline is not the cheapest to fit here")
             + " (ILSVRC 2012 top-5 error: AlexNet 15.3% against 26.2% for SIFT + Fisher "
               "vectors)")
    outcome = v[RESNET]["outcome"]
    if outcome == "better":
        return HOLDS, words + "; the learned features are the more accurate"
    if outcome == "worse":
        return DOES_NOT_HOLD, words + "; the hand-designed pipeline is the more accurate"
    return INCONCLUSIVE, words + "; tied: this scale cannot tell them apart"


class ClassicalVsDeep(Experiment):
    name = "classical-vs-deep"
    claim = ("Learned features beat hand-designed ones: a convolutional network trained end "
             "to end is more accurate than the SIFT bag-of-words pipeline it replaced, "
             "which is cheaper to fit.")
    source = ("ImageNet Classification with Deep CNNs (Krizhevsky et al., NIPS 2012), "
              "Table 2; Visual Categorization with Bags of Keypoints (Csurka et al. 2004); "
              "spatial pyramids (Lazebnik et al. 2006)")
    paper = ("ILSVRC 2012 top-5 error: 15.3% for AlexNet against 26.2% for the best "
             "hand-designed pipeline (SIFT + Fisher vectors)")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        runs = {label: runs[label] for label in LABELS}
        variants = compare_variants(runs, CLASSICAL)
        times = _times(runs)
        numbers = {"variants": as_numbers(variants), "times": times,
                   "seeds": [r.seed for r in runs[CLASSICAL]]}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        headers += ["training time, s", "test time per image, ms"]
        for row, label in zip(rows, variants):
            row += [f"{np.mean(times[label]['train_s']):.1f}",
                    f"{np.mean(times[label]['test_ms']):.3f}"]
        s = SETTINGS[ctx.scale]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Accuracy against time", _time_figure(numbers),
                    "Mean test top-1 over seeds (95% interval) against the training time "
                    "(left) and the test time per image (right), both on a logarithmic "
                    "axis; the horizontal bars span the seeds' times. The pipeline (black) "
                    "is the baseline of the paired tests.")],
            numbers=numbers,
            notes=[f"The pipeline: dense RootSIFT on a 3 px grid, a {s['vocab_size']}-word "
                   "vocabulary of PCA-reduced descriptors, VLAD codes over a 1x1 + 2x2 "
                   "pyramid, a linear SVM; one fit on the CPU whatever the device.",
                   f"The networks: small_input forms, one-cycle SGD, no augmentation; "
                   f"ResNet-20 {s['recipe']['epochs']} epochs, LeNet-5 {s['lenet_epochs']} "
                   "(no batch norm: it needs more).",
                   "Times are this machine's, one thread each, two runs side by side: "
                   "compare them with one another, not with another machine's. The MACs "
                   "column is empty for the pipeline: it is not a network.",
                   "The paired test: McNemar's exact test over every seed's test images and "
                   "the paired bootstrap interval of the difference, Holm over the two "
                   "networks; 'better' or 'worse' only when both agree."])


def _time_figure(numbers: dict[str, Any]) -> str:
    fig = figure(9.0, 3.6, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    v, times = numbers["variants"], numbers["times"]
    for ax, key, xlabel in zip(axes, ("train_s", "test_ms"),
                               ("training time, s", "test time per image, ms")):
        for label in v:
            xs = times[label][key]
            x, y = float(np.mean(xs)), 100 * float(np.mean(v[label]["top1"]))
            lo, hi = (100 * b for b in v[label]["interval"])
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]],
                        xerr=[[x - min(xs)], [max(xs) - x]], fmt="o", capsize=3,
                        color="black" if label == CLASSICAL else None)
            ax.annotate(NAMES[label].split(" (")[0].split(" +")[0], (x, y),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("test top-1 %")
    axes[0].set_title("accuracy against the cost of fitting")
    axes[1].set_title("accuracy against the cost of using")
    return to_svg(fig, "classical-vs-deep")


__all__ = ["ClassicalVsDeep", "decide", "protocol"]
