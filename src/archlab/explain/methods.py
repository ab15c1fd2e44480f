"""Which methods `explain` runs on a model: every one that applies to it and to the inputs
given (None or 'all'), or the ones named, each checked to apply, with a message that says
why not and what does.
"""
from __future__ import annotations

import re
from typing import Sequence

from archlab.explain.maps import (
    ATTENTION_METHODS, ATTRIBUTION_METHODS, applicable_methods, canonical_method,
    default_cam_layer,
)
from archlab.explain.subject import ExplainError, Subject
from archlab.explain.units import first_conv

METHODS = ("filters", "patches", *ATTRIBUTION_METHODS, *ATTENTION_METHODS, "errors")
MAP_METHODS = ATTRIBUTION_METHODS + ATTENTION_METHODS      # one picture per image
DATA_METHODS = ("patches", "errors")


def method_list(methods: Sequence[str] | str | None) -> list[str]:
    """A comma- or space-separated string, or a sequence, as a list of names."""
    if isinstance(methods, str):
        return [m for m in re.split(r"[,\s]+", methods) if m]
    return list(methods or [])


def all_methods(methods: Sequence[str] | str | None) -> bool:
    names = [canonical_method(m) for m in method_list(methods)]
    return not names or "all" in names


def usable_methods(subject: Subject) -> list[str]:
    """The methods that apply to the model, whatever the inputs."""
    usable = ["filters", "patches", *applicable_methods(subject), "errors"]
    try:
        first_conv(subject)
    except ExplainError:
        usable.remove("filters")
    return usable


def resolve_methods(subject: Subject, methods: Sequence[str] | str | None,
                    have_data: bool, have_images: bool, cam_layer: str | None = None
                    ) -> tuple[list[str], list[str]]:
    """(methods to run, notes on those left out). None or 'all' means every method that
    applies to the model and the inputs given; a method named explicitly must apply
    (Grad-CAM on a model without a convolutional stage applies when `cam_layer` is named)."""
    usable = usable_methods(subject)
    if all_methods(methods):
        return _every_applicable(subject, usable, have_data, have_images)
    chosen = [_check_named(subject, m, usable, have_data, have_images, cam_layer)
              for m in method_list(methods)]
    return list(dict.fromkeys(chosen)), []


def _every_applicable(subject: Subject, usable: list[str], have_data: bool,
                      have_images: bool) -> tuple[list[str], list[str]]:
    notes = []
    chosen = [m for m in METHODS if m in usable]
    if not have_data:
        notes += [f"{m}: skipped, it needs a dataset (data=...)" for m in DATA_METHODS]
        chosen = [m for m in chosen if m not in DATA_METHODS]
    if not have_images:
        skipped = [m for m in chosen if m in MAP_METHODS]
        if skipped:
            notes.append(f"{', '.join(skipped)}: skipped, no images (give images or "
                         "a dataset)")
        chosen = [m for m in chosen if m not in skipped]
    for m in METHODS:
        if m not in usable:
            notes.append(f"{m}: does not apply to {subject.name}")
    return chosen, notes


def _check_named(subject: Subject, name: str, usable: list[str], have_data: bool,
                 have_images: bool, cam_layer: str | None) -> str:
    """The canonical name of a method asked for by name, or why it cannot run."""
    c = canonical_method(name)
    if c not in METHODS:
        raise ExplainError(f"unknown method {name!r}; choose among {', '.join(METHODS)} "
                           f"or 'all' (for {subject.name}: {', '.join(usable)})")
    if c == "gradcam" and c not in usable:
        if cam_layer is not None:
            usable.append(c)                # attribute() checks the named layer itself
        else:
            default_cam_layer(subject)      # raises, saying why and what works
    if c not in usable:
        raise ExplainError(
            f"{c} does not apply to {subject.name}"
            + (" (it has no attention layers: attention maps and rollout are for "
               "transformers, ViT and DeiT)" if c in ATTENTION_METHODS else "")
            + f"; methods that do: {', '.join(usable)}")
    if c in DATA_METHODS and not have_data:
        raise ExplainError(f"{c} needs a dataset: pass data= (`--data fashion-mnist`, "
                           "a folder of class subfolders, or a CSV)")
    if c in MAP_METHODS and not have_images:
        raise ExplainError(f"{c} needs images: give image files, 'skimage:coffee', or "
                           "a dataset to take examples from")
    return c
