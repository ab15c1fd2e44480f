"""Measuring architectures: the course's formulas (calc) and a model's cost (profile)."""
from archlab.analysis.calc import (  # noqa: F401
    attention_cost, conv_output, fc_on_image, receptive_field, reduction_saving,
    separable_cost, stacked_convs,
)
from archlab.analysis.profile import Profile, costs_of, model_costs, profile  # noqa: F401
