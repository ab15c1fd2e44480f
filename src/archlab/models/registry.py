"""The model registry: every architecture archlab knows, by name, with its card.

A family file registers each variant as a one-line configuration of its network class:

    register_model("resnet50", ResNet, paper=RESNET, params=25_557_032,
                   peers={"torchvision": "resnet50", "timm": "resnet50"},
                   block="bottleneck", layers=(3, 4, 6, 3))

`create_model(name, ...)` builds it; `model_card(name)` tells a student what it is and what
it costs; `list_models()` lists them.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from archlab.models.pretrained_cfg import (card_cfg, cfg_from_metadata, imagenet_classes,
                                           loaded_cfg, peer_cfg)
from archlab.models.weights import PEER_SOURCES, load_pretrained, named_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Inception v3, Xception and the TensorFlow ports normalise to [-1, 1].
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Paper:
    """The paper a family comes from, and its idea in a student's words."""

    title: str
    year: int
    arxiv: str | None
    family: str
    idea: str


@dataclass(frozen=True)
class ModelCard:
    """What a registered architecture is and what it costs."""

    name: str
    family: str
    paper: str
    year: int
    arxiv: str | None
    key_idea: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    # How its weights' source evaluates: resize the shorter side to size / crop_pct with this
    # interpolation, cut the centre (models/pretrained_cfg.py).
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    # The reference count (1000 classes, 3 channels) that the tests check, and its source.
    params: int | None = None
    params_source: str = ""
    # The same architecture in peer libraries, as {library: name}; parity tests build these.
    peers: dict[str, str] = field(default_factory=dict)
    # Input size at which the small_input (CIFAR-style) variant is meant to run.
    small_input_size: int = 32

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., Any]
    config: dict[str, Any]
    card: ModelCard


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str,
    builder: Callable[..., Any],
    *,
    paper: Paper,
    params: int | None = None,
    params_source: str = "",
    idea: str | None = None,
    input_size: int | tuple[int, int, int] = 224,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    interpolation: str = "bilinear",
    crop_pct: float | None = None,
    peers: dict[str, str] | None = None,
    small_input_size: int = 32,
    **config: Any,
) -> None:
    """Register `name` as `builder(**config)`, with a card built from its paper."""
    if name in _REGISTRY:
        raise ValueError(f"model name {name!r} is registered twice")
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    if crop_pct is None:  # ImageNet's 256 -> 224; CIFAR's and MNIST's images are seen whole
        crop_pct = 0.875 if input_size[1] > 64 else 1.0
    card = ModelCard(
        name=name,
        family=paper.family,
        paper=paper.title,
        year=paper.year,
        arxiv=paper.arxiv,
        key_idea=idea or paper.idea,
        input_size=tuple(input_size),
        mean=tuple(mean),
        std=tuple(std),
        interpolation=interpolation,
        crop_pct=crop_pct,
        params=params,
        params_source=params_source,
        peers=dict(peers or {}),
        small_input_size=small_input_size,
    )
    _REGISTRY[name] = _Entry(builder, dict(config), card)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.5)
        if not close:
            close = [n for n in _REGISTRY if n.startswith(name[:4])][:5]
        hint = f" Closest registered names: {', '.join(close)}." if close else ""
        raise KeyError(
            f"unknown model {name!r}.{hint} `archlab models` lists all {len(_REGISTRY)}."
        ) from None


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered names, sorted; `pattern` is a shell-style wildcard ('resnet*')."""
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if family:
        names = [n for n in names if _REGISTRY[n].card.family == family]
    return names


def list_families() -> list[str]:
    return sorted({e.card.family for e in _REGISTRY.values()})


def model_card(name: str) -> ModelCard:
    return _entry(name).card


def model_builder(name: str) -> Callable[..., Any]:
    """The network class (or function) a registered name builds with its configuration."""
    return _entry(name).builder


def model_config(name: str) -> dict[str, Any]:
    """The configuration a registered name passes to its network class."""
    return dict(_entry(name).config)


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    small_input: bool = False,
    pretrained: str | None = None,
    **overrides: Any,
):
    """Build a registered architecture.

    `pretrained` is a checkpoint path (safetensors, or a torch state dict read with
    weights_only=True) in archlab's, torchvision's, timm's or efficientnet-pytorch's layout,
    or a named source such as 'tv:IMAGENET1K_V1' or 'timm:augreg_in21k' that is downloaded
    with the peer's own code. `overrides` change the registered configuration
    (for instance drop_rate=0.3 or img_size=384).
    """
    entry = _entry(name)
    config = {**entry.config, **overrides}
    model = entry.builder(num_classes=num_classes, in_chans=in_chans,
                          small_input=small_input, **config)
    model.card = replace(entry.card, input_size=_input_size(entry.card, in_chans, small_input,
                                                           config, model))
    model.model_name = name
    cfg = card_cfg(model.card, num_classes)
    if small_input:   # 28-64 px images are taken whole, as the trainer takes them
        cfg["crop_pct"] = 1.0
    if pretrained:
        report = load_pretrained(model, pretrained)
        side = cfg["input_size"]
        cfg = _weights_cfg(model, cfg, pretrained, report)
        if "img_size" in overrides:   # weights moved to another resolution on purpose
            cfg["input_size"] = side
    model.pretrained_cfg = cfg
    return model


def _weights_cfg(model: Any, cfg: dict, pretrained: str, report: Any) -> dict:
    """The preprocessing the loaded weights expect: the named peer weights' own, the file's
    record, else the card's; ImageNet's class names for a peer's 1000-class head."""
    named = named_source(pretrained)
    if named and named[0] in model.card.peers:   # peer_cfg knows each peer's own view
        recorded = peer_cfg(named[0], model.card.peers[named[0]], named[1], cfg)
    else:
        recorded = cfg_from_metadata(report.metadata)
    cfg = loaded_cfg(cfg, model.num_classes, recorded, bool(report.reset))
    if ("classes" not in cfg and report.source in PEER_SOURCES and not report.reset
            and model.num_classes == 1000):
        names = imagenet_classes()
        if names:
            cfg["classes"] = names
    return cfg


def _input_size(card: ModelCard, in_chans: int, small_input: bool, config: dict,
                model: Any) -> tuple:
    """The input a built model is meant for: the small-input side, an `img_size` given, the
    side its own configuration implies (`default_input_size`: EfficientNet's compound-scaled
    resolution for a custom φ), or the card's."""
    if small_input:
        size = card.small_input_size
    else:
        size = config.get("img_size") or getattr(model, "default_input_size", None) \
            or card.input_size[1]
    return (in_chans, size, size)
