"""Entry points that run `fit` for a purpose: fastai's two-phase `fine_tune` and FixRes's
`fine_tune_at_resolution`. They sit above the trainer; the pieces they configure
(train/finetune.py, train/progressive.py) sit below it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import nn

from archlab.train.checkpoint import read_model
from archlab.train.progressive import model_at_resolution
from archlab.train.recipe import Recipe
from archlab.train.trainer import fit


def fine_tune(model: nn.Module | str, data, epochs: int = 1, base_lr: float = 2e-3,
              freeze_epochs: int = 1, recipe=None, *, head: str = "concat",
              unfrozen_lr: Sequence[float] | None = None, frozen_bn: str = "train",
              **fit_kwargs: Any):
    """Fine-tune a pretrained `model` on `data` in two phases, fastai's `fine_tune`:
    `freeze_epochs` on a new head with the body frozen at `base_lr`, then `epochs`
    unfrozen with learning rates spread over the layer groups (`unfrozen_lr`=(lo, hi);
    default (base_lr / 200, base_lr / 2)).

    `model` is a module (pretrained weights loaded) or a registered name, whose weights
    then come from `recipe.pretrained`. The recipe (default: AdamW, as fastai) supplies the
    rest; `fit_kwargs` go to `fit` (run_dir, resume, test_data, ...). Returns the FitResult.
    """
    if recipe is None:
        recipe = Recipe(optimizer="adamw")
    elif isinstance(recipe, str):
        recipe = Recipe.load(recipe)
    recipe = recipe.replace(fine_tune=True, epochs=epochs, lr=base_lr,
                            freeze_epochs=freeze_epochs, head=head, frozen_bn=frozen_bn,
                            unfrozen_lr=list(unfrozen_lr) if unfrozen_lr else None)
    return fit(model, data, recipe, **fit_kwargs)


def fine_tune_at_resolution(run: str | Path, data, image_size: int, epochs: int = 1,
                            lr: float | None = None, recipe=None, **fit_kwargs: Any):
    """Continue the model of `run` (a run directory or model file archlab wrote) on `data`
    at `image_size` for `epochs` (FixRes: train small, fine-tune at the test size). The
    recipe defaults to the run's, with its learning rate divided by 10 (a fine-tuning
    rate) unless `lr` is given. Returns the FitResult."""
    weights, info = read_model(run)
    if (info.get("recipe") or {}).get("fine_tune"):
        raise ValueError(f"{run} was fine-tuned with a new head; continue it with --resume "
                         "or fine-tune its base model instead")
    kwargs = dict(info["model_kwargs"])
    model, kwargs = model_at_resolution(info["model"], kwargs, weights, image_size)
    if recipe is None:
        recipe = Recipe.from_dict({k: v for k, v in info["recipe"].items()
                                   if k in Recipe.__dataclass_fields__})
    elif isinstance(recipe, str):
        recipe = Recipe.load(recipe)
    extra = {k: v for k, v in kwargs.items()
             if k not in ("num_classes", "in_chans", "small_input")}
    recipe = recipe.replace(image_size=image_size, epochs=epochs, pretrained=None,
                            lr=lr if lr is not None else recipe.peak_lr / 10,
                            small_input=kwargs.get("small_input"), model_kwargs=extra,
                            progressive=None, fine_tune=False)
    return fit(model, data, recipe, **fit_kwargs)
