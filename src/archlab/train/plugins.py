"""The one place that turns a recipe into the trainer's plugins (train/plugin.py says what
a plugin is). Their order is the order their hooks run in: staged deepening copies the
shallow net's weights before fine-tuning puts a new head on it; the EMA copies the weights
once the head is there. The loggers come last: they record what the others did."""
from __future__ import annotations

from torch import nn

from archlab.train.deepen import Deepen
from archlab.train.distill import Distill
from archlab.train.ema import EMA
from archlab.train.finetune import FineTune
from archlab.train.mlflow_log import MLflowLogger
from archlab.train.progressive import Progressive, ProgressivePlan
from archlab.train.recipe import Recipe
from archlab.train.run_log import TensorBoard


def plugins_for(recipe: Recipe, teacher: nn.Module | str | None = None) -> list:
    """The plugins `recipe` asks for; `teacher` (a module, a run directory or a model name)
    overrides the recipe's teacher when distilling."""
    out: list = []
    if recipe.init_from:
        out.append(Deepen(recipe.init_from))
    if recipe.fine_tune:
        out.append(FineTune())
    if recipe.ema > 0:
        out.append(EMA(recipe.ema))
    if recipe.progressive is not None:
        out.append(Progressive(ProgressivePlan.from_recipe(recipe)))
    if recipe.distill != "none":
        out.append(Distill(teacher))
    loggers = recipe.loggers
    if "tensorboard" in loggers:
        out.append(TensorBoard())
    if "mlflow" in loggers:
        out.append(MLflowLogger(loggers["mlflow"]))
    return out
