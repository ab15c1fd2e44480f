"""`compound-scaling`: EfficientNet's rule for making a network bigger (Tan and Le, ICML
2019, 1905.11946, section 3.3, equation 3, Table 2 and Figure 3; Table 3 for ResNet).

A convolutional network can be made bigger three ways: deeper (more layers), wider (more
channels) or fed larger images. Each alone helps and each saturates. The paper's argument
is that they depend on each other: a larger image needs more layers to see as far in it and
more channels to hold its finer patterns. So scale them together by one coefficient φ,

    depth d = α^φ,  width w = β^φ,  resolution r = γ^φ,  α·β²·γ² ≈ 2  (α, β, γ ≥ 1),

where a grid search at φ = 1 found α = 1.2, β = 1.1, γ = 1.15. A convolution's cost is
linear in the depth and quadratic in the width (inputs times outputs) and in the side of the
image (its area), so the FLOPs grow by (α·β²·γ²)^φ ≈ 2^φ: each step of φ doubles the cost.
EfficientNet-B1 to B7 are B0 scaled so (Table 2: 0.39, 0.70, 1.0, 1.8, 4.2, 9.9, 19, 37
billion FLOPs), and Figure 3 / Table 3 show that at the same cost, compound scaling is more
accurate than scaling any one dimension.

Measured, in two parts:

1. The cost, counted (`archlab.analysis.profile`, on the meta device, 1000 classes) for B0 to
   B7, each at its own resolution, and for `efficientnet_custom` at φ = 0 ... 7, which
   applies the rule itself and is costed at its own 224·1.15^φ px. The growth per step of φ
   is the slope of log₂(MACs / MACs of B0) against φ, fitted through φ = 0 by least squares,
   as a factor 2^slope. The rule's own factor is α·β²·γ² = 1.92, which the paper calls ≈ 2;
   so "≈ 2^φ" holds when the factor lies within 10% of 2 (1.8 to 2.2). B1..B7 use the
   released, hand-rounded coefficients (e.g. B1 is 240 px, not the rule's 258), and every
   network rounds channels to multiples of 8 and repeats up: the count says what that does.
   The depthwise convolutions and the squeeze-excitation cost the width once, not squared,
   which pulls the factor below the rule's.
2. At equal cost: a narrowed, small-input EfficientNet-B0 (the baseline) made about twice as
   costly (the compound φ = 1 network's MACs) by depth alone, width alone, resolution alone
   and all three by the rule (φ = 1). Each single multiplier is found by counting: the
   value whose network's MACs are nearest the compound one's (depth and width round to
   whole repeats and multiples of 8 channels, so "equal" is to within a few per cent,
   shown). The image sides are below Fashion-MNIST's 28 px at the base: resolution scaling
   then reveals detail the base never saw, as a larger ImageNet crop does, rather than
   interpolating pixels that are not there. Trained under one recipe, several seeds; each
   single-dimension network is compared with the compound one by the paired test
   (`variants.compare_variants`, Holm over the three). The claim holds when compound is
   significantly more accurate than all three, does not hold when any one is
   significantly more accurate than compound, and is inconclusive otherwise (ties).

The verdict of the experiment joins the parts (`separable.join`): it holds when every part
holds, does not when any does not, and is inconclusive otherwise.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.analysis import model_costs, profile
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.separable import join
from archlab.experiments.training import by_label, seeds_for, train_at_sizes
from archlab.experiments.variants import (Variant, compare_variants, cost_accuracy_figure,
                                          variant_table)
from archlab.models.efficientnet import ALPHA, BETA, GAMMA, EFFICIENTNET_COEFFS

PHIS = tuple(range(8))
FACTOR_TOLERANCE = 0.1                  # "≈ 2": a growth factor per step within 10% of 2
# Table 2: FLOPs (in the paper's sense, multiply-adds) of B0..B7, in billions.
PAPER_FLOPS = (0.39, 0.70, 1.0, 1.8, 4.2, 9.9, 19, 37)
# Table 2 / Figure 3: ImageNet top-1 % of B0..B7, for the page.
PAPER_TOP1 = (77.1, 79.1, 80.1, 81.6, 82.9, 83.6, 84.0, 84.3)
LABELS = ("compound", "depth", "width", "resolution", "b0")

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: B0 at a quarter width, 20 px (28 px ≈ 20·√2)
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.05,
                 "test_fraction": 0.2},
        "recipe": {"epochs": 2, "batch_size": 64},
        "width": 0.25, "side": 20, "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: B0 at full width on CIFAR-10, 23 px base (32 px ≈ 23·√2)
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128},
        "width": 1.0, "side": 23, "seeds": 3, "jobs": 1,
    },
}
# One-cycle SGD, no augmentation, no dropout or stochastic depth: a short run barely
# overfits, and regularisation would only slow the deeper networks more than the others.
RECIPE = {"optimizer": "sgd", "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-5,
          "small_input": True, "threads": 1}
NO_DROP = {"drop_rate": 0.0, "drop_path_rate": 0.0}


# -- part 1: B0..B7 and the rule ----------------------------------------------------------------


def b_series_costs() -> list[dict[str, Any]]:
    """B0..B7 as released, each at its own resolution: MACs and the coefficients."""
    rows = []
    for i, (w, d, r, _) in enumerate(EFFICIENTNET_COEFFS):
        # model_costs: profile's count at the card's side, kept in the user's cache.
        params, macs = model_costs(f"efficientnet_b{i}")
        rows.append({"phi": i, "width": w, "depth": d, "side": r, "macs": macs,
                     "params": params})
    return rows


def custom_costs(phis: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """`efficientnet_custom` at each φ (default PHIS), costed at its card's side
    (224·1.15^φ, to 8 px)."""
    rows = []
    for phi in PHIS if phis is None else phis:
        p = profile("efficientnet_custom", phi=phi)
        rows.append({"phi": phi, "width": BETA ** phi, "depth": ALPHA ** phi,
                     "side": p.input_size[-1], "macs": p.macs, "params": p.params})
    return rows


def growth_factor(phis: Sequence[float], macs: Sequence[float]) -> float:
    """The cost's factor per step of φ: 2^slope of log₂(MACs / MACs at φ = 0) on φ, least
    squares through φ = 0."""
    x = np.asarray(phis, float)
    y = np.log2(np.asarray(macs, float) / macs[0])
    return float(2 ** ((x @ y) / (x @ x)))


# -- part 2: equal cost -------------------------------------------------------------------------


def quick_macs(width: float, depth: float, side: int) -> int:
    """MACs of the small-input B0 variant trained here (1 channel, 10 classes)."""
    return profile("efficientnet_b0", side, in_chans=1, num_classes=10, small_input=True,
                   width=width, depth=depth).macs


def nearest(target: int, values: Sequence[Any], cost: Callable[[Any], int]) -> tuple[Any, int]:
    """The value of `values` (in order of non-decreasing cost, as a multiplier's cost is)
    whose cost is nearest `target`, found by bisection: a few counts, not one per value."""
    counted: dict[int, int] = {}

    def at(i: int) -> int:
        if i not in counted:
            counted[i] = cost(values[i])
        return counted[i]

    lo, hi = 0, len(values) - 1
    if at(hi) < target:
        raise ValueError(f"even {values[hi]} costs {at(hi):,}, below the target {target:,}: "
                         "extend the values searched")
    while lo < hi:                       # the first value that costs the target or more
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if at(mid) >= target else (mid + 1, hi)
    best = min((i for i in (lo - 1, lo) if i >= 0), key=lambda i: abs(at(i) - target))
    return values[best], at(best)


def equal_cost_variants(scale: str) -> dict[str, dict[str, Any]]:
    """{label: {width, depth, side, macs}}: the baseline, compound φ = 1, and each single
    multiplier whose MACs are nearest the compound network's."""
    s = SETTINGS[scale]
    w0, side0 = s["width"], s["side"]
    compound = {"width": w0 * BETA, "depth": ALPHA, "side": round(side0 * GAMMA)}
    target = quick_macs(**compound)
    steps = [round(1 + 0.01 * i, 2) for i in range(1, 201)]   # 1.01 ... 3.00
    d, d_macs = nearest(target, steps, lambda m: quick_macs(w0, m, side0))
    w, w_macs = nearest(target, steps, lambda m: quick_macs(w0 * m, 1.0, side0))
    r, r_macs = nearest(target, list(range(side0 + 1, 2 * side0 + 1)),
                        lambda x: quick_macs(w0, 1.0, x))
    return {
        "compound": {**compound, "macs": target, "multiplier": "φ = 1"},
        "depth": {"width": w0, "depth": d, "side": side0, "macs": d_macs,
                  "multiplier": f"d = {d:g}"},
        "width": {"width": w0 * w, "depth": 1.0, "side": side0, "macs": w_macs,
                  "multiplier": f"w = {w:g}"},
        "resolution": {"width": w0, "depth": 1.0, "side": r, "macs": r_macs,
                       "multiplier": f"r = {r / side0:.3g} ({r} px)"},
        "b0": {"width": w0, "depth": 1.0, "side": side0, "macs": quick_macs(w0, 1.0, side0),
               "multiplier": "φ = 0"},
    }


def protocol(scale: str, seeds: Sequence[int], variants: dict[str, dict[str, Any]]
             ) -> dict[str, Any]:
    """The study: the narrowed B0 and its four ways to twice the cost (`variants`)."""
    s = SETTINGS[scale]
    return {
        "description": "EfficientNet-B0 scaled to about twice its cost by depth, width, "
                       "resolution or all three (1905.11946, Figure 3).",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": [{"name": "efficientnet_b0", "label": label, "model_kwargs": {
            "width": variants[label]["width"], "depth": variants[label]["depth"], **NO_DROP}}
            for label in LABELS]}


# -- the verdict --------------------------------------------------------------------------------


def decide_growth(what: str, rows: Sequence[dict[str, Any]]) -> tuple[str, str]:
    f = growth_factor([r["phi"] for r in rows], [r["macs"] for r in rows])
    last = rows[-1]
    words = (f"{f:.2f}x per step of φ; φ = {last['phi']:g} costs "
             f"{last['macs'] / rows[0]['macs']:.1f}x {what}'s φ = 0, 2^φ = {2 ** last['phi']:g}")
    return (HOLDS if abs(f - 2) <= 2 * FACTOR_TOLERANCE else DOES_NOT_HOLD), words


def decide_equal_cost(accuracy: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """`accuracy`: {single label: difference of it against compound (delta, low, high, p,
    significant)}."""
    words = ", ".join(f"{label} {100 * d['delta']:+.2f} [{100 * d['low']:+.2f}, "
                      f"{100 * d['high']:+.2f}]" for label, d in accuracy.items())
    words = "against compound, points: " + words
    better = [x for x, d in accuracy.items() if d["significant"] and d["delta"] > 0]
    if better:
        return DOES_NOT_HOLD, words + f"; {', '.join(better)} significantly more accurate"
    if all(d["significant"] and d["delta"] < 0 for d in accuracy.values()):
        return HOLDS, words + "; compound significantly more accurate than each"
    return INCONCLUSIVE, words + "; not all differences significant"


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the counted costs and the paired tests at equal cost: the verdict on "each step
    of φ doubles the cost, and at equal cost compound scaling is the most accurate"."""
    return join({"B0-B7 cost": decide_growth("B0", numbers["b_series"]),
                 "rule's cost": decide_growth("the rule", numbers["custom"]),
                 "equal cost": decide_equal_cost(numbers["accuracy"])})


# -- the experiment -----------------------------------------------------------------------------


class CompoundScaling(Experiment):
    name = "compound-scaling"
    claim = ("Scaling depth, width and resolution together by α^φ, β^φ, γ^φ (α·β²·γ² ≈ 2) "
             "doubles the cost per step of φ, and at equal cost is more accurate than scaling "
             "any one of them alone.")
    source = ("EfficientNet (Tan and Le, ICML 2019, 1905.11946), section 3.3, equation 3, "
              "Table 2 and Figure 3")
    paper = ("B0..B7: 0.39, 0.70, 1.0, 1.8, 4.2, 9.9, 19, 37 B FLOPs (≈ 2^φ); at equal FLOPs "
             "compound scaling is up to 2.5 points more accurate than one dimension alone "
             "(Figure 3, Table 3)")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        b_series, custom = b_series_costs(), custom_costs()
        configs = equal_cost_variants(ctx.scale)
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_at_sizes(self.name, protocol(ctx.scale, seeds, configs),
                                       {x: configs[x]["side"] for x in LABELS}, ctx))
        # The decisive family: the three single dimensions against compound (Holm over 3);
        # the unscaled B0 is shown beside them, tested on its own.
        singles = compare_variants({x: runs[x] for x in LABELS[:4]}, "compound")
        b0 = compare_variants({x: runs[x] for x in ("compound", "b0")}, "compound")["b0"]
        variants = {**singles, "b0": b0}
        numbers = {
            "b_series": b_series, "custom": custom, "configs": configs,
            "seeds": [r.seed for r in runs["compound"]],
            "top1": {x: list(v.top1) for x, v in variants.items()},
            "accuracy": {x: _difference(singles[x]) for x in LABELS[1:4]},
            "b0_vs_compound": _difference(b0)}
        verdict, because = decide(numbers)
        base = configs["b0"]["macs"]
        names = {x: f"{x} ({c['multiplier']}, {c['side']} px, {c['macs'] / base:.2f}x B0's "
                    "MACs)" for x, c in configs.items()}
        headers, rows = variant_table(variants, names)
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Cost against φ", _growth_figure(b_series, custom),
                    "MACs (log scale) of B0..B7 at their own resolutions (filled), the paper's "
                    "Table 2 FLOPs (crosses) and the rule applied exactly, efficientnet_custom "
                    "at 224·1.15^φ px (open), on the line B0·2^φ (solid) and the rule's "
                    "B0·(α·β²·γ²)^φ = B0·1.92^φ (dashed)."),
             Figure("Equal cost: one dimension against all three",
                    cost_accuracy_figure(variants, "test top-1 against MACs", "compound-acc"),
                    "Each network's test top-1 (mean over seeds, 95% interval) at its MACs; "
                    "the four scaled ones cost about twice the baseline (b0).")],
            numbers=numbers, notes=_notes(b_series, custom, configs))


def _difference(v: Variant) -> dict[str, Any]:
    d = v.vs_baseline
    return {"delta": d.delta, "low": d.ci.low, "high": d.ci.high, "p": d.p_adjusted,
            "significant": bool(d.significant)}


def _notes(b_series: list[dict], custom: list[dict], configs: dict) -> list[str]:
    b0 = b_series[0]["macs"]
    return [
        "B0..B7 as released, multiply-adds (billions): " + ", ".join(
            f"B{r['phi']} {r['macs'] / 1e9:.2f} at {r['side']} px (paper {p:g}; "
            f"{r['macs'] / b0:.1f}x B0, 2^φ = {2 ** r['phi']})"
            for r, p in zip(b_series, PAPER_FLOPS)) + ".",
        "The rule applied exactly (efficientnet_custom, costed at its own side): " + ", ".join(
            f"φ = {r['phi']:g}: {r['side']} px, {r['macs'] / 1e9:.2f} B, "
            f"{r['macs'] / custom[0]['macs']:.2f}x" for r in custom) + ".",
        f"The rule's own factor per step: α·β²·γ² = {ALPHA * BETA ** 2 * GAMMA ** 2:.3f}. "
        "The channels round to multiples of 8 and the repeats round up (ceil), so a small φ "
        "costs more than the rule says; the depthwise convolutions and squeeze-excitation "
        "grow with the width, not its square, which costs less.",
        "Equal cost, the multipliers found by counting: " + ", ".join(
            f"{x}: width {c['width']:.3g}, depth {c['depth']:.3g}, {c['side']} px, "
            f"{c['macs'] / 1e6:.2f} M MACs" for x, c in configs.items()) + ".",
    ]


def _growth_figure(b_series: list[dict], custom: list[dict]) -> str:
    fig = figure(6.5, 4.0, layout="constrained")
    ax = fig.subplots()
    b0 = b_series[0]["macs"] / 1e9
    phi = np.linspace(0, len(PAPER_FLOPS) - 1, 50)
    ax.plot(phi, b0 * 2 ** phi, "k-", lw=1, label="B0·2^φ")
    ax.plot(phi, b0 * (ALPHA * BETA ** 2 * GAMMA ** 2) ** phi, "k--", lw=1,
            label="B0·(α·β²·γ²)^φ")
    ax.plot([r["phi"] for r in b_series], [r["macs"] / 1e9 for r in b_series], "o",
            color="tab:blue", label="B0..B7 (released)")
    ax.plot(range(len(PAPER_FLOPS)), PAPER_FLOPS, "x", color="tab:red", label="paper, Table 2")
    ax.plot([r["phi"] for r in custom], [r["macs"] / 1e9 for r in custom], "o", mfc="none",
            ms=9, color="tab:green", label="rule exactly (custom φ)")
    for r in b_series:
        ax.annotate(f"B{r['phi']}", (r["phi"], r["macs"] / 1e9), textcoords="offset points",
                    xytext=(-14, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("compound coefficient φ")
    ax.set_ylabel("billion multiply-adds")
    ax.legend(fontsize=8)
    return to_svg(fig, "compound-growth")


__all__ = ["CompoundScaling", "b_series_costs", "custom_costs", "decide", "decide_equal_cost",
           "equal_cost_variants", "growth_factor", "nearest", "protocol", "quick_macs"]
