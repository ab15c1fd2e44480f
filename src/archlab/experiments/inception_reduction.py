"""`inception-reduction`: why GoogLeNet's Inception module has 1×1 convolutions (Szegedy et
al., 1409.4842, section 4 and Figure 2).

The Inception module looks at its input through 1×1, 3×3 and 5×5 convolutions and a 3×3 max
pooling side by side and concatenates what they find. Built naively (Figure 2a) it is
ruinous, for two reasons the paper names. The 3×3 and 5×5 filters read every input channel:
a 5×5 convolution with 32 filters on a 28×28×192 input costs 28·28·32·25·192 = 120M
multiply-adds, the course's example. And the pooling branch passes all of its input
channels through, so the concatenation only grows: stack naive modules and "an inevitable
increase in the number of outputs from stage to stage" follows (192 channels into
inception (3a) become 4,944 out of (5b)). The fix (Figure 2b): a 1×1 convolution before the
3×3 and the 5×5 shrinks the channels they read (16 of them cut the example to
28·28·(192·16 + 25·16·32) = 12.4M), and one after the pooling sets its width. The paper's
argument for them is economic: the reductions let it "increase the number of units at each
stage significantly without an uncontrolled blow-up in computational complexity", for a
network of 1.5 billion multiply-adds.

Measured, the costs exactly: the course's example, every module of Table 1 on its input
(the module built with and without reductions, `models.inception.InceptionModule`,
counted by `analysis.profile` and checked against the hand formulas: reduced
HW·(in·(c1 + r3 + r5 + pp) + 9·r3·c3 + 25·r5·c5), naive HW·in·(c1 + 9·c3 + 25·c5)), and the
whole GoogLeNet of the paper (true 5×5 branches) at 224 px with both kinds of module
(`reduce=False`, whose channels grow as above).

Measured, the accuracy: a narrow small-input GoogLeNet (`width`, Fashion-MNIST at 28 px)
with reductions, the same network with naive modules (several times dearer), and a naive
network narrowed until its MACs match the reduced one's (the width found by bisection on
the profiled cost): the question the paper answers is the last one, what a fixed budget buys.
All three train under one recipe with several seeds and are compared on the same test
images with `variants.compare_variants` (McNemar over seeds and images, Holm over the two
comparisons, the paired bootstrap interval).

The verdict. The cost part is exact: a count that differs from its hand formula fails the
claim. Then accuracy at equal cost decides: the claim holds when the reduced network beats
the naive one of the same cost, does not hold when the naive one wins, and is inconclusive
on a tie. The naive network at the same width is reported beside it: what the extra
multiply-adds buy, if anything.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from archlab._plot import figure, to_svg
from archlab._text import human
from archlab.analysis.profile import profile
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, seeds_for, train_study
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants,
                                          cost_accuracy_figure, delta_text, top1_text)
from archlab.models import create_model
from archlab.models.inception import GOOGLENET_TABLE, InceptionModule

PAPER_MACS = 1.5e9              # "a computational budget of 1.5 billion multiply-adds"
REDUCED, NAIVE, NARROW = "reduced", "naive", "naive, equal cost"
NAMES = {REDUCED: "with 1×1 reductions (Figure 2b)", NAIVE: "naive (Figure 2a), same width",
         NARROW: "naive, narrowed to the reduced net's MACs"}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: an eighth of GoogLeNet's width, a tenth of the data
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.1,
                 "test_fraction": 0.3},
        "recipe": {"epochs": 2, "batch_size": 64},
        "image": (1, 28), "width": 0.125, "seeds": 3, "jobs": 2,
    },
    "full": {    # a GPU: CIFAR-10 at 32 px, the full-width network
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 30, "batch_size": 128},
        "image": (3, 32), "width": 1.0, "seeds": 3, "jobs": 1,
    },
}
RECIPE = {"optimizer": "sgd", "lr": 0.1, "threads": 1, "channels_last": True}
# The module sizes at 224 px: the 28×28, 14×14 and 7×7 groups of Table 1.
GRID = {"3": 28, "4": 14, "5": 7}


def hand_costs(in_chs: int, size: int, widths: Sequence[int], reduce: bool,
               k5: int = 5) -> dict[str, int]:
    """A module's weights (with biases), MACs and output channels, from Table 1's widths."""
    c1, r3, c3, r5, c5, pp = widths
    if reduce:
        weights = in_chs * (c1 + r3 + r5 + pp) + 9 * r3 * c3 + k5 * k5 * r5 * c5
        biases, out = c1 + r3 + c3 + r5 + c5 + pp, c1 + c3 + c5 + pp
    else:
        weights = in_chs * (c1 + 9 * c3 + k5 * k5 * c5)
        biases, out = c1 + c3 + c5, c1 + c3 + c5 + in_chs
    return {"params": weights + biases, "macs": weights * size * size, "out_chs": out}


def module_costs(in_chs: int, size: int, widths: Sequence[int], reduce: bool,
                 k5: int = 5) -> dict[str, int]:
    """The same, measured: the paper's module (biases, no batch norm) built and profiled."""
    with torch.device("meta"):
        module = InceptionModule(in_chs, *widths, kernel_5x5=k5, norm=False, reduce=reduce)
    p = profile(module, size, in_chans=in_chs)
    return {"params": p.params, "macs": p.macs, "out_chs": p.output_shape[1]}


def modules() -> list[dict[str, Any]]:
    """Every module of Table 1 on the input the reduced network gives it, both ways."""
    rows, chs = [], 192
    for name, widths in GOOGLENET_TABLE:
        if widths is None:
            continue
        size = GRID[name[len("inception")]]
        row: dict[str, Any] = {"module": name, "in_chs": chs, "size": size}
        for kind, reduce in ((REDUCED, True), (NAIVE, False)):
            row[kind] = module_costs(chs, size, widths, reduce)
            row[f"{kind} by hand"] = hand_costs(chs, size, widths, reduce)
        rows.append(row)
        chs = row[REDUCED]["out_chs"]
    return rows


def example() -> dict[str, int]:
    """The course's example: 32 5×5 filters on 28×28×192, without and with 16 1×1 first."""
    with torch.device("meta"):
        naive = nn.Conv2d(192, 32, 5, padding=2, bias=False)
        reduced = nn.Sequential(nn.Conv2d(192, 16, 1, bias=False),
                                nn.Conv2d(16, 32, 5, padding=2, bias=False))
    return {"naive": profile(naive, 28, in_chans=192).macs,
            "reduced": profile(reduced, 28, in_chans=192).macs,
            "naive by hand": 28 * 28 * 32 * 25 * 192,
            "reduced by hand": 28 * 28 * (192 * 16 + 25 * 16 * 32)}


def network() -> dict[str, Any]:
    """The paper's GoogLeNet (true 5×5 branches, no auxiliary heads) at 224 px, with
    reductions and with naive modules: parameters, MACs, and MACs per module."""
    out = {}
    for kind, reduce in ((REDUCED, True), (NAIVE, False)):
        with torch.device("meta"):
            model = create_model("googlenet_paper", aux_logits=False, reduce=reduce)
        p = profile(model, 224, table_depth=1)
        out[kind] = {"params": p.params, "macs": p.macs, "out_chs": model.num_features,
                     "modules": {r.name: r.macs for r in p.layers
                                 if r.name.startswith("inception")}}
    return out


def _net_macs(scale: str, **kwargs: Any) -> int:
    in_chans, size = SETTINGS[scale]["image"]
    with torch.device("meta"):
        model = create_model("googlenet", num_classes=10, in_chans=in_chans, small_input=True,
                             **kwargs)
    return profile(model, size).macs


def equal_cost_width(scale: str) -> float:
    """The width (to 3 decimals) at which a naive small-input GoogLeNet costs the reduced
    one's MACs, or just under: bisection on the profiled cost."""
    target = _net_macs(scale, width=SETTINGS[scale]["width"])
    low, high = 0.001, SETTINGS[scale]["width"]
    while high - low > 0.001:
        mid = round((low + high) / 2, 4)
        if _net_macs(scale, width=mid, reduce=False) <= target:
            low = mid
        else:
            high = mid
    return round(low, 3)


def protocol(scale: str, seeds: Sequence[int], narrow_width: float) -> dict[str, Any]:
    """The study: the narrow GoogLeNet with reductions, with naive modules, and naive at
    `narrow_width` (equal_cost_width)."""
    s = SETTINGS[scale]
    kwargs = {REDUCED: {"width": s["width"]}, NAIVE: {"width": s["width"], "reduce": False},
              NARROW: {"width": narrow_width, "reduce": False}}
    return {
        "description": "GoogLeNet with and without the Inception module's 1×1 reductions, "
                       "and naive at the reduced network's cost (1409.4842, Figure 2).",
        "data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none", "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 64, "throughput_seconds": 0.2},
        # The dearest first, so that it does not start last beside an idle worker.
        "models": [{"name": "googlenet", "label": label, "model_kwargs": kwargs[label]}
                   for label in (NAIVE, REDUCED, NARROW)],
    }


def cost_mismatches(numbers: dict[str, Any]) -> list[str]:
    """Every measured count that differs from its hand formula."""
    bad = []
    for row in numbers["modules"]:
        for kind in (REDUCED, NAIVE):
            for key, value in row[kind].items():
                if value != row[f"{kind} by hand"][key]:
                    bad.append(f"{row['module']} {kind}: {key} {value}, by hand "
                               f"{row[f'{kind} by hand'][key]}")
    ex = numbers["example"]
    for kind in ("naive", "reduced"):
        if ex[kind] != ex[f"{kind} by hand"]:
            bad.append(f"the 5×5 example {kind}: {ex[kind]} MACs, by hand "
                       f"{ex[f'{kind} by hand']}")
    return bad


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the costs (`modules`, `example`, `network`) and the trained variants against the
    reduced network (`accuracy`, as variants.as_numbers gives them): the verdict on "1×1
    reductions make the Inception module affordable, and buy more accuracy per MAC"."""
    bad = cost_mismatches(numbers)
    if bad:
        return DOES_NOT_HOLD, "a cost differs from its hand formula: " + "; ".join(bad)
    first, net, acc = numbers["modules"][0], numbers["network"], numbers["accuracy"]
    words = [f"inception (3a) costs {human(first[NAIVE]['macs'])} MACs naive against "
             f"{human(first[REDUCED]['macs'])} with reductions "
             f"({first[NAIVE]['macs'] / first[REDUCED]['macs']:.1f}×), the whole GoogLeNet "
             f"{human(net[NAIVE]['macs'])} against {human(net[REDUCED]['macs'])} "
             f"({net[NAIVE]['macs'] / net[REDUCED]['macs']:.1f}×)"]
    for label in (NARROW, NAIVE):
        v = acc[label]
        which = "at equal cost" if label == NARROW else "of the same width"
        words.append(f"the naive network {which} ({v['macs'] / acc[REDUCED]['macs']:.2f}× the "
                     f"MACs) is {AGAINST[v['outcome']]} the reduced one ({delta_text(v)})")
    because = "; ".join(words)
    outcome = acc[NARROW]["outcome"]
    if outcome == "worse":
        return HOLDS, because
    if outcome == "better":
        return DOES_NOT_HOLD, because + ": at equal cost the naive modules did better"
    return INCONCLUSIVE, because + ": at equal cost the two cannot be told apart"


class InceptionReduction(Experiment):
    name = "inception-reduction"
    claim = ("1×1 convolutions before the 3×3 and 5×5 (and after the pooling) make the "
             "Inception module affordable: a fraction of the naive module's cost, and more "
             "accuracy for the same multiply-adds.")
    source = "GoogLeNet (Szegedy et al., 1409.4842), section 4 and Figure 2"
    paper = ("5×5×32 on 28×28×192: 120M MACs naive, 12.4M with a 16-channel 1×1 first (the "
             "course); the whole network 1.5 billion multiply-adds")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        width = equal_cost_width(ctx.scale)
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds, width), ctx))
        variants = compare_variants(runs, REDUCED)
        numbers = {"modules": modules(), "example": example(), "network": network(),
                   "accuracy": as_numbers(variants), "narrow_width": width,
                   "width": SETTINGS[ctx.scale]["width"],
                   "seeds": [r.seed for r in runs[REDUCED]]}
        verdict, because = decide(numbers)
        return Outcome(
            verdict, because,
            ["", "with 1×1 reductions", "naive", "naive / reduced", "by hand"],
            _rows(numbers),
            [Figure("Multiply-adds per Inception module at 224 px", _module_figure(numbers),
                    "Each module of Table 1: with reductions (Figure 2b), naive on the same "
                    "input (Figure 2a), and naive inside a naive network, whose pooling "
                    "branches have passed every channel on from module to module."),
             Figure("Accuracy against cost, the networks trained",
                    cost_accuracy_figure(variants, "GoogLeNet at 28 px",
                                         "inception-reduction-acc"),
                    "Test top-1 (mean over seeds, 95% interval) against MACs per image; the "
                    "black point is the network with reductions.")],
            numbers=numbers,
            notes=["Module and network costs are the paper's form: true 5×5 branches, "
                   "biases, no batch norm (which adds no MACs the counter sees). The trained "
                   "networks are torchvision's form (batch norm, 3×3 in place of the 5×5).",
                   f"The naive network at equal cost has width {width} against "
                   f"{numbers['width']} for the other two."])


def _rows(numbers: dict[str, Any]) -> list[list[str]]:
    ex, first, net = numbers["example"], numbers["modules"][0], numbers["network"]
    r, n = first[REDUCED], first[NAIVE]
    rows = [
        ["the course's example: 32 5×5 filters on 28×28×192, MACs",
         human(ex["reduced"]), human(ex["naive"]), f"{ex['naive'] / ex['reduced']:.1f}×",
         f"28²·(192·16 + 25·16·32) = {ex['reduced by hand']:,} / 28²·25·192·32 = "
         f"{ex['naive by hand']:,}"],
        ["inception (3a) on 28×28×192: parameters", human(r["params"]), human(n["params"]),
         f"{n['params'] / r['params']:.2f}×",
         f"{first[REDUCED + ' by hand']['params']:,} / {first[NAIVE + ' by hand']['params']:,}"],
        ["inception (3a): MACs", human(r["macs"]), human(n["macs"]),
         f"{n['macs'] / r['macs']:.2f}×",
         f"{first[REDUCED + ' by hand']['macs']:,} / {first[NAIVE + ' by hand']['macs']:,}"],
        ["inception (3a): output channels", str(r["out_chs"]), str(n["out_chs"]), "-",
         "64+128+32+32 / 64+128+32+192"],
        ["GoogLeNet at 224 px: parameters", human(net[REDUCED]["params"]),
         human(net[NAIVE]["params"]),
         f"{net[NAIVE]['params'] / net[REDUCED]['params']:.1f}×", "-"],
        ["GoogLeNet at 224 px: MACs", human(net[REDUCED]["macs"]), human(net[NAIVE]["macs"]),
         f"{net[NAIVE]['macs'] / net[REDUCED]['macs']:.1f}×", "paper: 1.5G with reductions"],
        ["GoogLeNet: channels out of inception (5b)", str(net[REDUCED]["out_chs"]),
         str(net[NAIVE]["out_chs"]), "-", "-"],
    ]
    acc = numbers["accuracy"]
    base = acc[REDUCED]
    for label, width in ((NAIVE, numbers["width"]), (NARROW, numbers["narrow_width"])):
        v = acc[label]
        rows += [
            [f"trained, {NAMES[label]} (width {width}): params / MACs",
             f"{human(base['params'])} / {human(base['macs'])}",
             f"{human(v['params'])} / {human(v['macs'])}",
             f"{v['params'] / base['params']:.2f}× / {v['macs'] / base['macs']:.2f}×", "-"],
            [f"trained, {NAMES[label]}: test top-1 % [95% interval]", top1_text(base),
             top1_text(v), "Δ " + delta_text(v), f"naive {v['outcome']}"],
        ]
    return rows


def _module_figure(numbers: dict[str, Any]) -> str:
    rows, net = numbers["modules"], numbers["network"]
    names = [r["module"][len("inception"):] for r in rows]
    bars = [("with reductions", [r[REDUCED]["macs"] for r in rows], "tab:blue"),
            ("naive, same input", [r[NAIVE]["macs"] for r in rows], "tab:orange"),
            ("naive, in a naive network", [net[NAIVE]["modules"][r["module"]] for r in rows],
             "tab:red")]
    fig = figure(7.5, 3.4, layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    for i, (label, values, colour) in enumerate(bars):
        ax.bar(x + (i - 1) * 0.27, np.asarray(values) / 1e6, 0.27, label=label, color=colour)
    ax.set_xticks(x, names)
    ax.set_xlabel("Inception module (Table 1)")
    ax.set_ylabel("million MACs")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return to_svg(fig, "inception-reduction-modules")


__all__ = ["InceptionReduction", "decide", "equal_cost_width", "example", "hand_costs",
           "module_costs", "modules", "network", "protocol"]
