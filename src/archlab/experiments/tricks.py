"""`tricks`: ResNet-B, -C and -D and the zero-initialised last batch norm (He, Zhang, Zhang,
Zhang, Xie and Li, "Bag of Tricks for Image Classification with Convolutional Neural
Networks", CVPR 2019, arXiv 1812.01187: section 4, Table 5, and section 3.1's zero γ).

Three small repairs to ResNet-50, each aimed at a place where the original throws information
away or spends computation badly:

- ResNet-B. A downsampling bottleneck of the original strides its first 1x1 convolution,
  which therefore reads one pixel in four and ignores the rest; B moves the stride to the
  3x3, which sees every pixel (the 1x1 now runs at the input's resolution: more MACs).
- ResNet-C. The stem's 7x7 convolution costs five times a 3x3 one; C replaces it by three
  3x3 convolutions (32, 32, 64 channels), the first with the stride.
- ResNet-D. In the downsampling block the projection shortcut is also a strided 1x1, again
  reading a quarter of its input; D puts a 2x2 average pool before it, so that the shortcut
  sees every pixel, for almost no computation.
- Zero γ. The last batch norm of every block starts with γ = 0, so each block starts as the
  identity: the network starts shallow, easier to train at first.

Table 5 (cumulative, ImageNet, 120 epochs): ResNet-50 76.21% top-1 at 3.9 GFLOPs (the
paper's FLOPs are multiply-adds), ResNet-50-B 76.66% at 4.1, -C 76.87% at 4.3, -D 77.16% at
4.3, every one with 25 million parameters: +0.95 points for about 10% more computation.
Zero γ is one of the efficient-training heuristics of Table 4, where it adds a few tenths
of a point.

Measured. Cost is computed, not trained: the parameters and MACs of the registered
ResNet-50, -B, -C and -D at 224 px (their ImageNet form; counted on the meta device), beside
Table 5. Accuracy is trained: at quick scale the small bottleneck ResNet of
`resnet_variants` (three stages of one block; Fashion-MNIST, 28 px) as the original
(stride on the first 1x1), with B, B+C and B+C+D as Table 5 stacks them, and the original
with zero γ; each variant against the original on the same seeds and test images
(McNemar's test and the paired bootstrap, Holm over the four).

What the tweaks mean at quick scale (the experiment checks that each changes the network):
B and D act on the two downsampling blocks (stages 2 and 3), as in ResNet-50. C is not the
paper's trade: the small-input stem is already a single 3x3 stride-1 convolution, not a
7x7, so C turns it into three 3x3 convolutions (8, 8 and 16 channels), a deeper stem (its
view grows from 3 to 7 pixels) that costs more MACs, at 28 px where every pixel is still
there, a larger share of a tiny network. That is why cost is judged at 224 px, where the
paper makes its claim.

The verdict. The claim is "better accuracy at little cost". The cost part holds when every
tweak costs at most COST_LIMIT times the original's MACs and parameters at 224 px (the
paper's own B+C+D costs about 1.12x). The accuracy part reads the paired tests: it holds
when ResNet-D (all three tweaks, the paper's last row) is better than the original and no
variant is worse; it fails when any variant is worse; ties leave it inconclusive (a tie is
not equality: these images and seeds cannot tell a few tenths of a point, the size of the
paper's steps). The claim holds when both parts hold, does not hold when either fails, and
is otherwise inconclusive.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from archlab._text import human
from archlab.experiments import resnet_variants as rv
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.variants import (as_numbers, cost_accuracy_figure, delta_text,
                                          variant_table)

BASELINE = "resnet"
FULL = "resnet-d"               # all three tweaks: the paper's last row
COST_LIMIT = 1.15               # "little cost": at most 15% more MACs or parameters at 224 px

# label -> (the flags on the scale's network, the registered ImageNet model of Table 5).
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "resnet": ({"stride_3x3": False}, "resnet50_v1"),
    "resnet-b": ({"stride_3x3": True}, "resnet50b"),
    "resnet-c": ({"stride_3x3": True, "deep_stem": True}, "resnet50c"),
    "resnet-d": ({"stride_3x3": True, "deep_stem": True, "avg_down": True}, "resnet50d"),
    "zero-gamma": ({"stride_3x3": False, "zero_init_last": True}, "resnet50_v1"),
}
NAMES = {"resnet": "ResNet (stride on the 1x1)", "resnet-b": "ResNet-B (stride on the 3x3)",
         "resnet-c": "ResNet-C (B + deep stem)", "resnet-d": "ResNet-D (C + avg-pool shortcut)",
         "zero-gamma": "ResNet + zero γ"}
# Table 5 (top-1 %, GFLOPs); zero γ is not in it.
PAPER = {"resnet": (76.21, 3.9), "resnet-b": (76.66, 4.1), "resnet-c": (76.87, 4.3),
         "resnet-d": (77.16, 4.3)}

SETTINGS = rv.settings()


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: the scale's bottleneck ResNet as the original, B, C, D and zero γ."""
    return rv.protocol(SETTINGS[scale], "ResNet against ResNet-B, -C, -D and zero-γ (Bag of "
                       "Tricks, Table 5): accuracy on one recipe.",
                       {label: flags for label, (flags, _) in VARIANTS.items()}, seeds)


def exercised(setting: dict[str, Any]) -> dict[str, int]:
    """What each tweak changes in the scale's network, counted on the built models: blocks
    whose 3x3 carries the stride (B), convolutions in the stem (C), shortcuts that average-
    pool (D), blocks whose last norm starts at zero (zero γ); for the original and the
    tweaked network each."""
    def count(flags: dict[str, Any]) -> dict[str, int]:
        net = rv.built(setting, flags)
        blocks = [b for name in net.stage_names for b in getattr(net, name)]
        return {"strided_3x3": sum(b.conv2.stride[0] > 1 for b in blocks),
                "stem_convs": sum(isinstance(m, nn.Conv2d) for m in net.conv1.modules()),
                "pooled_shortcuts": sum(isinstance(m, nn.AvgPool2d) for b in blocks
                                        if b.downsample is not None
                                        for m in b.downsample.modules()),
                "zero_gamma": sum(bool((b.bn3.weight == 0).all()) for b in blocks)}

    return {label: count(flags) for label, (flags, _) in VARIANTS.items()}


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the costs at 224 px ({"paper_costs": {label: {params, macs}}}) and the paired
    tests against the original ({"variants": {label: {outcome, delta, delta_ci, p_adjusted}}}):
    the verdict on "the tweaks improve accuracy at little cost"."""
    costs, variants = numbers["paper_costs"], numbers["variants"]
    limit = numbers.get("cost_limit", COST_LIMIT)
    base = costs[BASELINE]
    ratio = {k: (c["macs"] / base["macs"], c["params"] / base["params"])
             for k, c in costs.items() if k != BASELINE}
    cost_words = "at 224 px " + ", ".join(f"{k} costs {m:.3f}x the MACs and {p:.3f}x the "
                                          "parameters" for k, (m, p) in ratio.items())
    costly = [k for k, (m, p) in ratio.items() if max(m, p) > limit]
    tests = "; ".join(f"{k}: {v['outcome']} ({delta_text(v)})"
                      for k, v in variants.items() if v.get("delta") is not None)
    words = f"{cost_words}; against the original at this scale, {tests}"
    if costly:
        return DOES_NOT_HOLD, words + f": {', '.join(costly)} cost more than {limit:g}x"
    worse = [k for k, v in variants.items() if v["outcome"] == "worse"]
    if worse:
        return DOES_NOT_HOLD, words + f": {', '.join(worse)} less accurate than the original"
    if variants[FULL]["outcome"] == "better":
        return HOLDS, words + f": little cost, and {FULL} is more accurate"
    return INCONCLUSIVE, words + (f": little cost, but {FULL} is not told apart from the "
                                  "original, nor any variant worse")


class Tricks(Experiment):
    name = "tricks"
    claim = ("ResNet-B, -C and -D (stride on the 3x3, a deep stem, an average-pooled "
             "shortcut) and a zero-initialised last batch norm each make ResNet more "
             "accurate at little cost.")
    source = "Bag of Tricks (He et al., CVPR 2019, arXiv 1812.01187), section 4, Table 5"
    paper = ("ResNet-50 76.21% top-1 at 3.9 GFLOPs; -B 76.66% at 4.1; -C 76.87% at 4.3; "
             "-D 77.16% at 4.3 (ImageNet, 25M parameters each)")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        setting = SETTINGS[ctx.scale]
        variants, _ = rv.train_variants(self.name, SETTINGS, protocol, ctx, BASELINE)
        numbers = {"variants": as_numbers(variants), "cost_limit": COST_LIMIT,
                   "paper_costs": rv.paper_costs({k: (name, {}) for k, (_, name)
                                                  in VARIANTS.items() if k in PAPER}),
                   "exercised": exercised(setting)}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        headers += ["ResNet-50 form at 224 px: MACs (counted)", "paper: top-1 %, GFLOPs"]
        for row, label in zip(rows, variants):
            counted, paper = numbers["paper_costs"].get(label), PAPER.get(label)
            row += [human(counted["macs"]) if counted else "as ResNet",
                    f"{paper[0]:.2f}, {paper[1]}" if paper else "-"]
        paper_deltas = {k: top1 - PAPER[BASELINE][0] for k, (top1, _) in PAPER.items()}
        return Outcome(
            verdict, because, headers, rows,
            [Figure("The tweaks' gain in top-1: the paper's beside ours", rv.paper_beside_ours(
                paper_deltas, numbers["variants"], NAMES, "Difference with the original ResNet",
                "tricks-delta"),
                "Grey bars: Table 5's gain over ResNet-50 on ImageNet (cumulative: C includes "
                "B, D includes C). Blue: ours at this scale, mean over seeds, with the paired "
                "bootstrap 95% interval. The paper's steps are a few tenths of a point."),
             Figure("Accuracy against cost at this scale", cost_accuracy_figure(
                 variants, "Test top-1 against MACs", "tricks-cost"),
                 "Each variant's mean test top-1 (95% interval over seeds) against its MACs "
                 "per image at this scale, where the deep stem weighs more than at 224 px.")],
            numbers=numbers, notes=_notes(numbers, setting))


def _notes(numbers: dict[str, Any], setting: dict[str, Any]) -> list[str]:
    ex = numbers["exercised"]
    base, quick, at_224 = ex[BASELINE], numbers["variants"], numbers["paper_costs"]
    stem = ex["resnet-c"]["stem_convs"]
    return [
        "What each tweak changes here, counted on the built networks: the stride sits on "
        f"the 3x3 in {ex['resnet-b']['strided_3x3']} blocks with B (in "
        f"{base['strided_3x3']} without); the stem has {stem} convolutions with C (one "
        f"without); {ex['resnet-d']['pooled_shortcuts']} shortcuts average-pool with D; "
        f"{ex['zero-gamma']['zero_gamma']} blocks start with γ = 0 with zero γ.",
        "At this scale the stem is the small-input one, a 3x3 stride-1 convolution, so C "
        "deepens it rather than replacing a 7x7: its MACs here are "
        f"{quick['resnet-c']['macs'] / quick[BASELINE]['macs']:.2f}x the original's, "
        f"against {at_224['resnet-c']['macs'] / at_224[BASELINE]['macs']:.2f}x at 224 px.",
        "Costs at 224 px are the registered ImageNet networks (1000 classes) counted by "
        "torch's flop counter, multiply-accumulates; the average pool of D and the "
        "additions of the shortcuts are not counted, as in the paper's GFLOPs.",
        f"The network at this scale: {setting['net']} (layers per stage, widths, stem "
        f"width), {setting['image_size']} px, bottleneck blocks, small-input stem.",
    ]


__all__ = ["Tricks", "decide", "exercised", "protocol"]
