"""Every experiment by name, and running one: measure, decide, write its page, say the
verdict."""
from __future__ import annotations

import difflib
import time
from typing import Iterable

from archlab.experiments.aux_heads import AuxHeads
from archlab.experiments.base import Context, Experiment, Outcome
from archlab.experiments.batch_size import BatchSize
from archlab.experiments.cardinality import Cardinality
from archlab.experiments.classical_vs_deep import ClassicalVsDeep
from archlab.experiments.compound_scaling import CompoundScaling
from archlab.experiments.conv_mechanics import ConvMechanics
from archlab.experiments.data_efficiency import DataEfficiency
from archlab.experiments.degradation import Degradation
from archlab.experiments.distillation import Distillation
from archlab.experiments.fixres import FixRes
from archlab.experiments.inception_reduction import InceptionReduction
from archlab.experiments.page import measured_seconds, write_course, write_page
from archlab.experiments.pos_embedding import PosEmbedding
from archlab.experiments.receptive_field import ReceptiveField
from archlab.experiments.regularisation import Regularisation
from archlab.experiments.relu_low_dim import ReluLowDim
from archlab.experiments.relu_vs_tanh import ReluVsTanh
from archlab.experiments.se_cost import SECost
from archlab.experiments.separable import Separable
from archlab.experiments.shortcuts import Shortcuts
from archlab.experiments.staged_vgg import StagedVGG
from archlab.experiments.swish_vs_relu import SwishVsRelu
from archlab.experiments.tricks import Tricks

# In the order of the course. Part 1 (issue #16): what a convolution is, then the
# architectures' arguments as the architectures came (AlexNet, VGG, GoogLeNet, ResNet and its
# repairs, SENet, ResNeXt, MobileNet, EfficientNet). Part 2: how networks are trained, again
# in the order the papers came: the hand-designed pipeline CNNs replaced, AlexNet's
# regularisers, VGG's staged training, the batch size, Swish, then the transformers' data,
# position embeddings and distillation, and FixRes's train-low, fine-tune-high.
PARTS: dict[str, tuple[Experiment, ...]] = {
    "The architectures": (
        ConvMechanics(), ReluVsTanh(), ReceptiveField(), InceptionReduction(), Degradation(),
        Shortcuts(), Tricks(), SECost(), Cardinality(), Separable(), ReluLowDim(),
        CompoundScaling()),
    "How they are trained": (
        ClassicalVsDeep(), Regularisation(), StagedVGG(), AuxHeads(), BatchSize(),
        SwishVsRelu(), DataEfficiency(), PosEmbedding(), Distillation(), FixRes()),
}
EXPERIMENTS: dict[str, Experiment] = {e.name: e for part in PARTS.values() for e in part}


def part_of(name: str) -> str:
    """The part of the course an experiment belongs to."""
    return next(part for part, members in PARTS.items()
                if any(e.name == name for e in members))


def list_experiments() -> list[Experiment]:
    return list(EXPERIMENTS.values())


def get_experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, EXPERIMENTS, n=3)
        raise KeyError(f"no experiment {name!r}" + (f"; did you mean {', '.join(close)}?"
                                                      if close else "")
                       + f" The experiments: {', '.join(EXPERIMENTS)}") from None


def run_experiment(name: str, ctx: Context | None = None) -> Outcome:
    """Run one experiment, write `<out>/<name>/index.html` and `verdict.json`, return it."""
    ctx = ctx or Context()
    experiment = get_experiment(name)
    ctx.say(f"{experiment.name}: {experiment.claim}")
    t0 = time.perf_counter()
    outcome = experiment.run(ctx)
    outcome.seconds = time.perf_counter() - t0
    outcome.seconds = measured_seconds(experiment, outcome, ctx)
    page = write_page(experiment, outcome, ctx)
    ctx.say(f"  {outcome.verdict}: {outcome.because}")
    ctx.say(f"  page: {page}")
    return outcome


def run_all(ctx: Context | None = None, names: Iterable[str] | None = None
            ) -> dict[str, Outcome]:
    """Every experiment (or `names`), one after another, each resuming what is done; one
    page, "The course, reproduced" (`<out>/index.html`), gathers them."""
    ctx = ctx or Context()
    outcomes = {n: run_experiment(n, ctx) for n in (names or EXPERIMENTS)}
    page = write_course([(part_of(n), EXPERIMENTS[n], o) for n, o in outcomes.items()], ctx)
    ctx.say(f"the course, reproduced: {page}")
    return outcomes


__all__ = ["EXPERIMENTS", "PARTS", "get_experiment", "list_experiments", "part_of", "run_all",
           "run_experiment"]
