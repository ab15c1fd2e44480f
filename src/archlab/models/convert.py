"""`archlab convert`: a peer's checkpoint file into an archlab safetensors file, the
architecture found by trying the registered ones (weights.py does the renaming)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

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
    """Convert a peer's checkpoint file into an archlab safetensors file."""
    state_dict, metadata = read_state_dict(src)
    source = normalize_source(source) or metadata.get("source_layout")
    name = model_name or metadata.get("archlab_model") or identify_model(state_dict, source)
    if num_classes is None:
        with torch.device("meta"):
            num_classes = guess_num_classes(create_model(name), state_dict, source)
    model = create_model(name, num_classes=num_classes)
    report = load_state_dict(model, state_dict, source)
    out = save_state_dict(model.state_dict(), dst,
                          metadata={"archlab_model": name, "source_layout": "archlab",
                                    "converted_from": report.source,
                                    "num_classes": str(num_classes)})
    return out, name, report
