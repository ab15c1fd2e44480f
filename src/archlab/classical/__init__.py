"""Classical baselines: what image classification was before CNNs, in the same table.

A protocol names a baseline like an architecture (`- sift-bovw`); the study trains it on
the same split and reports it beside the networks (no MACs: it is not a network).

    from archlab.classical import create_classical
    clf = create_classical("sift-bovw", vocab_size=128).fit(images, labels)
    clf = create_classical("sift-bovw", detector="dog")   # Lowe's DoG keypoints, not a grid

The modules: sift (describing: dense or difference-of-Gaussians keypoints, RootSIFT) and
bovw (the vocabulary, the codes, the SVM).
"""
from __future__ import annotations

from typing import Any

from archlab.classical.bovw import KEY_IDEA, PAPER, BoVWConfig, SiftBoVW
from archlab.classical.sift import DETECTORS, DOG_MIN_SIDE, Descriptors, detect_dog
from archlab.models.registry import ModelCard

_CLASSICAL: dict[str, tuple[type, type, ModelCard]] = {
    "sift-bovw": (SiftBoVW, BoVWConfig, ModelCard(
        name="sift-bovw", family="classical", paper=PAPER, year=2004, arxiv=None,
        key_idea=KEY_IDEA, input_size=(1, 56, 56), mean=(0.0,), std=(1.0,))),
}


def list_classical() -> list[str]:
    return sorted(_CLASSICAL)


def is_classical(name: str) -> bool:
    return name in _CLASSICAL


def classical_card(name: str) -> ModelCard:
    return _entry(name)[2]


def classical_options(name: str) -> list[str]:
    """The keyword arguments `create_classical(name, ...)` accepts."""
    return _entry(name)[1].fields()


def classical_config(name: str):
    """The settings class of a baseline (its options with their defaults and help)."""
    return _entry(name)[1]


def create_classical(name: str, **kwargs: Any):
    cls, config_cls, _card = _entry(name)
    unknown = [k for k in kwargs if k not in config_cls.fields()]
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(config_cls.fields())}")
    return cls(config_cls(**kwargs))


def _entry(name: str):
    try:
        return _CLASSICAL[name]
    except KeyError:
        raise KeyError(f"no classical baseline {name!r}; there is "
                       f"{', '.join(list_classical())}") from None


__all__ = ["DETECTORS", "DOG_MIN_SIDE", "BoVWConfig", "Descriptors", "SiftBoVW",
           "classical_card", "classical_config", "classical_options", "create_classical",
           "detect_dog", "is_classical", "list_classical"]
