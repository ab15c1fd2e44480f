"""The course's claims, runnable: each an experiment with a protocol, a plot, a table, the
paper's figure beside ours and a verdict computed from the measured numbers.

    from archlab.experiments import Context, run_experiment
    run_experiment("relu-low-dim", Context(scale="quick"))

base.py says what an experiment is, registry.py lists them and runs one, page.py writes its
page; one module per experiment.
"""
from archlab.experiments.base import (  # noqa: F401
    DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment, Outcome,
)
from archlab.experiments.registry import (  # noqa: F401
    EXPERIMENTS, get_experiment, list_experiments, run_all, run_experiment,
)
