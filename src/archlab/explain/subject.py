"""What `archlab explain` looks at: a network with what it takes to feed it.

A `Subject` is a model in eval mode together with its preprocessing (side, mean, std, crop)
and its class names. `load_subject` builds one from a registered name (random weights, or
`pretrained=PATH`), a model file or run directory left by `archlab train` (read by
archlab.train's `load_trained`, the loader `archlab eval` uses, so a fine-tuned, distilled or
progressively resized run explains as it evaluates), a safetensors file left by `archlab
convert`, or a module.

Every bad input is refused with a message that names it and says what would work.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from archlab.models import create_model, list_models
from archlab.models.pretrained_cfg import cfg_from_metadata
from archlab.models.weights import CheckpointError, load_state_dict, read_state_dict
from archlab.train import load_trained


class ExplainError(ValueError):
    """An input `explain` cannot use; the message names it and lists what would work."""


# --------------------------------------------------------------------------------------
# The subject: a model and how to feed it
# --------------------------------------------------------------------------------------


@dataclass
class Subject:
    """A model in eval mode, with the preprocessing and class names that go with it."""

    model: nn.Module
    name: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    classes: list[str] | None = None
    source: str = "random weights"       # where the weights came from
    dataset: str | None = None           # the data it was trained on, when known
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def in_chans(self) -> int:
        return int(getattr(self.model, "in_chans", len(self.mean)))

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0))

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def has_attention(self) -> bool:
        return hasattr(self.model, "forward_attention")

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes else str(index)

    def class_index(self, target: int | str) -> int:
        """A class given by index or name, checked against the model's outputs."""
        if isinstance(target, str) and not target.lstrip("-").isdigit():
            if self.classes and target in self.classes:
                return self.classes.index(target)
            known = self.classes or []
            close = difflib.get_close_matches(target, known, n=3, cutoff=0.5)
            hint = (f" closest: {', '.join(close)}." if close
                    else f" classes: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}."
                    if known else " this model has no class names: give an index.")
            raise ExplainError(f"target class {target!r} is not one of {self.name}'s classes;"
                               f"{hint}")
        index = int(target)
        if not 0 <= index < self.num_classes:
            raise ExplainError(f"target class {index} is out of range: {self.name} has "
                               f"{self.num_classes} classes (0 to {self.num_classes - 1})")
        return index

    def normalise(self, x01: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x01.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x01.device).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def to_display(self, x: torch.Tensor) -> np.ndarray:
        """Normalised (N, C, H, W) -> what the model saw, (N, H, W, C) floats in [0, 1]."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x01 = (x.detach() * std + mean).clamp(0, 1)
        return x01.permute(0, 2, 3, 1).float().cpu().numpy()


def _imagenet_classes(num_classes: int) -> list[str] | None:
    # torchvision ships the ImageNet-1k class names with its weight descriptions (no download).
    if num_classes != 1000:
        return None
    try:
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:  # noqa: BLE001  (names are a convenience; indices still work)
        return None


def subject_from_module(model: nn.Module, *, name: str | None = None,
                        image_size: int | None = None, classes: Sequence[str] | None = None,
                        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        crop_pct: float | None = None, source: str = "module",
                        dataset: str | None = None) -> Subject:
    """A Subject from a built model; the rest comes from what its weights expect
    (`pretrained_cfg`), else its card, unless given."""
    card = getattr(model, "card", None)
    cfg = getattr(model, "pretrained_cfg", None)   # what archlab built or loaded attaches
    if not isinstance(cfg, dict):
        cfg = {"input_size": card.input_size, "mean": card.mean, "std": card.std} if card else {}
    crop_pct = cfg.get("crop_pct", 0.875) if crop_pct is None else crop_pct
    classes = classes or cfg.get("classes")
    in_chans = int(getattr(model, "in_chans", 3))
    size = image_size or (cfg["input_size"][1] if cfg else 224)

    def stats(given, from_card, default):
        values = tuple(given) if given is not None else (
            tuple(from_card) if from_card is not None else default)
        # A card's RGB statistics for a model built for other channel counts: their mean.
        if len(values) != in_chans:
            values = (float(np.mean(values)),) * in_chans
        return values

    mean_ = stats(mean, cfg.get("mean"), (0.5,) * in_chans)
    std_ = stats(std, cfg.get("std"), (0.5,) * in_chans)
    min_size = int(getattr(model, "min_input_size", 1))
    label = name or getattr(model, "model_name", type(model).__name__)
    if size < min_size:
        raise ExplainError(f"{label} takes images of at least {min_size} px; an image size of "
                           f"{size} is too small: use img_size >= {min_size}")
    classes = list(classes) if classes else _imagenet_classes(
        int(getattr(model, "num_classes", 0)))
    return Subject(model.eval(), label, int(size), mean_, std_, crop_pct, classes, source,
                   dataset)


def load_subject(spec: str | Path | nn.Module, *, pretrained: str | None = None,
                 num_classes: int | None = None, in_chans: int | None = None,
                 small_input: bool = False, img_size: int | None = None,
                 classes: Sequence[str] | None = None, device: str = "cpu") -> Subject:
    """The model to explain, from a registered name, a file or run directory, or a module.

    A name builds the architecture with random weights unless `pretrained` is a checkpoint
    path. A model.safetensors or run directory written by `archlab train` brings its own
    architecture, classes and preprocessing; a safetensors file written by `archlab convert`
    its architecture. `img_size` overrides the side images are resized to.
    """
    if isinstance(spec, nn.Module):
        return subject_from_module(spec.to(device), image_size=img_size, classes=classes)
    path = Path(spec).expanduser()
    if path.exists():
        subject = _subject_from_file(path, device)
        if img_size or classes:
            subject = subject_from_module(
                subject.model, name=subject.name, image_size=img_size,
                classes=classes or subject.classes, mean=subject.mean, std=subject.std,
                crop_pct=subject.crop_pct, source=subject.source, dataset=subject.dataset)
        return subject
    text = str(spec)
    if text not in list_models():
        raise _unknown_model(text, path)
    model = create_model(text, num_classes=num_classes or 1000, in_chans=in_chans or 3,
                         small_input=small_input, pretrained=pretrained).to(device)
    return subject_from_module(model, image_size=img_size, classes=classes,
                               source=str(pretrained) if pretrained else "random weights")


def _unknown_model(text: str, path: Path) -> Exception:
    looks_like_path = any(c in text for c in "/\\") or path.suffix in (
        ".safetensors", ".pt", ".pth", ".bin")
    if looks_like_path:
        return FileNotFoundError(f"no checkpoint file or run directory {text!r}; give a "
                                 "model.safetensors or run directory left by `archlab "
                                 "train`, or a registered model name (`archlab models`)")
    close = difflib.get_close_matches(text, list_models(), n=5, cutoff=0.5)
    return ExplainError(f"{text!r} is neither a file or run directory nor a registered "
                        "model." + (f" Closest names: {', '.join(close)}." if close else "")
                        + " `archlab models` lists them all.")


def _subject_from_file(path: Path, device: str) -> Subject:
    """A run directory or a file `archlab train` wrote (its metadata holds an `info`), read
    by `load_trained`; else a bare safetensors file that `archlab convert` wrote."""
    meta: dict[str, str] = {}
    if not path.is_dir():
        weights, meta = read_state_dict(path)
    if path.is_dir() or "info" in meta:
        model, info = load_trained(path, device)
        pre = info.get("preprocess") or {}
        return subject_from_module(
            model, image_size=pre.get("image_size"),
            classes=info.get("classes"), mean=pre.get("mean"), std=pre.get("std"),
            crop_pct=pre.get("crop_pct", 0.875), source=str(path), dataset=info.get("dataset"))
    # A bare safetensors file: `archlab convert` records the architecture in its metadata.
    name = meta.get("archlab_model")
    if not name:
        raise CheckpointError(f"{path} holds weights but does not say which architecture they "
                              "belong to: give the model name and the weights, e.g. "
                              f"`archlab explain resnet50 --pretrained {path}`")
    num_classes = int(meta.get("num_classes") or _count_classes(weights))
    kwargs = {"in_chans": _count_in_chans(weights), **json.loads(meta.get("model_kwargs") or "{}"),
              "num_classes": num_classes}
    model = create_model(name, **kwargs)
    load_state_dict(model, weights, meta.get("source_layout"))
    model.pretrained_cfg = cfg_from_metadata(meta) or model.pretrained_cfg
    return subject_from_module(model.to(device), source=str(path))


def _count_classes(state_dict: dict[str, torch.Tensor]) -> int:
    # The classifier is the last 2-D weight of the file.
    weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else 1000


def _count_in_chans(state_dict: dict[str, torch.Tensor]) -> int:
    convs = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 4]
    return int(convs[0].shape[1]) if convs else 3
