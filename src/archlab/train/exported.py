"""Running a model that `archlab export` wrote: an ONNX file through onnxruntime, with the
preprocessing recorded beside it, so that `predict` feeds it what the run was fed.

An export is a model file and a JSON sidecar (model.onnx + model.preprocess.json); the ONNX
file also holds the sidecar's essentials in its metadata_props, so a file that travelled
alone still says how to feed it. onnx and onnxruntime are an optional extra:
pip install 'archlab[export]'.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from archlab.models.pretrained_cfg import check_cfg, preprocess_of

EXPORT_FORMAT = "archlab-export/1"
METADATA_KEY = "archlab_export"       # the ONNX metadata_props entry
EXTRA = "pip install 'archlab[export]'"


def need(*modules: str, what: str = "exporting to ONNX") -> None:
    """Import `modules` or fail with one line saying what to install."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise RuntimeError(f"{what} needs {', '.join(missing)}, which {verb} not installed: "
                           f"{EXTRA}")


def sidecar_path(model_path: str | Path) -> Path:
    """model.onnx -> model.preprocess.json, model.pt2 -> model.pt2.preprocess.json (beside
    it: the two formats exported to one directory keep their own)."""
    path = Path(model_path)
    stem = path.stem if path.suffix == ".onnx" else path.name
    return path.with_name(f"{stem}.preprocess.json")


class OnnxModel(nn.Module):
    """An exported ONNX classifier as a module: float (N, C, H, W) in, logits out, run by
    onnxruntime on the CPU. A file exported for a fixed batch runs a larger one in pieces."""

    exported = True   # evaluate/predict run it as it is (no precision, layout or folding)

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        need("onnxruntime", what="running an exported ONNX model")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.input_shape = tuple(inp.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.batch or len(x)
        outs = []
        for i in range(0, len(x), step):
            chunk = np.ascontiguousarray(x[i:i + step].detach().float().cpu().numpy())
            outs.append(torch.from_numpy(
                self.session.run(None, {self.input_name: chunk})[0]))
        return torch.cat(outs).to(x.device)


def read_record(model_path: str | Path) -> dict[str, Any]:
    """What an export recorded about its model: the sidecar, else the ONNX metadata."""
    path = Path(model_path)
    side = sidecar_path(path)
    if side.is_file():
        try:
            record = json.loads(side.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{side} is not valid JSON ({e}): export the model again") from None
    elif path.suffix == ".onnx":
        need("onnx", what="reading an exported ONNX model's metadata")
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                 .metadata_props}
        if METADATA_KEY not in props:
            raise ValueError(f"{path} was not exported by archlab (no {side.name} beside it, "
                             f"no {METADATA_KEY} in its metadata): it does not say how to "
                             "feed it; export it with `archlab export RUN`")
        record = json.loads(props[METADATA_KEY])
    else:
        raise FileNotFoundError(f"no {side.name} beside {path}: export it with "
                                "`archlab export RUN`")
    if record.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}'s record is of format {record.get('format')!r}, not "
                         f"{EXPORT_FORMAT!r}")
    return record


def load_onnx(path: str | Path) -> tuple[OnnxModel, dict[str, Any]]:
    """(module, info in load_trained's form) of an ONNX file archlab exported."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file {path}")
    record = read_record(path)
    cfg = check_cfg(record["pretrained_cfg"], f"{path}'s pretrained_cfg")
    model = OnnxModel(path)
    model.pretrained_cfg = cfg
    info = {"model": record.get("model"), "model_kwargs": record.get("model_kwargs", {}),
            "classes": cfg.get("classes"), "preprocess": preprocess_of(cfg),
            "dataset": record.get("dataset"), "exported": str(path)}
    return model, info
