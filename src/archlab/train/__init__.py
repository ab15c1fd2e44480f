"""Training: recipes, the trainer, losses, schedules, checkpoints; evaluation and prediction
with what a run leaves behind."""
from archlab.train.evaluate import Evaluation, evaluate, load_trained, predict  # noqa: F401
from archlab.train.metrics import Metrics  # noqa: F401
from archlab.train.recipe import Recipe, presets  # noqa: F401
from archlab.train.trainer import (  # noqa: F401
    FitResult, Trainer, TrainingDiverged, TrainingInterrupted, fit,
)
