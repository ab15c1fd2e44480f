"""`staged-vgg`: VGG's staged training, a deep net started from a trained shallower one
(Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", 1409.1556, section 3.1).

In 2014 a plain network of 16 or 19 weight layers (no batch normalisation, no shortcut) did
not train from the random start of the day, N(0, 0.01): each layer scaled its signal and its
gradient by a factor far from one, and after 19 of them little was left. VGG's way round
it: "we began with training the configuration A, shallow enough to be trained with random
initialisation. Then, when training deeper architectures, we initialised the first four
convolutional layers and the last three fully-connected layers with the layers of net A
(the intermediate layers were initialised randomly)". The deep net starts with a trained
front end and a trained classifier, and learns only what lies between. The paper adds that
after submission it found random initialisation by Glorot and Bengio's procedure trains them
as well: the staging repairs the initialisation, and a scaled initialisation (Glorot, He)
does the same without the first stage.

Measured: configuration A (vgg11) and configuration E (vgg19, 19 weight layers) in their
small-input form, narrowed to a quarter of the width and without batch norm (the plain
nets of the paper), on one split and seeds. A is trained first; then E is trained twice
under one recipe: from its own initialisation ("from scratch", archlab's He init) and
initialised from A by `archlab.train.deepen` with VGG's rule (A's conv1_1, conv2_1, conv3_1,
conv3_2 and fc6-fc8; the rest of E random), through the recipe's `init_from`. For each run,
the per-step training error (the learning curve of the paper's argument: how soon a net
starts to learn), the steps to a training-error threshold (the error every A run reached
by its end, rounded up to 5%: what the first stage achieved, asked of the deep net), and
the test top-1, compared on
the same test images by the paired test (`variants.compare_variants`, E from scratch the
baseline). The staged net's cost includes A's training: reported as time, and as steps
counted in E's currency (A's steps times A's MACs over E's).

The verdict, on "starting E from A helps it train": holds when the staged E is
significantly more accurate than E from scratch, or tied with it and reaching the
threshold in fewer steps (geometric mean over seeds, a net that never reaches it counted
at the run's length); does not hold when the staged E is significantly less accurate, or
tied and slower to the threshold; inconclusive otherwise. Whether the staging pays for A's
training is reported beside it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import (by_label, seeds_for, step_curve, steps_to_reach,
                                          train_study)
from archlab.experiments.variants import (as_numbers, compare_variants, delta_text,
                                          top1_text, variant_table)

SHALLOW, SCRATCH, STAGED = "A", "E-scratch", "E-staged"
LABELS = (SHALLOW, SCRATCH, STAGED)
NAMES = {SHALLOW: "A (11 layers), from scratch: the first stage",
         SCRATCH: "E (19 layers), from scratch",
         STAGED: "E (19 layers), initialised from A (VGG's rule)"}
MODELS = {SHALLOW: "vgg11", SCRATCH: "vgg19", STAGED: "vgg19"}
# The paper gives no number for the two E's, only that E from N(0, 0.01) did not train.
PAPER = ("no number: E (19 layers) from N(0, 0.01) did not train, so it was initialised from "
         "A; Glorot initialisation later trained it from scratch as well")

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a tenth of Fashion-MNIST at 28 px, VGG at width 1/4
        "data": {"dataset": "fashion-mnist", "val_fraction": 0.02, "train_fraction": 0.1,
                 "test_fraction": 0.25},
        "recipe": {"epochs": 3, "batch_size": 64, "curve_every": 10},
        "shallow_epochs": 3, "width": 0.25, "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: CIFAR-10 at full width, the deep nets trained for the paper's 74 epochs
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 74, "batch_size": 256, "curve_every": 50},
        "shallow_epochs": 74, "width": 1.0, "seeds": 3, "jobs": 1,
    },
}
# The paper's optimiser and rate, momentum SGD at 0.01 with weight decay 5e-4 (on batches of
# 64, not 256: a step takes four times the rate per image); one-cycle instead of its
# divide-by-ten steps, and no dropout: a short run does not overfit. At one-cycle's usual
# 0.05 neither E moved from chance in three epochs (a plain 19-layer net diverges).
RECIPE = {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "small_input": True,
          "threads": 1, "channels_last": True}


def _entry(label: str, width: float, **recipe: Any) -> dict[str, Any]:
    entry = {"name": MODELS[label], "label": label,
             "model_kwargs": {"width": width, "drop_rate": 0.0}}
    return {**entry, "recipe": recipe} if recipe else entry


def protocol(scale: str, seeds: Sequence[int], shallow_runs: dict[int, str] | None = None
             ) -> dict[str, Any]:
    """The first stage (A, and E from scratch) or, given `shallow_runs` ({seed: A's run
    directory}), the second: E initialised from that seed's A. Both on one split."""
    s = SETTINGS[scale]
    base = {"data": s["data"], "recipe": {**RECIPE, **s["recipe"]}, "augment": "none",
            "tta": [], "seeds": list(seeds), "jobs": s["jobs"],
            "measure": {"throughput_batch": 64, "throughput_seconds": 0.2}}
    if shallow_runs is None:
        return {**base, "description": "VGG A, then E from scratch (1409.1556, section 3.1).",
                "models": [_entry(SCRATCH, s["width"]),
                           _entry(SHALLOW, s["width"], epochs=s["shallow_epochs"])]}
    (seed, source), = shallow_runs.items()
    return {**base, "name": f"staged-vgg-from-a-s{seed}", "seeds": [seed],
            "description": "VGG E initialised from A's first four convolutions and three "
                           "fully connected layers (1409.1556, section 3.1).",
            "models": [_entry(STAGED, s["width"], init_from=source)]}


def _reach(steps: Sequence[int | None], budget: Sequence[int]) -> float:
    """Geometric mean of the steps to the threshold; a run that never got there counts at
    its length (so the mean is then a lower bound)."""
    return float(np.exp(np.mean(np.log([b if x is None else x
                                        for x, b in zip(steps, budget)]))))


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From the paired test of the staged E against E from scratch ({"variants": ...}) and
    the steps each needed to the training-error threshold ({"reached": {label: [steps or
    None per seed]}, "budget": {label: [steps run]}, "threshold"}): the verdict."""
    v, reached, budget = numbers["variants"], numbers["reached"], numbers["budget"]
    staged, scratch = (_reach(reached[k], budget[k]) for k in (STAGED, SCRATCH))
    never = {k: sum(x is None for x in reached[k]) for k in (STAGED, SCRATCH)}
    faster = staged < scratch
    words = (f"E initialised from A {top1_text(v[STAGED])}% against E from scratch "
             f"{top1_text(v[SCRATCH])}%: {delta_text(v[STAGED])}; to "
             f"{numbers['threshold']:.0%} training error the staged E took {staged:.0f} "
             f"steps, E from scratch {scratch:.0f} (geometric means over seeds"
             + "".join(f"; {n} {k} run(s) never got there" for k, n in never.items() if n)
             + f"); counting A's training, the staged E cost {numbers['total_steps']:.0f} "
               "steps of E")
    outcome = v[STAGED]["outcome"]
    if outcome == "better":
        return HOLDS, words + "; the staged E is the more accurate"
    if outcome == "worse":
        return DOES_NOT_HOLD, words + "; E from scratch is the more accurate"
    if never[STAGED] == len(reached[STAGED]) and never[SCRATCH] == len(reached[SCRATCH]):
        return INCONCLUSIVE, words + "; tied, and neither E reached the threshold"
    if faster and never[STAGED] <= never[SCRATCH]:
        return HOLDS, words + "; tied in accuracy, and the staged E learns sooner"
    if not faster and never[STAGED] >= never[SCRATCH]:
        return DOES_NOT_HOLD, (words + "; tied in accuracy, and the staged start did not "
                               "make E learn sooner: its own initialisation trains it")
    return INCONCLUSIVE, words + "; tied, and the curves do not say which learns sooner"


class StagedVGG(Experiment):
    name = "staged-vgg"
    claim = ("A deep plain VGG trains better when started from a trained shallower one "
             "(VGG's staged training): its first convolutions and classifier from net A.")
    source = ("Very Deep Convolutional Networks (Simonyan and Zisserman, 1409.1556), "
              "section 3.1")
    paper = PAPER
    trains = True

    def run(self, ctx: Context) -> Outcome:
        s = SETTINGS[ctx.scale]
        seeds = seeds_for(ctx, SETTINGS)
        first = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        study = ctx.out_dir / self.name / "study"
        staged = {}
        for a in first[SHALLOW]:    # one second stage per seed, each from its own A
            # The study hands back every finished run of the protocol's labels, the other
            # seeds' second stages included: keep this seed's.
            staged.update({r.seed: r for r in train_study(self.name, protocol(
                ctx.scale, seeds, {a.seed: str((study / a.run_dir).resolve())}), ctx)
                if r.label == STAGED and r.seed == a.seed})
        runs = {SCRATCH: first[SCRATCH], STAGED: [staged[r.seed] for r in first[SHALLOW]],
                SHALLOW: first[SHALLOW]}
        numbers = measure(runs)
        verdict, because = decide(numbers)
        headers, rows = variant_table(numbers.pop("_variants"), NAMES)
        headers += [f"steps to {numbers['threshold']:.0%} train error", "training time, s"]
        for row, label in zip(rows, runs):
            row += [", ".join("never" if x is None else str(x)
                              for x in numbers["reached"][label]),
                    f"{np.mean(numbers['train_s'][label]):.1f}"]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Training error against steps", _curves(runs, numbers["threshold"]),
                    "Every seed's training error (mean over the last batches): E from "
                    "scratch, E initialised from A, and A itself; the dotted line is the "
                    "threshold the steps are counted to. The staged E's curve starts after "
                    "A's training: its true cost is further right, see the table.")],
            numbers=numbers,
            notes=[f"VGG at width {s['width']:g}, small_input, no batch norm, no dropout; A "
                   f"trained {s['shallow_epochs']} epochs, each E {s['recipe']['epochs']}.",
                   "From scratch is archlab's He initialisation (a scaled one, like the "
                   "Glorot initialisation the paper later found to work), not the paper's "
                   "N(0, 0.01).",
                   f"Steps of E: A's steps times A's MACs over E's ({numbers['a_cost']:.2f}"
                   "): the staged E's full cost is its own steps plus that.",
                   "The paired test: McNemar's exact test over every seed's test images and "
                   "the paired bootstrap interval of the difference; 'better' or 'worse' "
                   "only when both agree."])


def measure(runs: dict[str, list]) -> dict[str, Any]:
    """The numbers `decide` reads, from the runs of each label (plus the variants, under
    '_variants', for the table)."""
    variants = compare_variants(runs, SCRATCH)
    curves = {k: [step_curve(r) for r in group] for k, group in runs.items()}
    # The threshold is what the first stage achieved: the error every A run had reached by
    # its last recorded point, rounded up to 5% (fixed by A, before E is looked at).
    threshold = float(np.ceil(round(max(err[-1] for _, err in curves[SHALLOW]) * 20, 6)) / 20)
    reached = {k: [steps_to_reach(st, err, threshold) for st, err in c]
               for k, c in curves.items()}
    budget = {k: [st[-1] for st, _ in c] for k, c in curves.items()}
    a_cost = runs[SHALLOW][0].macs / runs[STAGED][0].macs      # a step of A, in steps of E
    total = float(np.mean([_reach([x], [b]) + a_cost * a
                           for x, b, a in zip(reached[STAGED], budget[STAGED],
                                              budget[SHALLOW])]))
    train_s = {k: [float(r.train_time) for r in group] for k, group in runs.items()}
    return {"variants": as_numbers(variants), "_variants": variants, "threshold": threshold,
            "reached": reached, "budget": budget, "a_cost": a_cost, "total_steps": total,
            "train_s": train_s,
            "staged_total_s": [a + b for a, b in zip(train_s[SHALLOW], train_s[STAGED])],
            "seeds": [r.seed for r in runs[SCRATCH]]}


def _curves(runs: dict[str, list], threshold: float) -> str:
    fig = figure(6.5, 3.6, layout="constrained")
    ax = fig.subplots()
    styles = {SCRATCH: ("tab:orange", "--"), STAGED: ("tab:blue", "-"),
              SHALLOW: ("grey", ":")}
    for label, group in runs.items():
        colour, style = styles[label]
        for i, run in enumerate(group):
            steps, error = step_curve(run)
            ax.plot(steps, error, style, color=colour, lw=1.2, alpha=0.8,
                    label=NAMES[label].split(":")[0] if i == 0 else None)
    ax.axhline(threshold, color="black", ls=":", lw=1)
    ax.set_xlabel("training steps")
    ax.set_ylabel("training error")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return to_svg(fig, "staged-vgg")


__all__ = ["StagedVGG", "decide", "measure", "protocol"]
