"""`archlab convert`: a peer's checkpoint file into an archlab safetensors file, the
architecture found by trying the registered ones (weights.py does the renaming), the
preprocessing its weights expect recorded beside them (pretrained_cfg.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from archlab.models.pretrained_cfg import (cfg_from_metadata, imagenet_classes, loaded_cfg,
                                           to_metadata)
from archlab.models.registry import create_model, list_models, model_card
from archlab.models.weights import (CheckpointError, LoadReport, convert_state_dict,
                                    guess_num_classes, normalize_source, read_state_dict,
                                    load_state_dict, save_state_dict)


def identify_model(state_dict: dict[str, torch.Tensor], source: str | None = None
                   ) -> str:
    """The registered name whose architecture a peer's state dict fits exactly."""
    source = normalize_source(source)
    candidates = [n for n in list_models()
                  if source in (None, "archlab") or source in model_card(n).peers]
    for name in candidates:
        with torch.device("meta"):
            model = create_model(name)
        try:
            convert_state_dict(model, state_dict, source)
        except (CheckpointError, KeyError, RuntimeError, ValueError):
            continue
        return name
    raise CheckpointError(
        f"no registered model fits this {source or ''} checkpoint exactly; "
        "name it with --model")


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, model_name: str | None = None,
                 source: str | None = None, num_classes: int | None = None
                 ) -> tuple[Path, str, LoadReport]:
    """Convert a peer's checkpoint file into an archlab safetensors file that records the
    architecture and the preprocessing its weights expect (`pretrained_cfg`: the file's own
    record when it has one, e.g. a run's, else the card's)."""
    state_dict, metadata = read_state_dict(src)
    source = normalize_source(source) or metadata.get("source_layout")
    name = model_name or metadata.get("archlab_model") or identify_model(state_dict, source)
    # A file archlab wrote says how its network was built (channels, small-input stem, ...).
    kwargs = _built_with(metadata) if name == metadata.get("archlab_model") else {}
    if num_classes is None:
        num_classes = kwargs.get("num_classes")
    if num_classes is None:
        with torch.device("meta"):
            num_classes = guess_num_classes(create_model(name), state_dict, source)
    model = create_model(name, **{**kwargs, "num_classes": num_classes})
    report = load_state_dict(model, state_dict, source)
    recorded = cfg_from_metadata(metadata)
    cfg = loaded_cfg(model.pretrained_cfg, num_classes, recorded, bool(report.reset))
    names = imagenet_classes() if recorded is None and report.source != "archlab" else None
    if names and num_classes == 1000 and not report.reset:   # a peer's ImageNet-1k head
        cfg["classes"] = names
    out = save_state_dict(model.state_dict(), dst,
                          metadata={"archlab_model": name, "source_layout": "archlab",
                                    "converted_from": report.source,
                                    "num_classes": str(num_classes),
                                    "model_kwargs": json.dumps(kwargs),
                                    **to_metadata(cfg)})
    return out, name, report


def _built_with(metadata: dict[str, str]) -> dict:
    """The keyword arguments an archlab file's network was built with (a run's `info`, or
    what convert recorded), or {}."""
    try:
        if "info" in metadata:
            return dict(json.loads(metadata["info"]).get("model_kwargs") or {})
        return dict(json.loads(metadata.get("model_kwargs") or "{}"))
    except (ValueError, TypeError, AttributeError):
        return {}
