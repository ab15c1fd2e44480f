"""`data-efficiency`: a convolution's built-in assumptions are worth most when data is scarce
(Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021, 2010.11929, section 4.3 and
Figures 3-4; the course's lecture on Vision Transformers).

A convolution assumes two things about images before it sees one: what matters is local (a
3x3 kernel looks at neighbours only) and it is the same everywhere (one kernel slides over the
whole image). A Vision Transformer assumes neither: every patch attends to every other from
the first layer, and where a patch is comes only from a learned position embedding. Those
assumptions are "inductive biases": right for images, they save a CNN from learning them.
The ViT paper measured what they are worth: pre-trained on ImageNet (1.3M images) ViT-B and
ViT-L are worse than BiT's ResNets, on ImageNet-21k (14M) about equal, on JFT-300M better
(Figure 3); on random subsets of JFT, the ResNets win on 9M images and the ViTs from 90M on
(Figure 4): "the convolutional inductive bias is useful for smaller datasets, but for larger
ones, learning the relevant patterns directly from data is sufficient, even beneficial".

Measured, on a much smaller scale: a small ResNet and a small ViT of similar size, each with
its own fixed recipe (SGD for the ResNet, AdamW for the ViT, as they are usually trained),
trained on 5, 10, 25, 50 and 100% of one training pool. At quick scale the pool is a fifth
of Fashion-MNIST (11,880 images after the validation share: "100%" here means that pool,
not the whole set). Every run is judged on the same validation and test images, and one
seed's training subsets are nested (the 5% subset lies inside the 10% one, and so on: see
`archlab.data.split`); another seed draws other subsets, so the seeds average over which
images were kept, not only over initialisations.

Equal steps, not equal epochs: every fraction trains for the same number of optimizer steps
(the 5% runs make 20 times the epochs of the 100% ones), and the one-cycle schedule spans the
same steps. With equal epochs a 5% run would take a twentieth of the steps and be judged
undertrained rather than short of data; with equal steps the only thing that differs
between fractions is how many distinct images the steps draw from, which is the question.

The two curves (test top-1 with its interval against the fraction, log x) are compared at
every fraction by the paired test of `archlab.study.stats` (McNemar's exact test over seeds
and images, and the paired bootstrap interval of ViT minus ResNet), Holm-adjusted across the
fractions. Where the mean curves cross is read off by interpolating the difference on log x.

The verdict: the claim holds when the ResNet is significantly more accurate on the smallest
fraction and the gap then closes with more data: at the largest fraction the ViT is tied with
or better than the ResNet, or its deficit is at most half the one at the smallest fraction.
It does not hold when the ViT is significantly better on the smallest fraction (the
convolution's biases did not win on little data), or when the ResNet stays significantly
ahead by as much or more at the largest fraction (the gap did not close). Anything else (a
tie on the smallest fraction, a gap narrowing by less than half) is inconclusive.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab._text import human, pct
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import correctness
from archlab.study import Run
from archlab.study.stats import accuracy_interval, compare_accuracy, holm, is_significant

CNN, VIT = "resnet", "vit"
ARCHS = (CNN, VIT)
NAMES = {CNN: "ResNet", VIT: "ViT"}
FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU: a fifth of Fashion-MNIST at 16 px is the pool, 2 epochs of it
        # A small validation share: a 5% run validates after each of its 40 epochs.
        "data": {"dataset": "fashion-mnist", "image_size": 16, "val_fraction": 0.01,
                 "test_fraction": 0.5},
        "pool": 0.2, "epochs": 2, "batch_size": 64, "fractions": FRACTIONS,
        "resnet": {"layers": [1, 1, 1], "widths": [16, 32, 64], "stem_width": 16},
        # 4 px patches of a 16 px image: a 4x4 grid of tokens, the position embedding
        # sized for it.
        "vit": {"img_size": 16, "patch_size": 4, "small_patch_size": 4, "embed_dim": 64,
                "depth": 4, "num_heads": 4},
        "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: CIFAR-10's 50,000 images are the pool, 30 epochs of it
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "pool": 1.0, "epochs": 30, "batch_size": 128, "fractions": FRACTIONS,
        "resnet": {}, "vit": {},
        "seeds": 3, "jobs": 1,
    },
}
# Each architecture's usual recipe, the same at every fraction: one-cycle SGD for the ResNet;
# AdamW with weight decay, a short warm-up and no momentum cycling for the ViT (the quick
# tour's). The ViT classifies the mean of its patch tokens (no class token), which trains
# sooner in short runs. No augmentation: the biases under test are the architectures'.
RECIPES = {CNN: {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4},
           VIT: {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "moms": None,
                 "pct_start": 0.1}}
MODELS = {CNN: ("resnet20", {}), VIT: ("vit_tiny_patch4_32",
                                       {"global_pool": "avg", "class_token": False})}


def label(arch: str, fraction: float) -> str:
    return f"{arch}-{100 * fraction:g}pct"


def epochs_for(fraction: float, epochs: int) -> int:
    """The epochs that give a run on `fraction` of the pool as many images, hence steps,
    as `epochs` on all of it (the step counts agree to within a tenth: every epoch ends on
    a partial batch, and a small share has more epochs)."""
    return max(1, round(epochs / fraction))


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Both architectures at every fraction, each fraction trained for the same steps."""
    s = SETTINGS[scale]
    models = []
    for fraction in s["fractions"]:
        for arch in ARCHS:
            name, kwargs = MODELS[arch]
            models.append({
                "name": name, "label": label(arch, fraction),
                "model_kwargs": {**kwargs, **s[arch]},
                "recipe": {**RECIPES[arch], "train_fraction": s["pool"] * fraction,
                           "epochs": epochs_for(fraction, s["epochs"])}})
    return {
        "description": "A small ResNet against a small ViT on 5-100% of one training pool, "
                       "the same steps for every fraction (2010.11929, Figures 3-4).",
        "data": {**s["data"], **({"train_fraction": s["pool"]} if s["pool"] < 1 else {})},
        "recipe": {"batch_size": s["batch_size"], "schedule": "onecycle",
                   "small_input": True, "threads": 1},
        "augment": "none", "tta": [], "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": models}


def curves(runs: Mapping[str, Sequence[Run]], fractions: Sequence[float],
           alpha: float = 0.05) -> dict[str, Any]:
    """For every fraction, each architecture's top-1 per seed with its interval, and ViT
    against ResNet: the paired difference, its interval and Holm's p (over fractions)."""
    points, raw = [], []
    for fraction in fractions:
        groups = {arch: runs[label(arch, fraction)] for arch in ARCHS}
        n_images = correctness(groups[CNN][:1]).shape[1]
        point: dict[str, Any] = {"fraction": fraction,
                                 "train_images": (groups[CNN][0].result or {}).get(
                                     "train_images")}
        for arch, group in groups.items():
            top1 = [float(r.top1) for r in group]
            ci = accuracy_interval(top1, n_images)
            point[arch] = {"top1": top1, "interval": [ci.low, ci.high],
                           "params": group[0].params}
        cnn_seeds = {r.seed: r for r in groups[CNN]}
        vits = [r for r in groups[VIT] if r.seed in cnn_seeds]
        raw.append(compare_accuracy(correctness(vits),
                                    correctness([cnn_seeds[r.seed] for r in vits]),
                                    alpha=alpha))
        points.append(point)
    for point, d, p in zip(points, raw, holm([d.p_value for d in raw], alpha)):
        significant = is_significant(p, d.ci, alpha)
        point["vit_minus_resnet"] = {
            "delta": d.delta, "delta_ci": [d.ci.low, d.ci.high], "p_adjusted": p,
            "outcome": "tied" if not significant else (VIT if d.delta > 0 else CNN)}
    return {"points": points, "crossing": crossing(points)}


def crossing(points: Sequence[Mapping[str, Any]]) -> float | None:
    """The fraction where the mean ViT curve first rises to the ResNet's, interpolated on
    log x between the two fractions around it; None when it never does (or is never
    below it)."""
    deltas = [(p["fraction"], p["vit_minus_resnet"]["delta"]) for p in points]
    for (f0, d0), (f1, d1) in zip(deltas, deltas[1:]):
        if d0 < 0 <= d1:
            t = -d0 / (d1 - d0)
            return float(math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0))))
    return None


def _gap_text(point: Mapping[str, Any]) -> str:
    d = point["vit_minus_resnet"]
    lo, hi = d["delta_ci"]
    return (f"{100 * d['delta']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] points at "
            f"{100 * point['fraction']:g}% (p {d['p_adjusted']:.2g})")


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From `curves(...)` ({"points": [...], "crossing": ...}): the verdict on "the ResNet
    wins on little data and the ViT closes the gap with more" (see the module's
    docstring for the rule)."""
    points = numbers["points"]
    small, large = points[0], points[-1]
    s, l = small["vit_minus_resnet"], large["vit_minus_resnet"]
    cross = numbers.get("crossing")
    words = (f"ViT minus ResNet: {_gap_text(small)}, {_gap_text(large)}; the mean curves "
             + (f"cross near {100 * cross:.0f}% of the pool" if cross else "do not cross"))
    if s["outcome"] == VIT:
        return DOES_NOT_HOLD, words + "; the ViT wins even on the smallest share"
    if s["outcome"] == "tied":
        return INCONCLUSIVE, (words + "; no convolution advantage measurable on the "
                                      "smallest share")
    gap_small, gap_large = -s["delta"], -l["delta"]
    if l["outcome"] != CNN:
        return HOLDS, words + "; the ResNet wins on little data and the gap closes"
    if gap_large <= gap_small / 2:
        return HOLDS, (words + "; the ResNet wins on little data and its lead at least "
                               "halves with more")
    if gap_large >= gap_small:
        return DOES_NOT_HOLD, words + "; the ResNet's lead does not shrink with more data"
    return INCONCLUSIVE, words + "; the ResNet's lead shrinks, but by less than half"


def curves_figure(numbers: Mapping[str, Any]) -> str:
    """Test top-1 against the share of the pool (log x), one curve per architecture with
    its 95% intervals: the ViT paper's Figure 4 in miniature."""
    fig = figure(6.5, 3.8, layout="constrained")
    ax = fig.subplots()
    points = numbers["points"]
    xs = [100 * p["fraction"] for p in points]
    for arch, marker in ((CNN, "s"), (VIT, "o")):
        ys = [100 * float(np.mean(p[arch]["top1"])) for p in points]
        low = [y - 100 * p[arch]["interval"][0] for y, p in zip(ys, points)]
        high = [100 * p[arch]["interval"][1] - y for y, p in zip(ys, points)]
        ax.errorbar(xs, ys, yerr=[low, high], marker=marker, capsize=3, label=NAMES[arch])
    if numbers.get("crossing"):
        ax.axvline(100 * numbers["crossing"], color="grey", linestyle=":",
                   label="mean curves cross")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}%" for x in xs])
    ax.set_xlabel("share of the training pool (log scale)")
    ax.set_ylabel("test top-1 %")
    ax.set_title("Accuracy against training data: ResNet and ViT")
    ax.legend()
    return to_svg(fig, "data-efficiency")


def table(numbers: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["share of pool", "training images", "ResNet top-1 % [95%]",
               "ViT top-1 % [95%]", "ViT − ResNet, points [95%]", "p (Holm)", "better"]
    rows = []
    for p in numbers["points"]:
        d = p["vit_minus_resnet"]
        cells = [f"{pct(float(np.mean(p[a]['top1'])))} [{pct(p[a]['interval'][0])}, "
                 f"{pct(p[a]['interval'][1])}]" for a in ARCHS]
        rows.append([f"{100 * p['fraction']:g}%", human(p["train_images"]), *cells,
                     f"{100 * d['delta']:+.2f} [{100 * d['delta_ci'][0]:+.2f}, "
                     f"{100 * d['delta_ci'][1]:+.2f}]", f"{d['p_adjusted']:.3g}",
                     {CNN: "ResNet", VIT: "ViT", "tied": "tied"}[d["outcome"]]])
    return headers, rows


class DataEfficiency(Experiment):
    name = "data-efficiency"
    claim = ("A convolution's inductive biases (locality, weight sharing) win when training "
             "data is scarce; a Vision Transformer closes the gap as data grows.")
    source = ("An Image is Worth 16x16 Words (Dosovitskiy et al., ICLR 2021, 2010.11929), "
              "section 4.3, Figures 3 and 4")
    paper = ("pre-trained on JFT subsets, ResNets (BiT) beat ViTs on 9M images, ViT-B/32 "
             "and ViT-L/16 win from 90M on; on ImageNet-1k alone ViT-B trails BiT")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        numbers = {**curves(runs, s["fractions"]), "seeds": list(seeds),
                   "pool_fraction": s["pool"], "epochs_at_100": s["epochs"]}
        verdict, because = decide(numbers)
        headers, rows = table(numbers)
        pool = ("all of the training set" if s["pool"] == 1.0
                else f"{100 * s['pool']:g}% of {s['data']['dataset']}'s training set")
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Test top-1 against the share of training data", curves_figure(numbers),
                    "Mean test top-1 over seeds with its 95% interval, each architecture "
                    "trained on a share of one pool for the same number of steps; log x.")],
            numbers=numbers,
            notes=[f"The pool (\"100%\") is {pool} after the validation share; every run "
                   "sees the same validation and test images, and one seed's subsets are "
                   "nested (5% ⊂ 10% ⊂ ... ⊂ 100%).",
                   f"Equal steps: {s['epochs']} epochs at 100%, 1/fraction times as many "
                   "at smaller shares, so no fraction is undertrained for lack of steps.",
                   "ViT against ResNet at each share: McNemar's exact test and the paired "
                   "bootstrap interval, Holm-adjusted across the five shares."])


__all__ = ["DataEfficiency", "crossing", "curves", "decide", "epochs_for", "protocol"]
