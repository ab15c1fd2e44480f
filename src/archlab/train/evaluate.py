"""Using a trained model: `evaluate` it on a dataset, `predict` the classes of images.

A model trained by archlab is saved with what it takes to use it (architecture, classes,
preprocessing), so `load_trained(path)` rebuilds it from a run directory or a
model.safetensors file alone, and both functions accept such a path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from archlab.data import (DEFAULT_MAX_PIXELS, BatchPipeline, ImageData, ImageFileError,
                          Issues, eval_transform, evaluation_split, is_image_name, load_dataset,
                          make_loader, open_image, to_image_mode)
from archlab.models import CheckpointError
from archlab.models.pretrained_cfg import cfg_from_run, preprocess_of
from archlab.train import finetune
from archlab.train.checkpoint import read_model
from archlab.analysis.speed import Choice, Settings
from archlab.train.device import inference_settings, resolve_device
from archlab.train.eval_loop import eval_pass, run_eval
from archlab.train.exported import load_onnx
from archlab.train.losses import split_output
from archlab.train.metrics import Metrics
from archlab.train.progress import ProgressBar
from archlab.train.tta import (DEFAULT_CROP_PCT, enlarged_side, parse_tta, run_eval_tta,
                               view_probs)


def load_trained(path: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, info) from a run directory or a file `archlab train` wrote."""
    weights, info = read_model(path)
    name = info.get("model")
    if not name:
        raise CheckpointError(f"{path} holds a model built outside the registry; build it "
                              "yourself, load the weights and pass the module")
    model = finetune.rebuild(info)   # with its transfer head when the run fine-tuned
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit {name} built with "
                              f"{info['model_kwargs']} ({str(e).splitlines()[0]})") from None
    model.pretrained_cfg = cfg_from_run(info)   # the run's preprocessing, not the card's
    return model.to(resolve_device(str(device))).eval(), info


def _resolve_model(model, device, preprocess) -> tuple[nn.Module, dict[str, Any]]:
    if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
        return load_onnx(model)   # `archlab export`'s, with its recorded preprocessing
    if isinstance(model, (str, Path)):
        return load_trained(model, device)
    cfg = getattr(model, "pretrained_cfg", None)
    if preprocess is None and isinstance(cfg, dict):   # what create_model attached
        preprocess = {**preprocess_of(cfg), "classes": cfg.get("classes")}
    if preprocess is None:
        raise ValueError("a bare module needs `preprocess` (image_size, mean, std, crop_pct, "
                         "classes); or pass the path of a run that archlab trained")
    info = {"preprocess": dict(preprocess), "classes": preprocess.get("classes")}
    return model.to(resolve_device(str(device))).eval(), info


def _settings(model: nn.Module, device: torch.device, batch: int, size: int, in_chans: int,
              batches: int, precision: str) -> Choice:
    """The speed settings of an evaluation (device.inference_settings); an exported model
    runs as it was exported."""
    if getattr(model, "exported", False):
        return Choice(Settings(), reason="an exported model runs as exported")
    return inference_settings(model, device, batch, size, in_chans, batches, precision)


@dataclass
class Evaluation:
    metrics: Metrics
    data: str
    issues: Issues = field(default_factory=Issues)
    tta: str | None = None            # the test-time view spec (train/tta.py), None: plain
    views: int = 1                    # how many views of each image were averaged
    speed: str = ""                   # the settings it ran in, and how they were chosen


def evaluate(model: nn.Module | str | Path, data: ImageData | str, *, split: str | None = None,
             batch_size: int = 256, device: str = "auto", preprocess: dict | None = None,
             precision: str = "auto", workers: int | None = None, strict: bool = False,
             root: str | Path | None = None, progress: bool = False,
             tta: str | Sequence[str] | None = None, tta_beta: float | None = None,
             tta_crop_from: str = "resize", tta_seed: int = 0) -> Evaluation:
    """Accuracy, top-5, loss, per-class accuracy and the confusion matrix of `model` (a
    trained run's path, or a module with `preprocess`) on `data` (an ImageData or a spec;
    `split` defaults to 'test' where the source has one).

    `tta` averages the softmax of several views of each image: 'flip', 'shift',
    'five_crop', 'ten_crop', 'aug:N' or a '+' of them (see archlab.train.tta); `tta_beta`
    blends the plain view in as fastai does, `tta_crop_from` ('resize' or 'pad') says how
    images held in memory are enlarged for the crops. `precision` (fp32, bf16, fp16 or
    auto) and the memory layout are chosen as for training, with batch norm folded
    (analysis/speed.py); `Evaluation.speed` says what ran."""
    dev = resolve_device(device)
    model, info = _resolve_model(model, dev, preprocess)
    pre = info["preprocess"]
    classes = info.get("classes")
    if isinstance(data, str):
        data = load_dataset(data, split or evaluation_split(data), classes=classes,
                            in_chans=pre.get("in_chans"), strict=strict, root=root)
    if classes is not None and data.classes != list(classes):
        raise ValueError(f"the data's classes {data.classes} are not the model's {classes}")
    size, crop_pct = pre["image_size"], pre.get("crop_pct", 0.875)
    spec = parse_tta(tta) if tta else None
    # Crops of image files come from the image the plain view is the centre of (AlexNet's
    # 224 of 256): load that whole; tta_views cuts the plain view back out of it.
    side = size
    if spec is not None and spec.crops and not data.in_memory and crop_pct < 1:
        side = enlarged_side(size, crop_pct)
    in_chans = pre.get("in_chans", 3)
    steps = -(-len(data) // batch_size) * (spec.count(data.hflip) if spec is not None else 1)
    choice = _settings(model, dev, batch_size, side, in_chans, steps, precision)
    s = choice.settings
    model = s.prepare(model, "infer", torch.randn(2, in_chans, side, side, device=dev))
    pipeline = BatchPipeline(side, pre["mean"], pre["std"], None, data.in_memory,
                             channels_last=s.channels_last)
    transform = None if data.in_memory else eval_transform(
        side, crop_pct if side == size else 1.0, pre.get("interpolation", "bilinear"))
    loader = make_loader(data, batch_size, pipeline, transform=transform, device=dev,
                         shuffle=False, drop_last=False, workers=workers, strict=strict)
    bar = ProgressBar(len(loader), "eval" if spec is None else f"eval, TTA {spec}",
                      enabled=progress)
    if spec is None:
        metrics = run_eval(model, loader, data.num_classes, data.classes, dev, s.precision,
                           bar)
    else:
        metrics = run_eval_tta(model, loader, data.num_classes, data.classes, spec,
                               data.hflip, size, beta=tta_beta, crop_from=tta_crop_from,
                               crop_pct=crop_pct if side != size else DEFAULT_CROP_PCT,
                               precision=s.precision, seed=tta_seed, progress=bar)
    bar.close()
    issues = Issues()
    issues.extend(data.issues)
    issues.extend(loader.issues)
    return Evaluation(metrics, data.spec.get("spec", data.name), issues,
                      str(spec) if spec is not None else None,
                      spec.count(data.hflip) if spec is not None else 1, choice.describe())


def evaluate_tta(model: torch.nn.Module, preprocess: dict[str, Any], data, views: list[str],
                 device: torch.device, batch_size: int = 256, precision: str = "fp32",
                 workers: int | None = None):
    """(metrics, TTA metrics or None) of `model` on `data` in one pass: the plain view's
    logits give the first, the mean of the views' softmax probabilities the second. Both
    hold every image's predicted and true class, in the order of `data` (the loader does
    not shuffle)."""
    size = preprocess["image_size"]
    pipeline = BatchPipeline(size, preprocess["mean"], preprocess["std"], None, data.in_memory)
    transform = None if data.in_memory else eval_transform(size, preprocess.get("crop_pct", 0.875))
    loader = make_loader(data, batch_size, pipeline, transform=transform, device=device,
                         shuffle=False, drop_last=False, workers=workers)
    spec = parse_tta(views)

    def probs_of(x: torch.Tensor):
        # aug:N views draw from seed 0 again for every batch (what the study measured).
        return view_probs(model, x, spec, data.hflip, precision=precision, size=size)

    return eval_pass(model, loader, data.num_classes, data.classes, device, precision,
                     probs_of=probs_of if views else None, keep_predictions=True)


def _expand(images: Iterable) -> list:
    out = []
    for item in images:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            found = sorted(p for p in Path(item).rglob("*") if p.is_file() and is_image_name(p))
            if not found:
                raise FileNotFoundError(f"{item} holds no image files")
            out += [str(p) for p in found]
        else:
            out.append(item)
    return out


@torch.no_grad()
def predict(model: nn.Module | str | Path, images: Sequence | str | Path, *, top_k: int = 5,
            batch_size: int = 64, device: str = "auto", preprocess: dict | None = None,
            max_pixels: int | None = None, precision: str = "auto") -> list[dict[str, Any]]:
    """The top-k classes, with probabilities, of image files, folders of them, or PIL images.

    Returns one dict per image: {"file", "top": [{"class", "index", "prob"}, ...]} or, for
    a file that cannot be decoded, {"file", "error"} (the others are still classified).
    The speed settings are chosen as `evaluate` chooses them.
    """
    dev = resolve_device(device)
    model, info = _resolve_model(model, dev, preprocess)
    pre = info["preprocess"]
    classes = info.get("classes")
    if isinstance(images, (str, Path)):
        images = [images]
    items = _expand(images)
    mode = "L" if pre.get("in_chans", 3) == 1 else "RGB"
    transform = eval_transform(pre["image_size"], pre.get("crop_pct", 0.875),
                               pre.get("interpolation", "bilinear"))
    size, in_chans = pre["image_size"], pre.get("in_chans", 3)
    s = _settings(model, dev, batch_size, size, in_chans, -(-len(items) // batch_size),
                  precision).settings
    model = s.prepare(model, "infer", torch.randn(2, in_chans, size, size, device=dev))
    pipeline = BatchPipeline(size, pre["mean"], pre["std"], None, False,
                             channels_last=s.channels_last)
    results: list[dict[str, Any]] = [{} for _ in items]
    batch, where = [], []

    def flush() -> None:
        if not batch:
            return
        x, _ = pipeline(torch.stack(batch).to(dev), torch.zeros(len(batch), dtype=torch.long))
        with s.autocast(dev.type):
            logits, _ = split_output(model(x))
        probs = logits.float().softmax(1).cpu()
        k = min(top_k, probs.shape[1])
        p, idx = probs.topk(k, dim=1)
        for row, i in enumerate(where):
            results[i]["top"] = [
                {"class": classes[j] if classes else str(j), "index": int(j),
                 "prob": float(q)} for q, j in zip(p[row].tolist(), idx[row].tolist())]
        batch.clear()
        where.clear()

    for i, item in enumerate(items):
        name = str(item) if isinstance(item, (str, Path)) else f"<image {i}>"
        results[i]["file"] = name
        try:
            if isinstance(item, (str, Path)):
                img, note = open_image(item, mode, max_pixels or DEFAULT_MAX_PIXELS)
            else:
                img, note = to_image_mode(item, mode)
        except ImageFileError as e:
            results[i]["error"] = e.reason
            continue
        if note:
            results[i]["note"] = note
        batch.append(transform(img))
        where.append(i)
        if len(batch) >= batch_size:
            flush()
    flush()
    return results
