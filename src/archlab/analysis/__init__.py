"""Measuring architectures: the course's formulas (calc) and a model's cost (profile)."""
from archlab.analysis.calc import (  # noqa: F401
    conv_output, receptive_field, separable_cost, stacked_convs,
)
from archlab.analysis.profile import Profile, costs_of, model_costs, profile  # noqa: F401
