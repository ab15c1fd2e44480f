"""`receptive-field`: why VGG stacks 3×3 convolutions (Simonyan and Zisserman, 1409.1556,
section 2.3 and section 4.1).

A unit after one 3×3 convolution sees 3×3 pixels; after a second 3×3 on top it sees 5×5,
after a third 7×7: each layer widens the field by 2. So a stack of n 3×3 convolutions looks
as far as one (2n+1)×(2n+1) convolution, and costs less: with C channels in and out, two
3×3 hold 2·9C² = 18C² weights against 25C² for a 5×5, three hold 27C² against 49C² for a
7×7 ("81% more"). And the stack puts a non-linearity after each layer, so it can compute
more complicated functions of what it sees. The paper tested the trade directly (section
4.1): net B with each pair of 3×3 replaced by one 5×5, the same field with fewer, larger
layers, had a top-1 error 7% higher than B.

What is measured here, in three parts.

- Cost, exactly: the real modules (VGG's own stage builder, `models.vgg.make_stages`, with
  and without its `single_kernel` option, ReLU after every convolution) at C = 256 on a 56×56
  map, which is VGG-16's third stage, counted by `analysis.profile`: parameters and MACs
  against the hand formulas n·(9C² + C) against k²C² + C (with biases) and n·9C²·HW against
  k²C²·HW.
- The receptive field, measured: backpropagate from the centre output unit to the input
  and see which input pixels get a non-zero gradient. Their extent must be 5 and 7, as
  1 + n·(k − 1) says, as `analysis.calc.receptive_field` computes and as
  `analysis.profile.layer_fields` tracks through the modules. The same gradients show what
  Luo et al. (1701.04128, "the effective receptive field") found: the field is not used
  evenly. With random weights, the expected squared gradient at an input pixel is
  proportional to the number of paths from it to the centre, a triangle for two 3×3 and a
  near-Gaussian for three, while one large kernel weighs its whole window alike. The share
  of the gradient's energy in the central 3×3 is measured and set beside that count.
- Accuracy: a small VGG (configuration B, pairs of 3×3 in every stage, and D, triples in the
  last three) against the same network with `single_kernel=True` (one 5×5, or 7×7, per
  stage: the same field, one layer and one ReLU per stage), trained under one recipe with
  several seeds on Fashion-MNIST at 28 px, compared on the same test images with
  `variants.compare_variants` (McNemar over seeds and images, paired bootstrap interval).

The verdict. The cost and field part is exact: it fails (the claim does not hold) if a
measured field differs from 5 or 7 or a count from its formula. Then accuracy decides: the
claim holds when the stacks are better than the single kernels in at least one pair and
worse in none (the paper: better); it does not hold when a single kernel is better in
either pair; it is inconclusive when both pairs are ties. Note that at 28 px with one input
channel the single-kernel networks are not dearer: their first stage reads one channel
(25·1·C against 9·1·C + 9·C²), so the formulas' saving holds where the channels in and out
are equal, not for a network's first layer.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from archlab._plot import figure, to_svg
from archlab._text import human, pct
from archlab.analysis import calc
from archlab.analysis.profile import layer_fields, profile
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants,
                                          cost_accuracy_figure, delta_text, top1_text)
from archlab.models.vgg import make_stages, single_kernels

STACKS = (2, 3)                 # n stacked 3×3 against one (2n+1)×(2n+1)
CHANNELS, SIZE = 256, 56        # VGG-16's third stage: three 3×3 on 56×56×256
# The gradient maps: a thin block on a small map is enough (the field does not depend on
# the channels), averaged over many random weight draws since one draw is noisy.
FIELD_CHANNELS, FIELD_SIZE, FIELD_INPUTS = 16, 15, 4
PAPER_ERROR_GAP = 7.0           # section 4.1: B with 5×5s had a 7% higher top-1 error

# The networks trained: VGG configuration -> (model, its 3×3 label, its single-kernel label,
# the largest single kernel).
NETS = {"B": ("vgg13_bn", "B 3x3", "B 5x5", 5), "D": ("vgg16_bn", "D 3x3", "D 7x7", 7)}
NAMES = {"B 3x3": "VGG-B: two 3×3 per stage", "B 5x5": "VGG-B: one 5×5 per stage",
         "D 3x3": "VGG-D: 2, 2, 3, 3, 3 × 3×3", "D 7x7": "VGG-D: 5×5, 5×5, 7×7, 7×7, 7×7"}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a tenth of Fashion-MNIST, two epochs, quarter width
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.1,
                 "test_fraction": 0.5},
        "recipe": {"epochs": 2, "batch_size": 32},
        "model": {"width": 0.25, "fc_dim": 128, "drop_rate": 0.0},
        "seeds": 3, "jobs": 2, "draws": 48,
    },
    "full": {    # a GPU: CIFAR-10 at 32 px, the full-width networks with dropout
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128},
        "model": {},
        "seeds": 3, "jobs": 1, "draws": 512,
    },
}
RECIPE = {"optimizer": "sgd", "lr": 0.05, "threads": 1, "channels_last": True}


def block(layers: int, channels: int, single: bool) -> nn.Sequential:
    """`layers` 3×3 convolutions with a ReLU after each, as VGG's stage builder makes them,
    or (`single`) the one (2·layers + 1)×(2·layers + 1) convolution that replaces them."""
    config = ((f"conv3-{channels}",) * layers,)
    stage, _ = make_stages(single_kernels(config) if single else config, channels,
                           batch_norm=False)
    body = nn.Sequential(OrderedDict(list(stage.named_children())[:-1]))   # no pooling
    body.in_chans = channels        # what profile and layer_fields feed it
    return body


def costs(layers: int, channels: int = CHANNELS, size: int = SIZE) -> dict[str, Any]:
    """Parameters, MACs and the tracked receptive field of the stack and of the single
    kernel (profile on the meta device), with the hand formulas beside them."""
    k = 2 * layers + 1
    out: dict[str, Any] = {"layers": layers, "kernel": k, "channels": channels, "size": size}
    for side, single in (("stack", False), ("single", True)):
        with torch.device("meta"):
            body = block(layers, channels, single)
        p = profile(body, size)
        last = [n for n, m in body.named_children() if isinstance(m, nn.Conv2d)][-1]
        out[f"params_{side}"], out[f"macs_{side}"] = p.params, p.macs
        out[f"rf_profile_{side}"] = layer_fields(body, size, [last])[last].size[0]
    c2 = channels * channels
    out["formula_params_stack"] = layers * (9 * c2 + channels)
    out["formula_params_single"] = k * k * c2 + channels
    out["formula_macs_stack"] = layers * 9 * c2 * size * size
    out["formula_macs_single"] = k * k * c2 * size * size
    out["rf_theory"] = 1 + layers * 2
    out["rf_calc"] = calc.receptive_field([(3, 1)] * layers)["receptive_field"]
    return out


def gradient_energy(layers: int, single: bool, draws: int, seed: int = 0) -> np.ndarray:
    """(FIELD_SIZE, FIELD_SIZE): the squared gradient of the centre output unit (summed over
    its channels) with respect to every input pixel, summed over the input channels and
    averaged over random inputs and `draws` random initialisations."""
    torch.manual_seed(seed)
    c = FIELD_SIZE // 2
    energy = torch.zeros(FIELD_SIZE, FIELD_SIZE, dtype=torch.float64)
    for _ in range(draws):
        body = block(layers, FIELD_CHANNELS, single)
        x = torch.randn(FIELD_INPUTS, FIELD_CHANNELS, FIELD_SIZE, FIELD_SIZE,
                        requires_grad=True)
        body(x)[:, :, c, c].sum().backward()
        energy += x.grad.double().pow(2).sum((0, 1))
    return (energy / draws).numpy()


def extent(energy: np.ndarray) -> int:
    """The side of the smallest box holding every pixel with a non-zero gradient."""
    rows, cols = np.nonzero(energy.any(1))[0], np.nonzero(energy.any(0))[0]
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1) if len(rows) else 0


def centre_share(energy: np.ndarray, side: int = 3) -> float:
    """The share of the energy on the central side×side pixels."""
    c, h = energy.shape[0] // 2, side // 2
    return float(energy[c - h:c + h + 1, c - h:c + h + 1].sum() / energy.sum())


def path_counts(layers: int, single: bool) -> np.ndarray:
    """The expected energy with random weights, up to a factor: one large kernel weighs its
    window alike; a stack weighs each pixel by its number of paths to the centre, the
    coefficients of (1 + x + x²)^n along each axis."""
    if single:
        axis = np.ones(2 * layers + 1)
    else:
        axis = np.ones(1)
        for _ in range(layers):
            axis = np.convolve(axis, np.ones(3))
    return np.outer(axis, axis)


def fields(draws: int) -> list[dict[str, Any]]:
    """For each stack: its costs, and the receptive field measured from gradients."""
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # thousands of tiny convolutions: threads only add overhead
    try:
        for layers in STACKS:
            out.append(_field_row(layers, draws))
    finally:
        torch.set_num_threads(threads)
    return out


def _field_row(layers: int, draws: int) -> dict[str, Any]:
    row = costs(layers)
    for side, single in (("stack", False), ("single", True)):
        energy = gradient_energy(layers, single, draws)
        row[f"rf_measured_{side}"] = extent(energy)
        row[f"share_{side}"] = centre_share(energy)
        row[f"share_theory_{side}"] = centre_share(path_counts(layers, single))
        row[f"energy_{side}"] = (energy / energy.sum()).round(6).tolist()
    return row


def field_mismatches(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What disagrees with the formulas: a field other than 1 + 2n, a count other than the
    hand-computed one."""
    bad = []
    for r in rows:
        n, k = r["layers"], r["kernel"]
        for key in ("rf_measured_stack", "rf_measured_single", "rf_calc", "rf_profile_stack",
                    "rf_profile_single"):
            if r[key] != r["rf_theory"]:
                bad.append(f"{n}×3×3 against {k}×{k}: {key} is {r[key]}, not {r['rf_theory']}")
        for key in ("params_stack", "params_single", "macs_stack", "macs_single"):
            if r[key] != r[f"formula_{key}"]:
                bad.append(f"{n}×3×3 against {k}×{k}: {key} is {r[key]}, the formula "
                           f"{r[f'formula_{key}']}")
    return bad


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: VGG-B and VGG-D with stacks of 3×3, and each with one kernel per stage."""
    s = SETTINGS[scale]
    models = []
    for name, stack, single, _ in NETS.values():
        models.append({"name": name, "label": stack, "model_kwargs": dict(s["model"])})
        models.append({"name": name, "label": single,
                       "model_kwargs": {**s["model"], "single_kernel": True}})
    return {
        "description": "VGG with stacks of 3×3 convolutions against the same network with "
                       "one 5×5 or 7×7 per stage (1409.1556, sections 2.3 and 4.1).",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 64, "throughput_seconds": 0.2},
        "models": models,
    }


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the cost and field rows (`fields`) and, per VGG configuration, the single-kernel
    network against its stack (`accuracy`: outcome 'better', 'worse' or 'tied' for the
    single kernel, delta = single − stack): the verdict on "stacked 3×3 are as far-sighted,
    cheaper and at least as accurate"."""
    bad = field_mismatches(numbers["fields"])
    if bad:
        return DOES_NOT_HOLD, "the cost or the field differs from the formula: " + "; ".join(bad)
    words = []
    for r in numbers["fields"]:
        n, k = r["layers"], r["kernel"]
        words.append(f"{n}×3×3 see {r['rf_measured_stack']}×{r['rf_measured_stack']} "
                     f"(measured from gradients, as one {k}×{k}) with "
                     f"{1 - r['params_stack'] / r['params_single']:.0%} fewer weights")
    outcomes = {}
    for config, acc in numbers["accuracy"].items():
        outcomes[config] = acc["outcome"]
        words.append(f"VGG-{config} with one {acc['kernel']}×{acc['kernel']} per stage is "
                     f"{AGAINST[acc['outcome']]} its 3×3 stacks ({delta_text(acc)})")
    because = "; ".join(words)
    if any(o == "better" for o in outcomes.values()):
        return DOES_NOT_HOLD, because + ": a single large kernel beat the stack"
    if any(o == "worse" for o in outcomes.values()):
        return HOLDS, because
    return INCONCLUSIVE, because + ": the costs hold exactly, the accuracies are ties"


class ReceptiveField(Experiment):
    name = "receptive-field"
    claim = ("Two stacked 3×3 convolutions see as far as one 5×5 and three as one 7×7, with "
             "fewer weights (18C² against 25C², 27C² against 49C²) and more non-linearities, "
             "and a network built from such stacks is at least as accurate.")
    source = "VGG (Simonyan and Zisserman, 1409.1556), sections 2.3 and 4.1"
    paper = ("27C² against 49C² weights (the 7×7 has 81% more); net B with each pair of 3×3 "
             "replaced by a 5×5: top-1 error 7% higher")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        rows = fields(s["draws"])
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        variants, accuracy = {}, {}
        for config, (_, stack, single, kernel) in NETS.items():
            pair = compare_variants({stack: runs[stack], single: runs[single]}, stack)
            variants.update(pair)
            summary = as_numbers(pair)
            accuracy[config] = {**summary[single], "kernel": kernel, "stack": summary[stack]}
        numbers = {"fields": rows, "accuracy": accuracy,
                   "seeds": [r.seed for r in runs[NETS["B"][1]]]}
        verdict, because = decide(numbers)
        return Outcome(
            verdict, because,
            ["", "stack of 3×3", "one large kernel", "by hand / theory", "large / stack"],
            _rows(numbers),
            [Figure("What the centre unit sees: |∂out/∂in|", _heatmaps(rows),
                    "The root-mean-square gradient of the centre output unit with respect to "
                    "each input pixel, averaged over random weights and inputs, each map "
                    "scaled to its largest value; the box is the theoretical field. Both "
                    "sides of each pair see the same square, but the stacks concentrate on "
                    "its middle (Luo et al. 2016's effective receptive field)."),
             Figure("The gradient's energy along the middle row", _profiles(rows),
                    "Share of the squared gradient per input column of the middle row: "
                    "measured (dots) and the number of paths to the centre (lines: a "
                    "triangle for two 3×3, a bell for three; flat for one large kernel)."),
             Figure("Accuracy against cost, the networks trained",
                    cost_accuracy_figure(variants, "VGG at 28 px: stacks against single "
                                                   "kernels", "receptive-field-acc"),
                    "Test top-1 (mean over seeds, 95% interval) against MACs per image.")],
            numbers=numbers,
            notes=[f"Costs at C = {CHANNELS} channels in and out on a {SIZE}×{SIZE} map, "
                   "counted by analysis.profile on the meta device; biases included.",
                   f"The gradient maps average {s['draws']} random initialisations of a "
                   f"{FIELD_CHANNELS}-channel block, {FIELD_INPUTS} random inputs each."])


def _rows(numbers: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in numbers["fields"]:
        n, k, c = r["layers"], r["kernel"], r["channels"]
        pair = f"{n}×3×3 / {k}×{k}"
        rows += [
            [f"{pair}: parameters (C = {c})", human(r["params_stack"]),
             human(r["params_single"]),
             f"{n}·(9C²+C) = {r['formula_params_stack']:,} / {k}²C²+C = "
             f"{r['formula_params_single']:,}", f"{r['params_single'] / r['params_stack']:.2f}×"],
            [f"{pair}: MACs ({r['size']}×{r['size']})", human(r["macs_stack"]),
             human(r["macs_single"]), f"{n}·9C²HW / {k}²C²HW",
             f"{r['macs_single'] / r['macs_stack']:.2f}×"],
            [f"{pair}: receptive field from input gradients", str(r["rf_measured_stack"]),
             str(r["rf_measured_single"]), f"1+{n}·2 = {r['rf_theory']}; calc "
             f"{r['rf_calc']}; profile {r['rf_profile_stack']:g} / {r['rf_profile_single']:g}",
             "same" if r["rf_measured_stack"] == r["rf_measured_single"] else "differs"],
            [f"{pair}: gradient energy on the central 3×3", pct(r["share_stack"], 1) + "%",
             pct(r["share_single"], 1) + "%", f"paths: {pct(r['share_theory_stack'], 1)}% / "
             f"{pct(r['share_theory_single'], 1)}%", "-"],
        ]
    for config, acc in numbers["accuracy"].items():
        base = acc["stack"]
        rows += [
            [f"VGG-{config}: parameters / MACs", f"{human(base['params'])} / "
             f"{human(base['macs'])}", f"{human(acc['params'])} / {human(acc['macs'])}", "-",
             f"{acc['params'] / base['params']:.2f}× / {acc['macs'] / base['macs']:.2f}×"],
            [f"VGG-{config}: test top-1 % [95% interval]", top1_text(base), top1_text(acc),
             "Δ " + delta_text(acc), f"large kernel {acc['outcome']}"],
        ]
    return rows


def _heatmaps(rows: Sequence[dict[str, Any]]) -> str:
    fig = figure(8.5, 2.6, layout="constrained")
    axes = fig.subplots(1, 2 * len(rows))
    view = 5                          # show the centre ± 5 pixels
    c = FIELD_SIZE // 2
    panels = [(r, side) for r in rows for side in ("stack", "single")]
    for ax, (r, side) in zip(axes, panels):
        rms = np.sqrt(np.asarray(r[f"energy_{side}"]))[c - view:c + view + 1,
                                                        c - view:c + view + 1]
        ax.imshow(rms / rms.max(), cmap="magma", vmin=0, vmax=1)
        half = r["rf_theory"] / 2
        ax.add_patch(_box(view - half, 2 * half))
        ax.set_title(f"{r['layers']}× 3×3" if side == "stack" else
                     f"one {r['kernel']}×{r['kernel']}")
        ax.set_xlabel(f"centre 3×3: {pct(r[f'share_{side}'], 0)}%")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return to_svg(fig, "receptive-field-maps")


def _box(corner: float, side: float):
    from matplotlib.patches import Rectangle

    return Rectangle((corner, corner), side, side, fill=False, edgecolor="tab:cyan", lw=1.2)


def _profiles(rows: Sequence[dict[str, Any]]) -> str:
    fig = figure(7.5, 2.8, layout="constrained")
    axes = fig.subplots(1, len(rows), sharey=True)
    c = FIELD_SIZE // 2
    offsets = np.arange(FIELD_SIZE) - c
    for ax, r in zip(np.atleast_1d(axes), rows):
        for side, colour, single in (("stack", "tab:blue", False),
                                     ("single", "tab:orange", True)):
            energy = np.asarray(r[f"energy_{side}"])
            theory = path_counts(r["layers"], single)
            pad = (FIELD_SIZE - theory.shape[0]) // 2
            theory = np.pad(theory / theory.sum(), pad)
            label = f"{r['layers']}× 3×3" if side == "stack" else f"{r['kernel']}×{r['kernel']}"
            ax.plot(offsets, theory[c], "-", color=colour, lw=1, label=label + " (paths)")
            ax.plot(offsets, energy[c], "o", color=colour, ms=3.5)
        half = r["kernel"] // 2
        ax.set_xlim(-half - 1.5, half + 1.5)
        ax.set_xlabel("input column − centre")
        ax.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel("share of the gradient energy")
    return to_svg(fig, "receptive-field-rows")


__all__ = ["ReceptiveField", "costs", "decide", "extent", "fields", "path_counts",
           "protocol"]
