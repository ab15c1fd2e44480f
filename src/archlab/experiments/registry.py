"""Every experiment by name, and running one: measure, decide, write its page, say the
verdict."""
from __future__ import annotations

import difflib
import time
from typing import Iterable

from archlab.experiments.base import Context, Experiment, Outcome
from archlab.experiments.cardinality import Cardinality
from archlab.experiments.compound_scaling import CompoundScaling
from archlab.experiments.conv_mechanics import ConvMechanics
from archlab.experiments.degradation import Degradation
from archlab.experiments.distillation import Distillation
from archlab.experiments.inception_reduction import InceptionReduction
from archlab.experiments.page import write_page
from archlab.experiments.pos_embedding import PosEmbedding
from archlab.experiments.receptive_field import ReceptiveField
from archlab.experiments.relu_low_dim import ReluLowDim
from archlab.experiments.relu_vs_tanh import ReluVsTanh
from archlab.experiments.se_cost import SECost
from archlab.experiments.separable import Separable
from archlab.experiments.shortcuts import Shortcuts
from archlab.experiments.swish_vs_relu import SwishVsRelu
from archlab.experiments.tricks import Tricks

# In the order of the course: what a convolution is, then the architectures' arguments as
# the architectures came (AlexNet, VGG, GoogLeNet, ResNet and its repairs, SENet, ResNeXt,
# MobileNet, EfficientNet and its Swish).
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    ConvMechanics(), ReluVsTanh(), ReceptiveField(), InceptionReduction(), Degradation(),
    Shortcuts(), Tricks(), SECost(), Cardinality(), Separable(), ReluLowDim(),
    CompoundScaling(), SwishVsRelu(), PosEmbedding(), Distillation())}


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
    if outcome.seconds is None:
        outcome.seconds = time.perf_counter() - t0
    page = write_page(experiment, outcome, ctx)
    ctx.say(f"  {outcome.verdict}: {outcome.because}")
    ctx.say(f"  page: {page}")
    return outcome


def run_all(ctx: Context | None = None, names: Iterable[str] | None = None
            ) -> dict[str, Outcome]:
    """Every experiment (or `names`), one after another; an index page gathers them."""
    from archlab.experiments.page import write_index

    ctx = ctx or Context()
    outcomes = {n: run_experiment(n, ctx) for n in (names or EXPERIMENTS)}
    write_index([(EXPERIMENTS[n], o) for n, o in outcomes.items()], ctx)
    return outcomes


__all__ = ["EXPERIMENTS", "get_experiment", "list_experiments", "run_all", "run_experiment"]
