"""`separable`: what a depthwise-separable convolution saves, and MobileNet's two knobs
(Howard et al., MobileNets, 1704.04861, section 3 and Tables 4, 6 and 7; Chollet's Xception
builds on the same factorisation).

A standard k x k convolution from M to N channels on a D x D map does k²·M·N·D² multiply-
adds: every output channel looks at every input channel through its own k x k filter. The
depthwise-separable one splits the two jobs: a depthwise k x k convolution filters each
input channel on its own (k²·M·D²), then a pointwise 1 x 1 convolution mixes the channels
(M·N·D²). Divide:

    (k²·M·D² + M·N·D²) / (k²·M·N·D²) = 1/N + 1/k²,

M and D cancel. For 3 x 3 filters and the 64 to 1024 channels of MobileNet's layers that is
"8 to 9 times less computation" (section 3.1); MobileNet built from them costs 569 M
multiply-adds at 224 px where the same network with standard convolutions costs 4866 M
(Table 4), for 1.1 points of top-1.

Two knobs then trade accuracy for cost (section 3.3-3.4). The width multiplier α thins
every layer to αM inputs and αN outputs: the pointwise convolutions, nearly all the cost,
shrink by α², the depthwise ones by α. The resolution multiplier ρ shrinks the input and so
every feature map's D² by ρ². Tables 6 and 7: α = 1, 0.75, 0.5, 0.25 costs 569, 325, 149,
41 M multiply-adds for 70.6, 68.4, 63.7, 50.6% top-1; 224, 192, 160, 128 px costs 569, 418,
290, 186 M for 70.6, 69.1, 67.2, 64.4%. "Accuracy drops off smoothly" as the cost falls.

Measured, in three parts:

1. The cost of single convolutions, counted, not computed: real `nn.Conv2d` modules (a
   standard one and a depthwise + pointwise pair, no bias) profiled by PyTorch's flop
   counter (`archlab.analysis.profile`) for N = 8 ... 1024 and k = 3, 5, 7, each count
   checked equal to `analysis.calc.separable_cost`. The ratio holds when every measured
   ratio equals 1/N + 1/k² exactly (in integers: separable·N·k² = standard·(N + k²)), and
   "8-9 times" holds when every 3 x 3 speed-up over MobileNet's N (64 to 1024) rounds to 8
   or 9. The whole network with standard convolutions is counted too, beside Table 4.
2. The cost of the knobs, counted on the paper's own networks (MobileNet v1 at 224 px,
   1000 classes): the exponent p of cost ∝ multiplier^p fitted by least squares on the
   logarithms, for α and for ρ. "About α²" holds when p is within 10% of 2 (1.8 to 2.2).
3. Accuracy over the knobs, trained: a small MobileNet v1 (small_input) on Fashion-MNIST at
   quick scale, the four α at 28 px and α = 1 at the four sizes 28·ρ (28, 24, 20, 16 px:
   exactly the paper's 224, 192, 160, 128 scaled to 28). "Falls smoothly" is read as: no
   step down in cost makes the network significantly *more* accurate (paired tests between
   neighbours, Holm-adjusted within each knob), and the cheapest is significantly less
   accurate than the largest (`variants.compare_variants`). A significant reversal does not
   hold the claim; no significant drop at all is inconclusive: too few images to see it.

The verdict of the experiment joins the parts: it holds when every part holds, does not
hold when any part does not, and is inconclusive otherwise. At quick scale α = 1 is a
quarter of the paper's channels (MobileNet-0.25, channels rounded to whole numbers rather
than to multiples of 8, so that α thins every layer by exactly α): the full width trains
about five times slower on this CPU, and the claim is about the ratios, not the width.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from archlab._plot import figure, to_svg
from archlab._text import human, pct
from archlab.analysis import profile, separable_cost
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_at_sizes
from archlab.experiments.variants import Variant, compare_variants, correctness
from archlab.study.stats import Difference, compare_accuracy, holm, is_significant

CHANNELS = (8, 16, 32, 64, 128, 256, 512, 1024)
KERNELS = (3, 5, 7)
MOBILENET_N = (64, 128, 256, 512, 1024)   # the output channels of MobileNet's separable layers
MAP = 14                                  # D: the map side; it cancels in the ratio
EXPONENT_TOLERANCE = 0.1                  # "about α²": an exponent within 10% of 2

ALPHAS = (1.0, 0.75, 0.5, 0.25)
PAPER_SIZES = (224, 192, 160, 128)
# Tables 6 and 7 (ImageNet top-1 %, million multiply-adds) and Table 4.
PAPER_ALPHA = {"top1": (70.6, 68.4, 63.7, 50.6), "macs": (569, 325, 149, 41)}
PAPER_RHO = {"top1": (70.6, 69.1, 67.2, 64.4), "macs": (569, 418, 290, 186)}
PAPER_FULL_CONV = {"top1": 71.7, "macs": 4866, "separable_macs": 569}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: MobileNet-0.25 on a twelfth of Fashion-MNIST, 28 px
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.085,
                 "test_fraction": 0.2},
        "recipe": {"epochs": 2, "batch_size": 64},
        "base_width": 0.25, "ch_divisor": 1, "side": 28, "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: the paper's widths on CIFAR-10 at 32 px (ρ: 32, 27, 23, 18 px)
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128},
        "base_width": 1.0, "ch_divisor": 8, "side": 32, "seeds": 3, "jobs": 1,
    },
}
# One-cycle SGD (archlab's default), no augmentation: a short run that the knobs alone vary.
RECIPE = {"optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-5,
          "small_input": True, "threads": 1}


# -- part 1: single convolutions --------------------------------------------------------------


def conv_macs(in_chs: int, out_chs: int, kernel: int, size: int = MAP) -> tuple[int, int]:
    """(standard, separable) multiply-adds of a k x k convolution, same padding, stride 1,
    counted by profiling real modules (on the meta device: no memory, no arithmetic)."""
    with torch.device("meta"):
        standard = nn.Conv2d(in_chs, out_chs, kernel, padding=kernel // 2, bias=False)
        separable = nn.Sequential(
            nn.Conv2d(in_chs, in_chs, kernel, padding=kernel // 2, groups=in_chs, bias=False),
            nn.Conv2d(in_chs, out_chs, 1, bias=False))
    return (profile(standard, size, in_chans=in_chs).macs,
            profile(separable, size, in_chans=in_chs).macs)


def conv_table(channels: Sequence[int] | None = None, kernels: Sequence[int] | None = None,
               size: int = MAP) -> list[dict[str, int]]:
    """Every (N, k) (default CHANNELS x KERNELS): the counted costs, M = N (it cancels), each
    checked against calc."""
    rows = []
    for k in kernels or KERNELS:
        for n in channels or CHANNELS:
            standard, separable = conv_macs(n, n, k, size)
            calc = separable_cost(n, n, k, size)
            if (standard, separable) != (calc["standard_macs"], calc["separable_macs"]):
                raise AssertionError(f"N={n}, k={k}: the flop counter says {standard:,} and "
                                     f"{separable:,}, calc {calc['standard_macs']:,} and "
                                     f"{calc['separable_macs']:,}")
            rows.append({"n": n, "k": k, "standard": standard, "separable": separable})
    return rows


def full_conv_cost(name: str = "mobilenet_v1_100", size: int = 224) -> tuple[int, int]:
    """(separable, standard) multiply-adds of a whole MobileNet: as built, and with every
    depthwise + pointwise pair replaced by the standard 3 x 3 convolution of the same input,
    output and stride (Table 4's "Conv MobileNet"), counted from the profile's layers."""
    p = profile(name, size)
    layers = {r.name: r for r in p.layers}
    standard = p.macs
    for layer_name, dw in layers.items():
        if layer_name.endswith("conv_dw.conv"):
            pw = layers[layer_name.replace("conv_dw", "conv_pw")]
            m, h, w = dw.output_shape[1:]
            standard += 9 * m * pw.output_shape[1] * h * w - dw.macs - pw.macs
    return p.macs, standard


# -- part 2: the knobs' cost ------------------------------------------------------------------


def knob_costs() -> dict[str, dict[str, list[float]]]:
    """MACs of the paper's networks (1000 classes, 224 px unless ρ says otherwise)."""
    alpha = [profile("mobilenet_v1_100", 224, width_mult=a).macs for a in ALPHAS]
    rho = [profile("mobilenet_v1_100", s).macs for s in PAPER_SIZES]
    return {"alpha": {"multipliers": list(ALPHAS), "macs": alpha},
            "rho": {"multipliers": [s / PAPER_SIZES[0] for s in PAPER_SIZES], "macs": rho}}


def exponent(multipliers: Sequence[float], macs: Sequence[float]) -> float:
    """p in cost = cost(1)·m^p, least squares on the logarithms through (1, cost(1))."""
    x = np.log(np.asarray(multipliers, float) / multipliers[0])
    y = np.log(np.asarray(macs, float) / macs[0])
    return float((x @ y) / (x @ x))


# -- part 3: accuracy over the knobs ----------------------------------------------------------


def quick_labels(scale: str) -> dict[str, int]:
    """{label: image side}: the α runs at the scale's side, α = 1 at the three ρ sizes."""
    side = SETTINGS[scale]["side"]
    sizes = {f"alpha{a:.2f}": side for a in ALPHAS}
    for s in PAPER_SIZES[1:]:
        sizes[f"rho{round(side * s / PAPER_SIZES[0])}"] = round(side * s / PAPER_SIZES[0])
    return sizes


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: MobileNet v1 at the four widths and the four sizes (see `quick_labels`)."""
    s = SETTINGS[scale]
    models = []
    for label in quick_labels(scale):
        alpha = float(label[5:]) if label.startswith("alpha") else 1.0
        models.append({"name": "mobilenet_v1_100", "label": label, "model_kwargs": {
            "width_mult": s["base_width"] * alpha, "ch_divisor": s["ch_divisor"]}})
    return {
        "description": "MobileNet v1 over its width multiplier α and resolution multiplier ρ "
                       "(1704.04861, Tables 6 and 7).",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1}, "models": models}


def _as_json(d: Difference) -> dict[str, Any]:
    return {"delta": d.delta, "low": d.ci.low, "high": d.ci.high, "p": d.p_adjusted,
            "significant": bool(d.significant)}


def steps_down(runs: dict[str, list], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Each label against the one before it (one step cheaper against its neighbour), the
    p-values Holm-adjusted together: the test of "no step makes it more accurate"."""
    raw = [compare_accuracy(correctness(runs[b]), correctness(runs[a]))
           for a, b in zip(labels, labels[1:])]
    adjusted = holm([d.p_value for d in raw])
    return [{"from": a, "to": b, **_as_json(Difference(**{
        **d.__dict__, "p_adjusted": p, "significant": is_significant(p, d.ci, 0.05)}))}
        for a, b, d, p in zip(labels, labels[1:], raw, adjusted)]


# -- the verdict ------------------------------------------------------------------------------


def join(parts: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """One verdict from several parts: holds if all hold, does not if any does not."""
    verdicts = [v for v, _ in parts.values()]
    verdict = (DOES_NOT_HOLD if DOES_NOT_HOLD in verdicts else
               HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE)
    return verdict, "; ".join(f"{name}: {v.split(' at ')[0]} ({why})"
                              for name, (v, why) in parts.items())


def decide_convs(convs: Sequence[dict[str, int]]) -> tuple[str, str]:
    inexact = [c for c in convs
               if c["separable"] * c["n"] * c["k"] ** 2 != c["standard"] * (c["n"] + c["k"] ** 2)]
    speedups = [c["standard"] / c["separable"] for c in convs
                if c["k"] == 3 and c["n"] in MOBILENET_N]
    lo, hi = min(speedups), max(speedups)
    words = (f"{len(convs) - len(inexact)} of {len(convs)} counted ratios equal 1/N + 1/k² "
             f"exactly; 3x3 with N = {MOBILENET_N[0]}-{MOBILENET_N[-1]}: {lo:.2f}x to "
             f"{hi:.2f}x fewer MACs")
    if inexact or not all(7.5 <= s < 9.5 for s in speedups):
        return DOES_NOT_HOLD, words
    return HOLDS, words


def decide_cost(knob: str, cost: dict[str, list[float]]) -> tuple[str, str]:
    p = exponent(cost["multipliers"], cost["macs"])
    words = f"cost ∝ {knob}^{p:.2f}"
    return (HOLDS if abs(p - 2) <= 2 * EXPONENT_TOLERANCE else DOES_NOT_HOLD), words


def decide_accuracy(knob: str, acc: dict[str, Any]) -> tuple[str, str]:
    overall, steps = acc["overall"], acc["steps"]
    words = (f"the cheapest {100 * overall['delta']:+.2f} points "
             f"[{100 * overall['low']:+.2f}, {100 * overall['high']:+.2f}] against the largest")
    reversals = [s for s in steps if s["significant"] and s["delta"] > 0]
    if reversals:
        return DOES_NOT_HOLD, words + "; " + ", ".join(
            f"{s['to']} beats {s['from']} by {100 * s['delta']:.2f} points" for s in reversals)
    if overall["significant"] and overall["delta"] < 0:
        drops = sum(s["significant"] for s in steps)
        return HOLDS, words + (f", {drops} of {len(steps)} steps significantly lower, none "
                               "higher")
    if overall["significant"]:
        return DOES_NOT_HOLD, words + ": the cheapest is the more accurate"
    return INCONCLUSIVE, words + ": no significant drop"


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the counted convolutions, the knobs' costs and the paired accuracy tests: the
    verdict on "separable is 1/N + 1/k² of standard, and α, ρ cut cost by their squares
    while accuracy falls smoothly"."""
    parts = {"1/N + 1/k²": decide_convs(numbers["convs"])}
    for knob, sign in (("alpha", "α"), ("rho", "ρ")):
        parts[f"{sign} cost"] = decide_cost(sign, numbers["cost"][knob])
        parts[f"{sign} accuracy"] = decide_accuracy(sign, numbers["accuracy"][knob])
    return join(parts)


# -- the experiment ---------------------------------------------------------------------------


class Separable(Experiment):
    name = "separable"
    claim = ("A depthwise-separable convolution costs 1/N + 1/k² of a standard one, 8-9 times "
             "less for 3x3; MobileNet's width multiplier α and resolution multiplier ρ cut the "
             "cost by about α² and ρ² while the accuracy falls smoothly.")
    source = ("MobileNets (Howard et al., 1704.04861), sections 3.1-3.4, Tables 4, 6 and 7; "
              "Xception (Chollet, 1610.02357)")
    paper = ("3x3: 8-9x fewer multiply-adds; whole network 569 M against 4866 M (70.6% against "
             "71.7% top-1); α = 1, 0.75, 0.5, 0.25: 569, 325, 149, 41 M for 70.6, 68.4, 63.7, "
             "50.6%; 224, 192, 160, 128 px: 569, 418, 290, 186 M for 70.6, 69.1, 67.2, 64.4%")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        convs = conv_table()
        separable, standard = full_conv_cost()
        cost = knob_costs()
        sizes = quick_labels(ctx.scale)
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_at_sizes(self.name, protocol(ctx.scale, seeds), sizes, ctx))
        alpha = [f"alpha{a:.2f}" for a in ALPHAS]
        families = {"alpha": alpha, "rho": alpha[:1] + [k for k in sizes if k[:3] == "rho"]}
        variants = compare_variants(runs, alpha[0])
        numbers = {
            "convs": convs, "full_conv": {"separable": separable, "standard": standard},
            "cost": cost, "sizes": sizes, "seeds": [r.seed for r in runs[alpha[0]]],
            "accuracy": {knob: {
                "labels": labels, "top1": [variants[x].mean_top1 for x in labels],
                "macs": [variants[x].macs for x in labels],
                "overall": _as_json(variants[labels[-1]].vs_baseline),
                "steps": steps_down(runs, labels)} for knob, labels in families.items()}}
        verdict, because = decide(numbers)
        side = SETTINGS[ctx.scale]["side"]
        headers, rows = _table(numbers, variants, side)
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Separable against standard: counted against 1/N + 1/k²",
                    _ratio_figure(convs),
                    "Left: the separable convolution's multiply-adds over the standard one's, "
                    "counted by the flop counter (points) on the formula (lines) and its floor "
                    "1/k² (dotted). Right: the same as a speed-up; the band is 8-9x, the grey "
                    "span MobileNet's own N."),
             Figure("Accuracy against cost over α and ρ", _tradeoff_figure(numbers, variants),
                    "Like the paper's Figures 4 and 5: top-1 against multiply-adds (log "
                    "scale). Left: ImageNet, the paper's accuracies at our counted costs. "
                    f"Right: ours, {side} px Fashion-MNIST at quick scale, the mean over seeds "
                    "with its 95% interval."),
             Figure("Cost against the multiplier", _scaling_figure(numbers),
                    "Multiply-adds relative to α = ρ = 1 against the multiplier, log-log: the "
                    "paper's networks at 224 px (filled) and ours (open), on the line m²."),
             ],
            numbers=numbers, notes=_notes(numbers, ctx.scale))


def _table(numbers: dict[str, Any], variants: dict[str, Variant], side: int
           ) -> tuple[list[str], list[list[Any]]]:
    headers = ["network", "paper: M MACs", "ours: M MACs (224 px)", "cost / base (m²)",
               "paper: top-1 %", f"quick: MACs ({side} px base)",
               "quick: top-1 % [95% interval]", "Δ top-1 vs base, points [95%]", "vs base"]
    rows = []
    full = numbers["full_conv"]
    rows.append(["standard convolutions (Table 4)", PAPER_FULL_CONV["macs"],
                 f"{full['standard'] / 1e6:.0f}",
                 f"{full['standard'] / full['separable']:.2f}", PAPER_FULL_CONV["top1"],
                 "-", "-", "-", "-"])
    for knob, paper in (("alpha", PAPER_ALPHA), ("rho", PAPER_RHO)):
        acc, cost = numbers["accuracy"][knob], numbers["cost"][knob]
        for i, label in enumerate(acc["labels"]):
            if knob == "rho" and i == 0:
                continue   # the base is the first α row
            m = cost["multipliers"][i]
            v = variants[label]
            d = v.vs_baseline
            name = (f"α = {m:g}, {side} px" if knob == "alpha" else
                    f"ρ = {PAPER_SIZES[i]}/224, {numbers['sizes'][label]} px")
            rows.append([
                name, paper["macs"][i], f"{cost['macs'][i] / 1e6:.0f}",
                f"{cost['macs'][i] / cost['macs'][0]:.3f} ({m * m:.3f})", paper["top1"][i],
                human(v.macs), f"{pct(v.mean_top1)} [{pct(v.interval.low)}, "
                               f"{pct(v.interval.high)}]",
                "-" if d is None else f"{100 * d.delta:+.2f} [{100 * d.ci.low:+.2f}, "
                                      f"{100 * d.ci.high:+.2f}]", v.outcome])
    return headers, rows


def _notes(numbers: dict[str, Any], scale: str) -> list[str]:
    s = SETTINGS[scale]
    quick = {knob: exponent(_multipliers(numbers, knob), acc["macs"])
             for knob, acc in numbers["accuracy"].items()}
    steps = "; ".join(f"{x['to']} against {x['from']}: {100 * x['delta']:+.2f} points "
                      f"[{100 * x['low']:+.2f}, {100 * x['high']:+.2f}], p {x['p']:.2g}, "
                      + ("significant" if x["significant"] else "tied")
                      for acc in numbers["accuracy"].values() for x in acc["steps"])
    rounding = ("whole numbers" if s["ch_divisor"] == 1 else
                f"multiples of {s['ch_divisor']}")
    return [
        f"At {scale} scale α = 1 is MobileNet v1 at width {s['base_width']:g} of the paper's, "
        f"channels rounded to {rounding}; its own cost scales as α^{quick['alpha']:.2f} and "
        f"ρ^{quick['rho']:.2f}: the depthwise convolutions, the stem and the classifier grow "
        "with α, not α², and weigh more in a narrow network; a strided map's side rounds up, "
        "which keeps the small images' cost a little above ρ².",
        "Neighbouring steps (the cheaper against the next larger; p Holm-adjusted within each "
        "knob; significant when the test and the bootstrap interval agree): " + steps + ".",
        "The depthwise convolutions cost α, not α², so the whole network falls a little "
        "slower than α²; the resolution multiplier touches every layer's map alike, so its "
        "exponent is 2 up to the rounding of the maps' sides.",
    ]


def _multipliers(numbers: dict[str, Any], knob: str) -> list[float]:
    """The trained networks' α, or their ρ = side / the base's side."""
    labels = numbers["accuracy"][knob]["labels"]
    if knob == "alpha":
        return [float(x[5:]) for x in labels]
    return [numbers["sizes"][x] / numbers["sizes"][labels[0]] for x in labels]


def _plain_ticks(axis) -> None:
    """0.5 and 8 on a log axis, not 5×10⁻¹ and 8×10⁰."""
    from matplotlib.ticker import FormatStrFormatter

    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(FormatStrFormatter("%g"))


def _ratio_figure(convs: Sequence[dict[str, int]]) -> str:
    fig = figure(9.5, 3.6, layout="constrained")
    left, right = fig.subplots(1, 2)
    n = np.geomspace(CHANNELS[0], CHANNELS[-1], 200)
    for k, colour in zip(KERNELS, ("tab:blue", "tab:orange", "tab:green")):
        pts = [c for c in convs if c["k"] == k]
        x = [c["n"] for c in pts]
        left.plot(n, 1 / n + 1 / k ** 2, "-", color=colour, lw=1, label=f"1/N + 1/{k}²")
        left.plot(x, [c["separable"] / c["standard"] for c in pts], "o", color=colour,
                  label=f"{k}x{k} counted")
        left.axhline(1 / k ** 2, color=colour, ls=":", lw=0.8)
        right.plot(n, 1 / (1 / n + 1 / k ** 2), "-", color=colour, lw=1)
        right.plot(x, [c["standard"] / c["separable"] for c in pts], "o", color=colour,
                   label=f"{k}x{k}")
    right.axhspan(8, 9, color="tab:blue", alpha=0.12, label="8-9x")
    right.axvspan(MOBILENET_N[0], MOBILENET_N[-1], color="grey", alpha=0.1)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("output channels N")
    left.set_ylabel("separable / standard MACs")
    right.set_ylabel("standard / separable MACs")
    right.set_yscale("log")
    _plain_ticks(right.yaxis)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return to_svg(fig, "separable-ratio")


def _tradeoff_figure(numbers: dict[str, Any], variants: dict[str, Variant]) -> str:
    fig = figure(9.5, 3.6, layout="constrained")
    left, right = fig.subplots(1, 2)
    for knob, paper, marker in (("alpha", PAPER_ALPHA, "o-"), ("rho", PAPER_RHO, "s--")):
        sign = "α" if knob == "alpha" else "ρ"
        left.plot(np.asarray(numbers["cost"][knob]["macs"]) / 1e6, paper["top1"], marker,
                  label=f"{sign} (paper)")
        labels = numbers["accuracy"][knob]["labels"]
        x = [variants[x].macs / 1e6 for x in labels]
        y = [100 * variants[x].mean_top1 for x in labels]
        err = [[y_ - 100 * variants[x].interval.low for x, y_ in zip(labels, y)],
               [100 * variants[x].interval.high - y_ for x, y_ in zip(labels, y)]]
        right.errorbar(x, y, yerr=err, fmt=marker, capsize=3, label=sign)
    left.set_title("ImageNet, 224 px (paper's top-1)")
    right.set_title("ours (quick scale)" if len(variants) else "ours")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("million multiply-adds")
        ax.set_ylabel("top-1 %")
        ax.legend()
    return to_svg(fig, "separable-tradeoff")


def _scaling_figure(numbers: dict[str, Any]) -> str:
    fig = figure(5.5, 3.8, layout="constrained")
    ax = fig.subplots()
    m = np.linspace(0.22, 1.0, 50)
    ax.plot(m, m ** 2, "k-", lw=1, label="m²")
    for knob, colour in (("alpha", "tab:blue"), ("rho", "tab:orange")):
        sign = "α" if knob == "alpha" else "ρ"
        cost = numbers["cost"][knob]
        ax.plot(cost["multipliers"], np.asarray(cost["macs"]) / cost["macs"][0], "o",
                color=colour, label=f"{sign}, paper's network")
        acc = numbers["accuracy"][knob]
        ax.plot(_multipliers(numbers, knob), np.asarray(acc["macs"], float) / acc["macs"][0], "o",
                mfc="none", color=colour, ms=9, label=f"{sign}, ours")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax.xaxis)
    _plain_ticks(ax.yaxis)
    ax.set_xlabel("multiplier m (α, or ρ = side / base side)")
    ax.set_ylabel("MACs / MACs at m = 1")
    ax.legend(fontsize=8)
    return to_svg(fig, "separable-scaling")


__all__ = ["Separable", "conv_macs", "conv_table", "decide", "exponent", "full_conv_cost",
           "join", "knob_costs", "protocol", "quick_labels"]
