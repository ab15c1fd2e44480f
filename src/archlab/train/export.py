"""`archlab export`: a trained model, for use outside archlab, with its preprocessing.

    export_model("runs/resnet20-digits", "onnx")          # model.onnx + model.preprocess.json
    export_model("runs/resnet20-digits", "exported-program", dynamic_batch=True)   # .pt2

The model (a run directory, a model file `archlab train` wrote, or a safetensors file
`archlab convert` wrote) is exported in eval mode as one function, normalised float images
(N, C, H, W) -> logits. ONNX goes through torch.onnx.export's torch.export-based exporter
(dynamo=True: the one PyTorch maintains; the TorchScript exporter is deprecated and cannot
export AlexNet's adaptive pooling), 'exported-program' through torch.export.export and
torch.export.save. Preprocessing is not part of the graph (resizing and cropping are the
caller's, as for torchvision's and timm's weights): it is recorded beside the model, in
model.preprocess.json and, for ONNX, in the model's metadata_props.

Nothing is kept that was not checked: the written file is loaded back (onnxruntime, or
torch.export.load) and run on real images, the run's test images when its data can be
loaded, else scikit-image's photographs, against the PyTorch model; the largest
|difference| of a logit is reported, and above `tolerance` the files are removed and the
export refused.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from archlab._io import write_atomic
from archlab.data import (BatchPipeline, eval_transform, evaluation_split, load_dataset,
                          make_loader, transforms_for)
from archlab.models import CheckpointError, create_model, read_state_dict
from archlab.models.pretrained_cfg import as_json, preprocess_of
from archlab.train.evaluate import load_trained
from archlab.train.exported import (EXPORT_FORMAT, METADATA_KEY, OnnxModel, need,
                                    sidecar_path)
from archlab.train.losses import split_output

FORMATS = {"onnx": ".onnx", "exported-program": ".pt2"}
TOLERANCE = 1e-4
PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket", "hubble_deep_field")


class ExportError(RuntimeError):
    """An export that failed or whose file does not compute what the model computes."""


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float          # the largest |logit difference|, exported vs PyTorch
    checked_on: str              # which images
    dynamic_batch: bool
    opset: int | None = None

    def describe(self) -> str:
        return (f"max |Δlogit| {self.max_abs_diff:.1e} on {self.checked_on} "
                f"({'onnxruntime' if self.format == 'onnx' else 'torch.export.load'} "
                "vs PyTorch)")


class Logits(nn.Module):
    """The model as one function: images -> the main logits (auxiliary or distillation
    outputs of a training forward are left out)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return split_output(self.model(x))[0]


# --------------------------------------------------------------------------------------
# What to export
# --------------------------------------------------------------------------------------


def load_exportable(source: str | Path | nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on the CPU, info in load_trained's form, with `pretrained_cfg`)
    of a run directory, a file `archlab train` or `archlab convert` wrote, or a module
    archlab built."""
    if isinstance(source, nn.Module):
        cfg = getattr(source, "pretrained_cfg", None)
        if not isinstance(cfg, dict):
            raise ValueError("export needs to know how the model is fed: pass a run directory "
                             "or a module built by archlab.create_model (its pretrained_cfg)")
        return source.cpu().eval(), _info(getattr(source, "model_name", None), {}, cfg)
    path = Path(source)
    if path.is_dir():
        return _trained(path)
    if not path.is_file():
        raise FileNotFoundError(f"no run directory or model file {path}")
    _, meta = read_state_dict(path)
    if "info" in meta:
        return _trained(path)
    name = meta.get("archlab_model")
    if not name:
        raise CheckpointError(f"{path} does not say which architecture its weights belong to; "
                              "export a run directory, a model.safetensors from `archlab "
                              "train`, or a file `archlab convert` wrote")
    kwargs = json.loads(meta.get("model_kwargs") or "{}")
    kwargs["num_classes"] = int(meta.get("num_classes") or kwargs.get("num_classes", 1000))
    model = create_model(name, **kwargs, pretrained=str(path))
    return model.eval(), _info(name, kwargs, model.pretrained_cfg)


def _trained(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    model, info = load_trained(path, "cpu")
    return model, {**info, "pretrained_cfg": model.pretrained_cfg}


def _info(name: str | None, kwargs: dict, cfg: dict) -> dict[str, Any]:
    return {"model": name, "model_kwargs": kwargs, "classes": cfg.get("classes"),
            "preprocess": preprocess_of(cfg), "pretrained_cfg": cfg}


# --------------------------------------------------------------------------------------
# The images it is checked on
# --------------------------------------------------------------------------------------


def check_images(info: dict[str, Any], count: int = 16, root: str | Path | None = None
                 ) -> tuple[torch.Tensor, str]:
    """(normalised batch, what it is): the first `count` images of the run's evaluation
    split when its data can be loaded, else scikit-image's photographs at the run's size."""
    found = _dataset_images(info, count, root) if info.get("dataset") else None
    return found or _photos(info["pretrained_cfg"], count)


def _dataset_images(info: dict[str, Any], count: int, root) -> tuple[torch.Tensor, str] | None:
    spec, pre = info["dataset"], info["preprocess"]
    split = evaluation_split(spec)
    try:
        data = load_dataset(spec, split, classes=info.get("classes"),
                            in_chans=pre.get("in_chans"), root=root)
    except (OSError, ValueError, RuntimeError):   # not on this machine: the photographs
        return None
    data = data.subset(list(range(min(count, len(data)))))
    pipeline = BatchPipeline(pre["image_size"], pre["mean"], pre["std"], None, data.in_memory)
    transform = None if data.in_memory else eval_transform(
        pre["image_size"], pre.get("crop_pct", 0.875), pre.get("interpolation", "bilinear"))
    loader = make_loader(data, len(data), pipeline, transform=transform, shuffle=False,
                         drop_last=False, workers=0)
    x = next(iter(loader))[0]
    return x, f"{len(x)} {split} images of {spec}"


def _photos(cfg: dict[str, Any], count: int) -> tuple[torch.Tensor, str]:
    c, size, _ = cfg["input_size"]
    try:
        import skimage.data
        from PIL import Image
    except ImportError:   # scikit-image is a test dependency: uniform noise will do
        g = torch.Generator().manual_seed(0)
        x = torch.rand(min(count, 4), c, size, size, generator=g)
        mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
        return (x - mean) / std, f"{len(x)} random images (scikit-image is not installed)"
    transform = transforms_for(cfg)
    names = PHOTOS[:max(1, min(count, len(PHOTOS)))]
    x = torch.stack([transform(Image.fromarray(getattr(skimage.data, n)())) for n in names])
    return x, f"{len(x)} scikit-image photographs at {size} px"


# --------------------------------------------------------------------------------------
# Exporting and checking
# --------------------------------------------------------------------------------------


def export_model(source: str | Path | nn.Module, format: str = "onnx",
                 out: str | Path | None = None, *, dynamic_batch: bool = False,
                 opset: int | None = None, tolerance: float = TOLERANCE, images: int = 16,
                 root: str | Path | None = None) -> ExportResult:
    """Export `source` (a run directory or model file archlab can load) as `format` ('onnx'
    or 'exported-program') to `out` (default: beside the weights, model.onnx / model.pt2),
    with its preprocessing in a JSON sidecar; check it on `images` images and refuse it
    when a logit differs from PyTorch's by more than `tolerance`."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of "
                         f"{', '.join(FORMATS)}")
    if format == "onnx":
        need("onnx", "onnxscript", "onnxruntime")
    model, info = load_exportable(source)
    path = Path(out) if out else _default_path(source, format)
    path.parent.mkdir(parents=True, exist_ok=True)
    x, described = check_images(info, images, root)
    wrapped = Logits(model).eval()
    example = x[:2] if dynamic_batch else x[:1]
    if dynamic_batch and len(example) < 2:   # a batch of 1 would be specialised as constant
        example = example.expand(2, *example.shape[1:]).clone()
    record = _record(info, format, dynamic_batch)
    if format == "onnx":
        opset, run = _to_onnx(wrapped, example, path, dynamic_batch, opset, record)
    else:
        run = _to_program(wrapped, example, path, dynamic_batch, record)
    try:
        diff = _check(wrapped, run, x, tolerance, described)
    except ExportError:
        _remove(path)
        raise
    record.update(opset=opset, check={"images": described, "max_abs_logit_diff": diff,
                                      "tolerance": tolerance, "torch": torch.__version__})
    side = write_atomic(sidecar_path(path), json.dumps(record, indent=1))
    return ExportResult(path, side, format, diff, described, dynamic_batch, opset)


def _default_path(source, format: str) -> Path:
    if isinstance(source, nn.Module):
        return Path(f"model{FORMATS[format]}")
    path = Path(source)
    return (path / "model" if path.is_dir() else path.with_suffix("")).with_suffix(
        FORMATS[format])


def _record(info: dict[str, Any], format: str, dynamic_batch: bool) -> dict[str, Any]:
    cfg = info["pretrained_cfg"]
    c, h, w = cfg["input_size"]
    return {"format": EXPORT_FORMAT, "export_format": format, "model": info.get("model"),
            "model_kwargs": info.get("model_kwargs") or {}, "dataset": info.get("dataset"),
            "pretrained_cfg": as_json(cfg),
            "input": {"name": "image", "shape": ["batch" if dynamic_batch else 1, c, h, w],
                      "dtype": "float32", "what": "images resized, centre-cropped, scaled "
                      "to [0, 1] and normalised as pretrained_cfg says (transforms_for)"},
            "output": {"name": "logits", "what": "class scores; softmax for probabilities"},
            "dynamic_batch": dynamic_batch}


def _batch_dim(dynamic_batch: bool):
    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


def _to_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool,
             opset: int | None, record: dict) -> tuple[int, Callable]:
    log = io.StringIO()
    try:
        # The exporter reports its steps on stdout; they are kept for a failure's message.
        with contextlib.redirect_stdout(log), torch.no_grad():
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, verbose=False,
                dynamic_shapes=_batch_dim(dynamic_batch), input_names=["image"],
                output_names=["logits"])
    except Exception as e:  # noqa: BLE001  (the exporter raises many kinds)
        raise _failed("ONNX", e, dynamic_batch, log.getvalue()) from None
    program.model.metadata_props[METADATA_KEY] = json.dumps(record)
    program.save(str(path))
    opset = int(program.model.opset_imports.get("", opset or 0))
    return opset, OnnxModel(path)


def _to_program(model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool,
                record: dict) -> Callable:
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,),
                                          dynamic_shapes=_batch_dim(dynamic_batch))
    except Exception as e:  # noqa: BLE001
        raise _failed("an ExportedProgram", e, dynamic_batch, "") from None
    torch.export.save(program, str(path),
                      extra_files={"archlab.preprocess.json": json.dumps(record)})
    loaded = torch.export.load(str(path)).module()
    static = None if dynamic_batch else example.shape[0]

    def run(x: torch.Tensor) -> torch.Tensor:
        step = static or len(x)
        return torch.cat([loaded(x[i:i + step]) for i in range(0, len(x), step)])

    return run


def _failed(what: str, e: Exception, dynamic_batch: bool, log: str) -> ExportError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    hint = (" A batch dimension the model fixes cannot be dynamic: export without "
            "--dynamic-batch." if dynamic_batch and "batch" in str(e) else "")
    steps = f" (exporter: {log.strip().splitlines()[-1]})" if log.strip() else ""
    return ExportError(f"could not export to {what}: {type(e).__name__}: {first}.{hint}"
                       f"{steps}")


@torch.no_grad()
def _check(model: nn.Module, run: Callable, x: torch.Tensor, tolerance: float,
           described: str) -> float:
    """max |exported - PyTorch| over the logits of `x`; an ExportError above `tolerance`."""
    reference = model(x)
    diff = float((run(x) - reference).abs().max())
    if not diff <= tolerance:   # NaN too
        # How far float32 itself is from exact on these images: what rounding alone gives.
        exact = copy.deepcopy(model).double()(x.double())
        floor = float((reference.double() - exact).abs().max())
        raise ExportError(
            f"the exported model's logits differ from PyTorch's by up to {diff:.2e} on "
            f"{described}, more than the tolerance {tolerance:g} (PyTorch's own float32 is "
            f"{floor:.1e} from float64 on them); nothing was written. Report the model; "
            "--tolerance accepts a larger difference")
    return diff


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)
