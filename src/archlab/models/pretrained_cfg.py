"""What a model's weights expect of an image: its `pretrained_cfg`.

Weights are only half a model: fed with another normalisation, another side or another
crop, the same weights answer worse, silently. Every model archlab builds carries, as
`model.pretrained_cfg`, a dict in timm's vocabulary:

    {"input_size": (C, H, W), "mean": (...), "std": (...), "interpolation": "bilinear",
     "crop_pct": 0.875, "num_classes": N, "classes": [...]}   # classes where known

An image is resized (shorter side to H / crop_pct, rounded, with that interpolation), cut
to its centre H x W, scaled to [0, 1] and normalised with mean and std: the evaluation view
of torchvision's weights (256 -> 224 at 0.875) and of timm's.

It comes from the card (random weights), the peer whose weights were downloaded
('tv:IMAGENET1K_V2' brings torchvision's 232 -> 224), or the file the weights were read from:
`archlab train`, `archlab convert` and `archlab export` record it in every file they write,
under the metadata key "pretrained_cfg".
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
METADATA_KEY = "pretrained_cfg"
FIELDS = ("input_size", "mean", "std", "interpolation", "crop_pct", "num_classes", "classes")


def resize_side(image_size: int, crop_pct: float) -> int:
    """The side the shorter edge is resized to before the centre crop: size / crop_pct,
    rounded to the nearest pixel (torchvision's 299 / 0.875 -> 342; timm floors to 341)."""
    return int(math.floor(image_size / crop_pct + 0.5))


def per_channel(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """RGB statistics for a model of another channel count: their mean on every channel
    (a grey image is the mean of its colours), as the trainer does."""
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    return (sum(values) / len(values),) * in_chans


def make_cfg(image_size: int, mean: Sequence[float], std: Sequence[float], *,
             in_chans: int | None = None, interpolation: str = "bilinear",
             crop_pct: float = 0.875, num_classes: int | None = None,
             classes: Sequence[str] | None = None) -> dict[str, Any]:
    """A checked pretrained_cfg; `in_chans` (default: len(mean)) adapts the statistics."""
    in_chans = int(in_chans or len(mean))
    cfg = {"input_size": (in_chans, int(image_size), int(image_size)),
           "mean": per_channel(mean, in_chans), "std": per_channel(std, in_chans),
           "interpolation": interpolation, "crop_pct": float(crop_pct)}
    if num_classes is not None:
        cfg["num_classes"] = int(num_classes)
    if classes:
        cfg["classes"] = [str(c) for c in classes]
    return check_cfg(cfg)


def check_cfg(cfg: Mapping[str, Any], where: str = "pretrained_cfg") -> dict[str, Any]:
    """`cfg` with tuples where timm has them, or a ValueError naming the bad field."""
    missing = [k for k in ("input_size", "mean", "std") if k not in cfg]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}; it needs input_size (C, H, W), "
                         "mean and std")
    out = {k: cfg[k] for k in FIELDS if cfg.get(k) is not None}
    size = tuple(int(v) for v in cfg["input_size"])
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"{where}: input_size must be (C, H, W) of positive sides, got "
                         f"{cfg['input_size']}")
    out["input_size"] = size
    for key in ("mean", "std"):
        values = tuple(float(v) for v in cfg[key])
        if len(values) != size[0]:
            raise ValueError(f"{where}: {key} has {len(values)} values for {size[0]} channels")
        out[key] = values
    if any(s <= 0 for s in out["std"]):
        raise ValueError(f"{where}: std must be positive, got {out['std']}")
    out.setdefault("interpolation", "bilinear")
    out.setdefault("crop_pct", 0.875)
    if out["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"{where}: interpolation {out['interpolation']!r} is not one of "
                         f"{', '.join(INTERPOLATIONS)}")
    out["crop_pct"] = float(out["crop_pct"])
    if not 0 < out["crop_pct"] <= 1:
        raise ValueError(f"{where}: crop_pct must be in (0, 1], got {out['crop_pct']}")
    if "classes" in out and "num_classes" in out and len(out["classes"]) != out["num_classes"]:
        raise ValueError(f"{where}: {len(out['classes'])} class names for "
                         f"{out['num_classes']} classes")
    return out


def card_cfg(card: Any, num_classes: int | None = None) -> dict[str, Any]:
    """The card's preprocessing (a built model's card: its input_size has the model's
    channels and side)."""
    c, size, _ = card.input_size
    return make_cfg(size, card.mean, card.std, in_chans=c, interpolation=card.interpolation,
                    crop_pct=card.crop_pct, num_classes=num_classes)


def cfg_from_run(info: Mapping[str, Any]) -> dict[str, Any]:
    """The pretrained_cfg of a run's `info` (what `archlab train` stores with its weights)."""
    pre = info.get("preprocess") or {}
    if "image_size" not in pre:
        raise ValueError("the run's info holds no preprocessing (image_size, mean, std)")
    classes = info.get("classes")
    num_classes = (info.get("model_kwargs") or {}).get("num_classes") or (
        len(classes) if classes else None)
    return make_cfg(pre["image_size"], pre["mean"], pre["std"], in_chans=pre.get("in_chans"),
                    interpolation=pre.get("interpolation", "bilinear"),
                    crop_pct=pre.get("crop_pct", 0.875), num_classes=num_classes,
                    classes=classes)


def preprocess_of(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run-style preprocessing dict (image_size, mean, std, crop_pct, interpolation,
    in_chans) that archlab's evaluation and prediction read, from a pretrained_cfg."""
    c, size, _ = cfg["input_size"]
    return {"image_size": int(size), "mean": list(cfg["mean"]), "std": list(cfg["std"]),
            "crop_pct": float(cfg.get("crop_pct", 0.875)),
            "interpolation": cfg.get("interpolation", "bilinear"), "in_chans": int(c)}


def cfg_from_metadata(metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """The pretrained_cfg a safetensors file records (archlab convert/export), or derived
    from a run's `info` (archlab train); None when the file records neither."""
    try:
        if METADATA_KEY in metadata:
            return check_cfg(json.loads(metadata[METADATA_KEY]), "the file's pretrained_cfg")
        if "info" in metadata:
            return cfg_from_run(json.loads(metadata["info"]))
    except (ValueError, TypeError, KeyError):  # a foreign or damaged record: fall back
        return None
    return None


def to_metadata(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The metadata entry that records `cfg` in a safetensors (or ONNX) file."""
    return {METADATA_KEY: json.dumps(as_json(cfg))}


def as_json(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def imagenet_classes() -> list[str] | None:
    """ImageNet-1k's class names, as torchvision ships them with its weight descriptions
    (nothing is downloaded)."""
    try:
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:  # noqa: BLE001  (names are a convenience; indices still work)
        return None


def peer_cfg(source: str, peer_name: str, tag: str, base: Mapping[str, Any]
             ) -> dict[str, Any]:
    """The preprocessing of a peer's named weights ('tv:IMAGENET1K_V2' -> torchvision's
    transforms for them; 'timm:augreg_in21k' -> timm's pretrained_cfg), on the model's
    channels; `base` (the card's) fills what the peer does not say."""
    in_chans = base["input_size"][0]
    if source == "torchvision":
        import torchvision

        weights = torchvision.models.get_model_weights(peer_name)
        chosen = weights[tag] if tag else weights.DEFAULT
        t = chosen.transforms()
        crop, resize = t.crop_size[0], t.resize_size[0]
        categories = chosen.meta.get("categories")
        return make_cfg(crop, t.mean, t.std, in_chans=in_chans,
                        interpolation=t.interpolation.value, crop_pct=crop / resize,
                        num_classes=len(categories) if categories else None,
                        classes=categories)
    if source == "timm":
        import timm

        p = timm.models.get_pretrained_cfg(f"{peer_name}.{tag}" if tag else peer_name)
        num_classes = getattr(p, "num_classes", None)
        return make_cfg(p.input_size[-1], p.mean, p.std, in_chans=in_chans,
                        interpolation=p.interpolation if p.interpolation in INTERPOLATIONS
                        else "bicubic", crop_pct=p.crop_pct or base["crop_pct"],
                        num_classes=num_classes,
                        classes=imagenet_classes() if num_classes == 1000 else None)
    if source == "pretrainedmodels":
        import pretrainedmodels

        p = pretrainedmodels.pretrained_settings[peer_name][tag or "imagenet"]
        # The Caffe ports read 0..255 in BGR order minus a mean (std 1): on archlab's 0..1
        # RGB tensors that is mean/255 and std 1/255, in RGB order, as the download turned
        # the first convolution's channels round (weights.py).
        order = -1 if p["input_space"] == "BGR" else 1
        scale = p["input_range"][1]
        return make_cfg(p["input_size"][-1], [m / scale for m in p["mean"]][::order],
                        [v / scale for v in p["std"]][::order], in_chans=in_chans,
                        crop_pct=base["crop_pct"], num_classes=p["num_classes"],
                        classes=imagenet_classes() if p["num_classes"] == 1000 else None)
    return dict(base)


def loaded_cfg(base: Mapping[str, Any], num_classes: int, recorded: Mapping[str, Any] | None,
               classifier_reset: bool) -> dict[str, Any]:
    """The pretrained_cfg of a model whose weights were loaded: what their source recorded
    (else the card's, `base`) on the model's channels, with the class names dropped when
    the classifier was reset for another number of classes."""
    cfg = dict(recorded or base)
    if classifier_reset or cfg.get("num_classes", num_classes) != num_classes:
        cfg.pop("classes", None)
    cfg["num_classes"] = num_classes
    c = base["input_size"][0]
    if cfg["input_size"][0] != c:   # weights folded onto other channels (weights.py)
        cfg["input_size"] = (c, *cfg["input_size"][1:])
        cfg["mean"], cfg["std"] = per_channel(cfg["mean"], c), per_channel(cfg["std"], c)
    return check_cfg(cfg)
