"""Where a run computes, and how fast: the device, and the speed settings (precision,
channels_last, torch.compile) that the recipe sets or leaves to measurement
(analysis/speed.py chooses; this module says what a run, an evaluation or several
processes may measure)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from archlab.analysis.speed import (Choice, Settings, choose, device_defaults, has_batchnorm,
                                    has_conv)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is CUDA, else Apple's MPS, else the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU; use "
                           "--device cpu")
    return device


def run_settings(recipe, model: nn.Module, device: torch.device, image_size: int,
                 in_chans: int, run_steps: int | None, several_processes: bool = False,
                 recorded: dict[str, Any] | None = None) -> Choice:
    """The speed settings of a training run: those the recipe gives, the rest measured on
    `model` (left untouched) unless the run resumes (`recorded`: what it chose then) or
    runs in several processes (the device's defaults: measurements could differ between
    processes, and every process must compute alike). A run with a time budget has no
    `run_steps`: compiling must pay for itself within the budget's seconds."""
    if recorded is not None:
        fields = {k: recorded[k] for k in ("precision", "channels_last", "compile")}
        return Choice(Settings(**fields), recorded.get("step_s", {}),
                      "recorded when the run started")
    if several_processes or recipe.deterministic:
        defaults = device_defaults(device, recipe.precision, recipe.channels_last,
                                   recipe.compile, conv=has_conv(model))
        why = ("deterministic: the device's defaults, never a timing" if recipe.deterministic
               else "several processes: the device's defaults, the same in each")
        return Choice(defaults, reason=why)
    return choose(model, recipe.batch_size, image_size, device, "train", recipe.precision,
                  recipe.channels_last, False, recipe.compile, run_steps=run_steps,
                  in_chans=in_chans,
                  run_seconds=recipe.budget_minutes * 60 if recipe.budget_minutes else None)


def set_deterministic(on: bool) -> None:
    """Repeatable CUDA runs, or fast ones. cuDNN's autotuner picks each convolution's
    algorithm by timing it, and some algorithms (and atomics in some backward kernels) add
    in a different order on every call: the same seed then gives different weights. `on`
    picks deterministic algorithms and no autotuning; cuBLAS needs a fixed workspace for
    that, set before its first call (when the variable is already set, it is left alone)."""
    import os

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    # warn_only: an op with no deterministic kernel warns once instead of stopping a run.
    torch.use_deterministic_algorithms(on, warn_only=True)


def inference_settings(model: nn.Module, device: torch.device, batch: int, image_size: int,
                       in_chans: int, batches: int, precision: str = "auto") -> Choice:
    """The speed settings to evaluate or predict with: the precision asked for (or
    measured), the layout measured, batch norm folded, never compiled (an evaluation is
    too short to pay for it)."""
    return choose(model, batch, image_size, device, "infer", precision, None,
                  has_batchnorm(model), False, run_steps=batches, in_chans=in_chans)
