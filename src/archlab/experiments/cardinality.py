"""`cardinality`: at equal cost, more groups beat more width or more depth (Xie, Girshick,
Dollár, Tu and He, "Aggregated Residual Transformations for Deep Neural Networks", CVPR
2017, arXiv 1611.05431: Tables 3 and 4).

ResNeXt splits the 3x3 convolution of the bottleneck into C parallel groups (its
"cardinality"), each seeing only its own d channels. A grouped convolution costs 1/C of a
full one of the same width, so at the same cost the block can be wider: ResNet-50's
bottleneck is 1x64d (one group of 64 channels at the first stage), ResNeXt-50's is 32x4d
(32 groups of 4: 128 channels) for about the same 4.1 GFLOPs. The paper's argument is that
cardinality is a dimension of its own, worth more than the two usual ones:

- Table 3, at equal cost: ResNet-50 (1x64d) 23.9% top-1 error, ResNeXt-50 (32x4d) 22.2%;
  ResNet-101 22.0%, ResNeXt-101 (32x4d) 21.2% (ImageNet, 224 px).
- Table 4, doubling ResNet-101's cost three ways: deeper (ResNet-200) 21.7%, wider
  (ResNet-101 1x100d) 21.3%, more groups (ResNeXt-101 2x64d) 20.7%, or 64x4d 20.4%.

Measured at quick scale, on the small bottleneck ResNet of `resnet_variants`, whose blocks
are 1x8d (its first stage is 8 channels wide). Every other network is built to a cost by
computation, its MACs counted on the meta device (they are in the table):

- `resnext`: at the baseline's cost (Table 3): for each cardinality C, the per-group width d
  whose MACs come closest to the baseline's; the most groups within TOLERANCE of it.
- `resnext-2x`: at twice the baseline's cost (Table 4's ResNeXt), chosen the same way.
- `wider`: one group, the width d whose MACs come closest to `resnext-2x`'s.
- `deeper`: one block at a time added to the stage with the fewest blocks (the later stage
  on a tie, as the ResNets deepen their third stage), while that brings the MACs closer to
  `resnext-2x`'s. A block costs the same in every stage (the map's area halves as its
  width doubles), so the MACs grow by a constant per block.

Widths and depths come in whole channels and blocks, so equal costs are equal within a few
percent. On ResNet-50's layout (the full scale) the same rules find Table 4's own networks:
ResNeXt 64x4d, and a ResNet 1x102d where the paper has 1x100d. Everything is trained under
one recipe with several seeds and compared on the same test images (McNemar's test and the
paired bootstrap).

The verdict is Table 4's claim: at twice the cost, `resnext-2x` against `wider` and against
`deeper`, the two paired tests Holm-adjusted together. It holds when the ResNeXt is better
than both, does not hold when either is better than the ResNeXt, and is inconclusive
otherwise (ties included: a tie says only that these images and seeds cannot tell them
apart). Table 3's comparison, `resnext` against the baseline at equal cost, is reported
beside it. A grouped convolution does the same arithmetic in smaller pieces, which a CPU
runs less efficiently: the study's measured throughput shows what equal MACs cost in time.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from archlab._plot import figure, to_svg
from archlab.experiments import resnet_variants as rv
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import step_curve
from archlab.experiments.variants import (as_numbers, compare_variants, cost_accuracy_figure,
                                          delta_text, variant_table)

BASELINE, EQUAL, CARDINAL, WIDER, DEEPER = "resnet", "resnext", "resnext-2x", "wider", "deeper"
TOLERANCE = 0.05                # "equal cost": MACs within 5%
PAPER_TABLE3 = (23.9, 22.2)     # top-1 error %: ResNet-50 1x64d, ResNeXt-50 32x4d
# Table 4, top-1 error % at twice ResNet-101's cost, and ResNet-101 itself.
PAPER_TABLE4 = {BASELINE: 22.0, DEEPER: 21.7, WIDER: 21.3, CARDINAL: 20.7}

SETTINGS = rv.settings()
SETTINGS["quick"]["data"]["train_fraction"] = 0.1   # the 2x networks take twice as long
SETTINGS["quick"]["cardinalities"] = [2, 4, 8, 16]
SETTINGS["full"]["cardinalities"] = [2, 4, 8, 16, 32, 64]


def _base_width(setting: Mapping[str, Any], d: int) -> int:
    """The base_width (channels per group at ResNet-50's first stage of 64) that gives d
    channels per group at the scale's first stage."""
    return d * 64 // setting["net"]["widths"][0]


def _grouped(setting: Mapping[str, Any], groups: int, target: int
             ) -> tuple[dict[str, Any], dict[str, int]]:
    """(flags, costs) of `groups` groups with the per-group width whose MACs come closest
    to `target` (MACs grow with the width: the scan stops past the target)."""
    best = None
    for d in range(1, 4097):
        flags = {"groups": groups, "base_width": _base_width(setting, d)}
        costs = rv.net_costs(setting, flags)
        if best is None or abs(costs["macs"] - target) < abs(best[1]["macs"] - target):
            best = (flags, costs)
        if costs["macs"] >= target:
            break
    return best


def most_groups(setting: Mapping[str, Any], target: int
                ) -> tuple[dict[str, Any], dict[str, int]]:
    """The ResNeXt with the most groups (of the scale's cardinalities) whose MACs are
    within TOLERANCE of `target`."""
    fits = [_grouped(setting, g, target) for g in setting["cardinalities"]]
    fits = [f for f in fits if abs(f[1]["macs"] / target - 1) <= TOLERANCE]
    if not fits:
        raise ValueError(f"no cardinality of {setting['cardinalities']} comes within "
                         f"{TOLERANCE:.0%} of {target:,} MACs: change the network's widths")
    return fits[-1]


def deepen(setting: Mapping[str, Any], target: int) -> tuple[dict[str, Any], dict[str, int]]:
    """(flags, costs) of the scale's network deepened towards `target` MACs: a block at a
    time to the stage with the fewest blocks (the later one on a tie), while that brings
    the MACs closer."""
    layers = list(setting["net"]["layers"])
    costs = rv.net_costs(setting, {})
    while True:
        stage = min(range(len(layers)), key=lambda i: (layers[i], -i))
        trial = layers[:stage] + [layers[stage] + 1] + layers[stage + 1:]
        trial_costs = rv.net_costs(setting, {"layers": trial})
        if abs(trial_costs["macs"] - target) >= abs(costs["macs"] - target):
            return {"layers": layers}, costs
        layers, costs = trial, trial_costs


def configurations(setting: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """label -> {flags, params, macs, name} of the five networks, built to their costs."""
    base = rv.net_costs(setting, {})
    out = {BASELINE: ({}, base), EQUAL: most_groups(setting, base["macs"]),
           CARDINAL: most_groups(setting, 2 * base["macs"])}
    target = out[CARDINAL][1]["macs"]
    out[WIDER] = _grouped(setting, 1, target)
    out[DEEPER] = deepen(setting, target)
    order = (BASELINE, EQUAL, DEEPER, WIDER, CARDINAL)
    return {k: {"flags": out[k][0], **out[k][1], "name": _name(setting, k, out[k][0])}
            for k in order}


def _name(setting: Mapping[str, Any], label: str, flags: Mapping[str, Any]) -> str:
    """'ResNeXt 4x3d' and the like: groups x channels per group at the first stage, and
    the blocks per stage."""
    groups = flags.get("groups", 1)
    d = flags.get("base_width", 64) * setting["net"]["widths"][0] // 64
    layers = flags.get("layers", setting["net"]["layers"])
    kind = "ResNeXt" if groups > 1 else "ResNet"
    return f"{label}: {kind} {groups}x{d}d, blocks {tuple(layers)}"


def protocol(scale: str, seeds: Sequence[int],
             configs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The study: the baseline and the four networks built to their costs."""
    configs = configs or configurations(SETTINGS[scale])
    return rv.protocol(SETTINGS[scale], "ResNet against ResNeXt at equal cost, and more "
                       "groups against more width or depth at twice the cost (ResNeXt, "
                       "Tables 3 and 4).", {k: c["flags"] for k, c in configs.items()}, seeds)


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired tests at twice the cost ({"at_2x": {"wider": {outcome, delta, delta_ci,
    p_adjusted}, "deeper": ...}}, each the ResNeXt's rival minus the ResNeXt): the verdict
    on "more groups beat more width and more depth at equal cost"."""
    rivals = numbers["at_2x"]
    words = "; ".join(f"{k} minus {CARDINAL}: {delta_text(v)} ({_said(v)})"
                      for k, v in rivals.items())
    if "equal" in numbers:
        words += f"; at equal cost, {EQUAL} minus {BASELINE}: " + delta_text(
            numbers["equal"])
    beaten = [k for k, v in rivals.items() if v["outcome"] == "worse"]
    winners = [k for k, v in rivals.items() if v["outcome"] == "better"]
    if winners:
        return DOES_NOT_HOLD, words + f": {', '.join(winners)} beat(s) the ResNeXt"
    if len(beaten) == len(rivals):
        return HOLDS, words + ": more groups beat both more width and more depth"
    return INCONCLUSIVE, words + (f": the ResNeXt beats {', '.join(beaten) or 'neither'}, "
                                  "and the rest are tied")


def _said(v: Mapping[str, Any]) -> str:
    return {"worse": "the ResNeXt is better", "better": "the ResNeXt is worse"}.get(
        v["outcome"], "tied")


class Cardinality(Experiment):
    name = "cardinality"
    claim = ("At equal cost, splitting the bottleneck's 3x3 convolution into more groups "
             "(ResNeXt's cardinality) improves accuracy more than making the network wider "
             "or deeper.")
    source = ("ResNeXt (Xie et al., CVPR 2017, arXiv 1611.05431), Tables 3 and 4")
    paper = ("ImageNet top-1 error: ResNet-50 23.9% against ResNeXt-50 32x4d 22.2% at equal "
             "cost; at 2x ResNet-101's cost, deeper 21.7%, wider 21.3%, ResNeXt 2x64d 20.7%")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        configs = configurations(SETTINGS[ctx.scale])
        variants, runs = rv.train_variants(
            self.name, SETTINGS, lambda scale, seeds: protocol(scale, seeds, configs), ctx,
            BASELINE)
        # Table 4: the ResNeXt is the baseline of the two rivals at its cost.
        at_2x = as_numbers(compare_variants(
            {k: runs[k] for k in (CARDINAL, WIDER, DEEPER)}, CARDINAL))
        numbers = {"variants": as_numbers(variants),
                   "at_2x": {k: at_2x[k] for k in (WIDER, DEEPER)},
                   "equal": as_numbers(variants)[EQUAL],
                   "configs": configs}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, {k: c["name"] for k, c in configs.items()})
        headers += [f"MACs / {CARDINAL}'s", f"minus {CARDINAL}, points [95%], p (Holm)"]
        for row, label in zip(rows, variants):
            row.append(f"{configs[label]['macs'] / configs[CARDINAL]['macs']:.3f}")
            row.append(delta_text(at_2x[label]) if label in (WIDER, DEEPER)
                       else "-")
        paper = {EQUAL: PAPER_TABLE3[0] - PAPER_TABLE3[1],
                 **{k: PAPER_TABLE4[BASELINE] - e for k, e in PAPER_TABLE4.items()
                    if k != BASELINE}}
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Gain over the baseline: the paper's beside ours", rv.paper_beside_ours(
                paper, numbers["variants"], {k: c["name"] for k, c in configs.items()},
                "Difference with the 1x baseline", "card-delta"),
                "Grey: the paper's gain in top-1 on ImageNet, over ResNet-50 for the "
                "equal-cost ResNeXt (Table 3), over ResNet-101 for the three networks at "
                "twice its cost (Table 4). Blue: ours, with the paired bootstrap 95% "
                "interval. Table 4's claim is the order of the last three."),
             Figure("Accuracy against cost", cost_accuracy_figure(
                 variants, "Test top-1 against MACs", "card-cost"),
                 "Mean test top-1 (95% interval over seeds) against MACs per image: the "
                 "three networks at twice the cost stand at the same MACs."),
             Figure("Training error against steps", _curves(runs),
                    "Mean over seeds of the training error, recorded every few steps, as "
                    "ResNeXt's Figure 5 draws its training curves.")],
            numbers=numbers, notes=_notes(configs))


def _curves(runs: Mapping[str, Sequence[Any]]) -> str:
    import numpy as np

    fig = figure(6.5, 3.6, layout="constrained")
    ax = fig.subplots()
    for label, group in runs.items():
        curves = [step_curve(r) for r in group]
        n = min(len(s) for s, _ in curves)
        mean = np.mean([e[:n] for _, e in curves], axis=0)
        ax.plot(curves[0][0][:n], mean, lw=1.3, label=label,
                ls="--" if label in (BASELINE, EQUAL) else "-")
    ax.set_xlabel("training steps")
    ax.set_ylabel("training error")
    ax.set_ylim(0, None)
    ax.legend()
    return to_svg(fig, "card-curves")


def _notes(configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [
        "The networks, built to their costs by computation: " + "; ".join(
            f"{c['name']}: {c['params']:,} parameters, {c['macs']:,} MACs"
            for c in configs.values()) + ".",
        f"Equal cost means MACs within {TOLERANCE:.0%}: widths come in whole channels "
        "per group and depths in whole blocks.",
        "Throughput is inference at batch 64 on one CPU thread, measured by the study while "
        "other runs share the machine: grouped convolutions run fewer MACs per second.",
    ]


__all__ = ["Cardinality", "configurations", "decide", "deepen", "most_groups", "protocol"]
