"""`aux-heads`: GoogLeNet's auxiliary classifiers (Szegedy et al., "Going Deeper with
Convolutions", 1409.4842, section 5; revisited in Inception v3, 1512.00567, section 4).

GoogLeNet is 22 layers deep. Its authors worried that "the ability to propagate gradients
back through all the layers in an effective manner" was a concern at that depth: the
gradient of the loss is multiplied by every layer's Jacobian on its way down and may arrive
at the first layers too small to teach them anything. Their remedy: two small classifiers
on the outputs of the middle modules 4a and 4d (an average pooling, a 1×1 convolution, a
fully connected layer, dropout 0.7, a softmax), whose losses are added to the main one with
weight 0.3 during training and which are thrown away at test time. Each sends a second,
shorter path of gradient into the lower half of the network, and was expected to encourage
discrimination in its lower stages and to regularise. Inception v3 looked again and found
that the auxiliary classifiers "did not result in improved convergence early in the
training": with and without them the training progressed alike, and only near the end did
the network with them pull slightly ahead, so they act mainly as a regulariser (its
batch-normalised head improved top-1 by 0.4 points).

Measured: GoogLeNet for small images (stride-1 stem, narrowed by a width multiplier so that
it trains on this CPU, with batch normalisation as in torchvision's version), trained with
its two auxiliary classifiers (loss = CE + 0.3·(CE_aux1 + CE_aux2), the trainer's rule for a
model that declares `aux_weight`) and without them (`aux_logits: False`), same recipe and
seeds. During training the step curve records, every few steps, the L2 norm of the gradient
that reached the parameters of the first convolution (`conv1`), of the first Inception
module (`inception3a`, below both auxiliary heads), and of the last one (`inception5b`,
above both, which the auxiliary losses never reach: a check that what changes below is the
heads' doing). The accuracy of the main classifier on the test images is compared by the
paired test of `variants.compare_variants` (no auxiliary heads as the baseline); the
gradient by the ratio, per seed, of the mean gradient norm at `conv1` over the whole run
with the heads to that without.

The verdict, on "the auxiliary classifiers send more gradient into the lower layers and make
the network more accurate": it holds when the network with them is significantly more
accurate and the first layer's gradient is larger with them on every seed; it does not hold
when it is significantly less accurate, or when that gradient is smaller on every seed (the
mechanism contradicted); otherwise it is inconclusive, and the page says which half held.
The training error after the first epoch is shown for Inception v3's point (no faster start).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, step_curve, train_study
from archlab.experiments.variants import (as_numbers, compare_variants, cost_accuracy_figure,
                                          delta_text, top1_text, variant_table)

BASELINE, AUX = "no-aux", "aux"
NAMES = {BASELINE: "GoogLeNet without auxiliary classifiers",
         AUX: "GoogLeNet with its two auxiliary classifiers (weight 0.3)"}
EARLY, MIDDLE, TOP = "conv1", "inception3a", "inception5b"
WATCHED = (EARLY, MIDDLE, TOP)
GRAD = "grad_norm:"        # the step curve's column prefix (train/step_curve.py)
# GoogLeNet's section 5 and Inception v3's section 4 (ImageNet top-1, points).
PAPER_GAIN = {"GoogLeNet, as Inception v3 quotes it": 0.5, "Inception v3, BN head": 0.4}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: GoogLeNet at 1/8 of its width, 16 px, a tenth of the data
        "data": {"dataset": "fashion-mnist", "image_size": 16, "val_fraction": 0.02,
                 "train_fraction": 0.1, "test_fraction": 0.5},
        "recipe": {"epochs": 3, "batch_size": 64, "curve_every": 10},
        "width": 0.125, "seeds": 3, "jobs": 2,
    },
    "full": {    # a GPU: the full-width network on CIFAR-10
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128, "curve_every": 50},
        "width": 1.0, "seeds": 3, "jobs": 1,
    },
}
RECIPE = {"optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-4,
          "small_input": True, "threads": 1, "augment": "none",
          "grad_norms": list(WATCHED)}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: the scale's GoogLeNet with and without its auxiliary classifiers."""
    s = SETTINGS[scale]
    return {
        "description": "GoogLeNet with and without its auxiliary classifiers (1409.4842, "
                       "section 5): test top-1 and the gradient reaching the first layers.",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": [{"name": "googlenet", "label": label,
                    "model_kwargs": {"aux_logits": label == AUX, "width": s["width"]}}
                   for label in (BASELINE, AUX)]}


def gradient_numbers(runs: Mapping[str, Sequence]) -> dict[str, Any]:
    """Per label and watched module: each seed's mean gradient norm over the run; and each
    seed's ratio (with the heads / without) of it; and the training error of the main
    classifier at the end of the first epoch."""
    out: dict[str, Any] = {"mean": {}, "first_epoch_error": {}}
    for label, group in runs.items():
        out["mean"][label] = {m: [float(np.mean(step_curve(r, GRAD + m)[1])) for r in group]
                              for m in WATCHED}
        out["first_epoch_error"][label] = [_error_at_epoch(r, 1.0) for r in group]
    out["ratio"] = {m: [a / b for a, b in zip(out["mean"][AUX][m], out["mean"][BASELINE][m])]
                    for m in WATCHED}
    return out


def _error_at_epoch(run, epoch: float) -> float:
    """The training error of the last recorded window ending at or before `epoch`."""
    steps = run.result["steps"]
    errors = [e for x, e in zip(steps["epoch"], steps["train_error"]) if x <= epoch + 1e-9]
    return float(errors[-1] if errors else steps["train_error"][0])


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired test of the main classifier's accuracy ({"variants": ...}, the
    "aux" entry) and the per-seed ratios of the first layer's gradient norm
    ({"gradient": {"ratio": {"conv1": [...]}}}): the verdict."""
    aux = numbers["variants"][AUX]
    ratios = numbers["gradient"]["ratio"][EARLY]
    paper = ", ".join(f"+{g:.1f} ({who})" for who, g in PAPER_GAIN.items())
    words = (f"with the auxiliary classifiers {top1_text(aux)}% against "
             f"{top1_text(numbers['variants'][BASELINE])}% without: {delta_text(aux)} "
             f"(papers: {paper}); gradient norm at {EARLY} with them / without, per seed: "
             + ", ".join(f"{r:.2f}" for r in ratios))
    more, less = all(r > 1 for r in ratios), all(r < 1 for r in ratios)
    if aux["outcome"] == "worse":
        return DOES_NOT_HOLD, words + "; the network with them is less accurate"
    if less:
        return DOES_NOT_HOLD, words + "; less gradient reaches the first layer with them"
    if aux["outcome"] == "better" and more:
        return HOLDS, words + "; more gradient reaches the first layer, and accuracy gains"
    half = ("more gradient reaches the first layer with them on every seed" if more
            else "the first layer's gradient is not larger on every seed")
    acc = "more accurate" if aux["outcome"] == "better" else "tied in accuracy"
    return INCONCLUSIVE, words + f"; {half}, and the network is {acc}"


class AuxHeads(Experiment):
    name = "aux-heads"
    claim = ("GoogLeNet's auxiliary classifiers on its middle modules send more gradient "
             "into the lower layers of the deep network and make it more accurate.")
    source = ("Going Deeper with Convolutions (Szegedy et al., 1409.4842), section 5; "
              "Rethinking the Inception Architecture (Szegedy et al., 1512.00567), section 4")
    paper = ("about +0.5 points of top-1 with the auxiliary heads (Inception v3's account of "
             "GoogLeNet); Inception v3: no faster early training, a regulariser (+0.4 with "
             "a batch-normalised head)")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        variants = compare_variants(runs, BASELINE)
        grad = gradient_numbers(runs)
        numbers = {"variants": as_numbers(variants), "gradient": grad,
                   "seeds": [r.seed for r in runs[BASELINE]]}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        headers += [f"mean ‖grad‖ at {m}" for m in WATCHED] + ["train error after epoch 1 %"]
        for row, label in zip(rows, variants):
            row += [f"{np.mean(grad['mean'][label][m]):.3g}" for m in WATCHED]
            row.append(f"{100 * np.mean(grad['first_epoch_error'][label]):.1f}")
        s = SETTINGS[ctx.scale]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("The gradient reaching the first and the last layers", _gradient_figure(
                runs), "The L2 norm of the gradient of the loss with respect to the "
                "parameters of the first convolution (left) and of the last Inception module "
                "(right), the mean over each window of steps, every seed; log scale. The "
                "auxiliary losses flow into the left one and never reach the right one."),
             Figure("Accuracy with and without the auxiliary classifiers",
                    cost_accuracy_figure(variants, "Test top-1 against parameters",
                                         "aux-heads", cost="params"),
                    "Mean test top-1 over seeds (95% interval) of the main classifier; the "
                    "heads' parameters count here but are thrown away at test time (the "
                    "MACs and img/s in the table are the test-time network's).")],
            numbers=numbers,
            notes=[f"GoogLeNet, small_input, width {s['width']:g}, batch normalisation "
                   "(torchvision's form); the heads pool to 4×4 as torchvision's do.",
                   "With the heads the loss is CE + 0.3·(CE_aux1 + CE_aux2), so their "
                   "gradient adds to the main loss's below modules 4a and 4d; the recorded "
                   "training error is the main classifier's.",
                   "The gradient norm is measured after backpropagation and before the "
                   "optimizer step (recipe.grad_norms, train/step_curve.py)."])


def _gradient_figure(runs: Mapping[str, Sequence]) -> str:
    fig = figure(8.0, 3.4, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, module in zip(axes, (EARLY, TOP)):
        for colour, label in zip(("C0", "C1"), (BASELINE, AUX)):
            for i, run in enumerate(runs[label]):
                steps, norms = step_curve(run, GRAD + module)
                ax.plot(steps, norms, color=colour, lw=1.0, alpha=0.8,
                        label=NAMES[label].split(" (")[0] if i == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_title(f"‖gradient‖ at {module}")
    axes[0].set_ylabel("L2 norm of the gradient")
    axes[0].legend(fontsize=7)
    return to_svg(fig, "aux-heads-gradient")


__all__ = ["AuxHeads", "decide", "gradient_numbers", "protocol"]
