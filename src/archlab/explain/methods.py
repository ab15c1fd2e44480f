"""Which methods `explain` runs on a model, registered here: every one that applies to it
and to the inputs given (None), the same and those that cost more (deconv, class_model)
with 'all', or the ones named. A named method that does not apply to the model (position
embeddings of a CNN) is left out with a note saying why, unless nothing else was asked for,
which is an error that says why and what does apply. A method that needs data or images
that were not given is an error.
"""
from __future__ import annotations

import re
from typing import Sequence

from archlab.explain.maps import (
    ATTENTION_METHODS, ATTRIBUTION_METHODS, canonical_method, default_cam_layer, has_relu,
    map_layers,
)
from archlab.explain.positions import no_positions
from archlab.explain.subject import ExplainError, Subject
from archlab.explain.units import first_conv

METHODS = ("filters", "patches", "deconv", *ATTRIBUTION_METHODS, *ATTENTION_METHODS,
           "attention_distance", "pos_embedding", "class_model", "errors")
MAP_METHODS = ATTRIBUTION_METHODS + ATTENTION_METHODS      # one picture per image
IMAGE_METHODS = MAP_METHODS + ("attention_distance",)       # need images
DATA_METHODS = ("patches", "deconv", "errors")
# Run when named or with 'all': hundreds of gradient steps per class, and a search of the
# dataset plus a backward pass per channel.
NAMED_ONLY = ("deconv", "class_model")
ALIASES = {"deconvnet": "deconv", "deconvolution": "deconv", "class-model": "class_model",
           "class_models": "class_model", "class-models": "class_model",
           "pos-embedding": "pos_embedding", "position_embedding": "pos_embedding",
           "pos_embeddings": "pos_embedding", "attention-distance": "attention_distance",
           "mean_attention_distance": "attention_distance"}
NO_ATTENTION = "has no attention layers (a method for transformers: ViT and DeiT)"


def canonical(name: str) -> str:
    c = canonical_method(name)
    return ALIASES.get(c, c)


def method_list(methods: Sequence[str] | str | None) -> list[str]:
    """A comma- or space-separated string, or a sequence, as a list of names."""
    if isinstance(methods, str):
        return [m for m in re.split(r"[,\s]+", methods) if m]
    return list(methods or [])


def all_methods(methods: Sequence[str] | str | None) -> bool:
    names = [canonical(m) for m in method_list(methods)]
    return not names or "all" in names


def not_applicable(subject: Subject) -> dict[str, str]:
    """Each method that does not apply to the model, and why, as words following its name
    ('resnet20 has no attention layers ...')."""
    why = {}
    try:
        first_conv(subject)
    except ExplainError:
        why["filters"] = "has no convolution reading its input"
    if not has_relu(subject.model):
        for m in ("deconv", "guided_backprop"):
            why[m] = ("has no ReLU, the one place where this rule differs from the plain "
                      "gradient")
    if not map_layers(subject):
        why["gradcam"] = ("has no convolutional stage with a spatial map (name a convolution "
                          "with layer=, --layer)")
    if not subject.has_attention:
        why.update({m: NO_ATTENTION for m in (*ATTENTION_METHODS, "attention_distance")})
    positions = no_positions(subject.model)
    if positions:
        why["pos_embedding"] = positions
    if subject.num_classes < 1:
        why["class_model"] = "has no classifier: there is no class score to maximise"
    return why


def usable_methods(subject: Subject) -> list[str]:
    """The methods that apply to the model, whatever the inputs."""
    why = not_applicable(subject)
    return [m for m in METHODS if m not in why]


def resolve_methods(subject: Subject, methods: Sequence[str] | str | None,
                    have_data: bool, have_images: bool, cam_layer: str | None = None
                    ) -> tuple[list[str], list[str]]:
    """(methods to run, notes on those left out). None means every method that applies to
    the model and the inputs given but deconv and class_model, 'all' those too; a named
    method must apply (Grad-CAM on a model without a convolutional stage applies when
    `cam_layer` is named), or it is left out with a note when others do."""
    why = not_applicable(subject)
    if cam_layer is not None:
        why.pop("gradcam", None)            # attribute() checks the named layer itself
    if all_methods(methods):
        every = "all" in [canonical(m) for m in method_list(methods)]
        return _every_applicable(subject, why, have_data, have_images, every)
    chosen = list(dict.fromkeys(_check_named(subject, m, why, have_data, have_images)
                                for m in method_list(methods)))
    refused = [m for m in chosen if m in why]
    if refused and len(refused) == len(chosen):
        raise _refusal(subject, refused[0], why)
    return [m for m in chosen if m not in why], _grouped(subject, refused, why, "skipped, ")


def _grouped(subject: Subject, methods: list[str], why: dict[str, str], verb: str
             ) -> list[str]:
    """One note per reason: 'attention, rollout: skipped, resnet20 has no attention ...'."""
    by_reason: dict[str, list[str]] = {}
    for m in methods:
        by_reason.setdefault(why[m], []).append(m)
    return [f"{', '.join(ms)}: {verb}{subject.name} {reason}"
            for reason, ms in by_reason.items()]


def _every_applicable(subject: Subject, why: dict[str, str], have_data: bool,
                      have_images: bool, every: bool) -> tuple[list[str], list[str]]:
    notes = []
    chosen = [m for m in METHODS if m not in why and (every or m not in NAMED_ONLY)]
    later = [m for m in NAMED_ONLY if m not in why]
    if later and not every:
        notes.append(f"{', '.join(later)}: not run unless named (or with 'all')")
    if not have_data:
        notes += [f"{m}: skipped, it needs a dataset (data=...)" for m in DATA_METHODS
                  if m in chosen]
        chosen = [m for m in chosen if m not in DATA_METHODS]
    if not have_images:
        skipped = [m for m in chosen if m in IMAGE_METHODS]
        if skipped:
            notes.append(f"{', '.join(skipped)}: skipped, no images (give images or "
                         "a dataset)")
        chosen = [m for m in chosen if m not in skipped]
    notes += _grouped(subject, [m for m in METHODS if m in why], why, "does not apply, ")
    return chosen, notes


def _check_named(subject: Subject, name: str, why: dict[str, str], have_data: bool,
                 have_images: bool) -> str:
    """The canonical name of a method asked for by name, or why it cannot run with the
    inputs given. Whether it applies to the model is the caller's question."""
    c = canonical(name)
    if c not in METHODS:
        raise ExplainError(f"unknown method {name!r}; choose among {', '.join(METHODS)} "
                           f"or 'all' (for {subject.name}: "
                           f"{', '.join(m for m in METHODS if m not in why)})")
    if c in why:
        return c
    if c in DATA_METHODS and not have_data:
        raise ExplainError(f"{c} needs a dataset: pass data= (`--data fashion-mnist`, "
                           "a folder of class subfolders, or a CSV)")
    if c in IMAGE_METHODS and not have_images:
        raise ExplainError(f"{c} needs images: give image files, 'skimage:coffee', or "
                           "a dataset to take examples from")
    return c


def _refusal(subject: Subject, method: str, why: dict[str, str]) -> ExplainError:
    """The error for a method that does not apply, when it is all that was asked for."""
    if method == "gradcam":
        default_cam_layer(subject)          # raises, saying why and what works
    usable = ", ".join(m for m in METHODS if m not in why)
    return ExplainError(f"{method} does not apply to {subject.name}: it {why[method]}; "
                        f"methods that do: {usable}")
