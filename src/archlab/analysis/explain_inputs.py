"""What `archlab explain` looks at: a network with what it takes to feed it, and its images.

A `Subject` is a model in eval mode together with its preprocessing (side, mean, std, crop)
and its class names. `load_subject` builds one from a registered name (random weights, or
`pretrained=PATH`), a model file or run directory left by `archlab train`, a safetensors
file left by `archlab convert`, or a module. `load_images` turns files, folders, arrays,
PIL images and scikit-image's sample photos ('skimage:coffee') into what the model sees;
`sample_dataset` and `dataset_batches` do the same for a dataset.

Every bad input is refused with a message that names it and says what would work.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# scikit-image's sample photographs, bundled with the package (nothing is downloaded).
SKIMAGE_PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "hubble_deep_field",
                  "immunohistochemistry", "logo", "moon", "page", "retina", "rocket")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".pnm")


class ExplainError(ValueError):
    """An input `explain` cannot use; the message names it and lists what would work."""


# --------------------------------------------------------------------------------------
# The subject: a model and how to feed it
# --------------------------------------------------------------------------------------


@dataclass
class Subject:
    """A model in eval mode, with the preprocessing and class names that go with it."""

    model: nn.Module
    name: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    classes: list[str] | None = None
    source: str = "random weights"       # where the weights came from
    dataset: str | None = None           # the data it was trained on, when known
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def in_chans(self) -> int:
        return int(getattr(self.model, "in_chans", len(self.mean)))

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0))

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def has_attention(self) -> bool:
        return hasattr(self.model, "forward_attention")

    def class_name(self, index: int) -> str:
        return self.classes[index] if self.classes else str(index)

    def class_index(self, target: int | str) -> int:
        """A class given by index or name, checked against the model's outputs."""
        if isinstance(target, str) and not target.lstrip("-").isdigit():
            if self.classes and target in self.classes:
                return self.classes.index(target)
            known = self.classes or []
            close = difflib.get_close_matches(target, known, n=3, cutoff=0.5)
            hint = (f" closest: {', '.join(close)}." if close
                    else f" classes: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}."
                    if known else " this model has no class names: give an index.")
            raise ExplainError(f"target class {target!r} is not one of {self.name}'s classes;"
                               f"{hint}")
        index = int(target)
        if not 0 <= index < self.num_classes:
            raise ExplainError(f"target class {index} is out of range: {self.name} has "
                               f"{self.num_classes} classes (0 to {self.num_classes - 1})")
        return index

    def normalise(self, x01: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x01.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x01.device).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def to_display(self, x: torch.Tensor) -> np.ndarray:
        """Normalised (N, C, H, W) -> what the model saw, (N, H, W, C) floats in [0, 1]."""
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x01 = (x.detach() * std + mean).clamp(0, 1)
        return x01.permute(0, 2, 3, 1).float().cpu().numpy()


def _imagenet_classes(num_classes: int) -> list[str] | None:
    # torchvision ships the ImageNet-1k class names with its weight descriptions (no download).
    if num_classes != 1000:
        return None
    try:
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:  # noqa: BLE001  (names are a convenience; indices still work)
        return None


def subject_from_module(model: nn.Module, *, name: str | None = None,
                        image_size: int | None = None, classes: Sequence[str] | None = None,
                        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        crop_pct: float = 0.875, source: str = "module",
                        dataset: str | None = None) -> Subject:
    """A Subject from a built model; the rest comes from its card unless given."""
    card = getattr(model, "card", None)
    in_chans = int(getattr(model, "in_chans", 3))
    size = image_size or (card.input_size[1] if card else 224)

    def stats(given, from_card, default):
        values = tuple(given) if given is not None else (
            tuple(from_card) if from_card is not None else default)
        # A card's RGB statistics for a model built for other channel counts: their mean.
        if len(values) != in_chans:
            values = (float(np.mean(values)),) * in_chans
        return values

    mean_ = stats(mean, card.mean if card else None, (0.5,) * in_chans)
    std_ = stats(std, card.std if card else None, (0.5,) * in_chans)
    min_size = int(getattr(model, "min_input_size", 1))
    label = name or getattr(model, "model_name", type(model).__name__)
    if size < min_size:
        raise ExplainError(f"{label} takes images of at least {min_size} px; an image size of "
                           f"{size} is too small: use img_size >= {min_size}")
    classes = list(classes) if classes else _imagenet_classes(
        int(getattr(model, "num_classes", 0)))
    return Subject(model.eval(), label, int(size), mean_, std_, crop_pct, classes, source,
                   dataset)


def load_subject(spec: str | Path | nn.Module, *, pretrained: str | None = None,
                 num_classes: int | None = None, in_chans: int | None = None,
                 small_input: bool = False, img_size: int | None = None,
                 classes: Sequence[str] | None = None, device: str = "cpu") -> Subject:
    """The model to explain, from a registered name, a file or run directory, or a module.

    A name builds the architecture with random weights unless `pretrained` is a checkpoint
    path. A model.safetensors or run directory written by `archlab train` brings its own
    architecture, classes and preprocessing; a safetensors file written by `archlab convert`
    its architecture. `img_size` overrides the side images are resized to.
    """
    if isinstance(spec, nn.Module):
        return subject_from_module(spec.to(device), image_size=img_size, classes=classes)
    path = Path(spec).expanduser()
    if path.exists():
        subject = _subject_from_file(path, device)
        if img_size or classes:
            subject = subject_from_module(
                subject.model, name=subject.name, image_size=img_size,
                classes=classes or subject.classes, mean=subject.mean, std=subject.std,
                crop_pct=subject.crop_pct, source=subject.source, dataset=subject.dataset)
        return subject
    from archlab.models.registry import create_model, list_models

    text = str(spec)
    if text not in list_models():
        looks_like_path = any(c in text for c in "/\\") or path.suffix in (
            ".safetensors", ".pt", ".pth", ".bin")
        if looks_like_path:
            raise FileNotFoundError(f"no checkpoint file or run directory {text!r}; give a "
                                    "model.safetensors or run directory left by `archlab "
                                    "train`, or a registered model name (`archlab models`)")
        close = difflib.get_close_matches(text, list_models(), n=5, cutoff=0.5)
        raise ExplainError(f"{text!r} is neither a file or run directory nor a registered "
                           "model." + (f" Closest names: {', '.join(close)}." if close else "")
                           + " `archlab models` lists them all.")
    model = create_model(text, num_classes=num_classes or 1000, in_chans=in_chans or 3,
                         small_input=small_input, pretrained=pretrained).to(device)
    return subject_from_module(model, image_size=img_size, classes=classes,
                               source=str(pretrained) if pretrained else "random weights")


def _subject_from_file(path: Path, device: str) -> Subject:
    from archlab.models.weights import CheckpointError, load_state_dict, read_state_dict
    from archlab.models.registry import create_model
    from archlab.train import checkpoint as ckpt

    if path.is_dir():
        if any((path / f).is_file() for f in (ckpt.MODEL_FILE, ckpt.BEST_FILE)):
            weights, info = ckpt.read_model(path)
        elif ckpt.has_checkpoint(path):
            # A run that has checkpointed but has not written its model file yet.
            state, weights, _ = ckpt.load_checkpoint(path)
            info = {"model": state["model"]["name"], "model_kwargs": state["model"]["kwargs"],
                    "classes": state.get("classes"), "preprocess": state.get("preprocess"),
                    "dataset": state.get("data", {}).get("spec")}
        else:
            raise FileNotFoundError(f"{path} is a directory but no run directory: it holds "
                                    f"no {ckpt.MODEL_FILE} or {ckpt.STATE_FILE}")
    else:
        weights, meta = read_state_dict(path)
        info = None
        if "info" in meta:                  # written by `archlab train`
            try:
                info = json.loads(meta["info"])
            except ValueError:
                raise CheckpointError(f"{path}: its metadata is corrupt") from None
    if info is not None:
        if not info.get("model"):
            raise CheckpointError(f"{path} holds a model built outside the registry; build it, "
                                  "load the weights and pass the module to explain()")
        model = create_model(info["model"], **info["model_kwargs"])
        try:
            model.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: the weights do not fit {info['model']} "
                                  f"({str(e).splitlines()[0]})") from None
        pre = info.get("preprocess") or {}
        return subject_from_module(
            model.to(device), image_size=pre.get("image_size"), classes=info.get("classes"),
            mean=pre.get("mean"), std=pre.get("std"), crop_pct=pre.get("crop_pct", 0.875),
            source=str(path), dataset=info.get("dataset"))
    # A bare safetensors file: `archlab convert` records the architecture in its metadata.
    name = meta.get("archlab_model")
    if not name:
        raise CheckpointError(f"{path} holds weights but does not say which architecture they "
                              "belong to: give the model name and the weights, e.g. "
                              f"`archlab explain resnet50 --pretrained {path}`")
    num_classes = int(meta.get("num_classes") or _count_classes(weights))
    model = create_model(name, num_classes=num_classes, in_chans=_count_in_chans(weights))
    load_state_dict(model, weights, meta.get("source_layout"))
    return subject_from_module(model.to(device), source=str(path))


def _count_classes(state_dict: dict[str, torch.Tensor]) -> int:
    # The classifier is the last 2-D weight of the file.
    weights = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 2]
    return int(weights[-1].shape[0]) if weights else 1000


def _count_in_chans(state_dict: dict[str, torch.Tensor]) -> int:
    convs = [v for k, v in state_dict.items() if k.endswith("weight") and v.ndim == 4]
    return int(convs[0].shape[1]) if convs else 3


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


@dataclass
class InputImage:
    """One image as the model takes it, and as a person should see it."""

    name: str
    tensor: torch.Tensor          # (1, C, H, W), normalised, on the model's device
    display: np.ndarray           # (H, W, C) floats in [0, 1]: the same pixels, un-normalised
    label: int | None = None      # the true class, for dataset images


def _pil_from_array(a: np.ndarray, name: str):
    from PIL import Image

    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)                       # (C, H, W) -> (H, W, C)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or min(a.shape[:2]) < 1:
        raise ExplainError(f"image {name} has shape {a.shape}, which is no image: give "
                           "(H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA pixels")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = a.astype(np.float64)
        scale = 255.0 if a.size and np.nanmax(a) <= 1.0 else 1.0
        a = np.clip(np.nan_to_num(a) * scale, 0, 255).round().astype(np.uint8)
    return Image.fromarray(a)


def _open(item: Any, name: str, mode: str):
    """Any accepted image input -> a PIL image in `mode` ('L' or 'RGB')."""
    from PIL import Image

    if isinstance(item, Image.Image):
        img = item
    elif isinstance(item, torch.Tensor):
        img = _pil_from_array(item.detach().cpu().numpy(), name)
    elif isinstance(item, np.ndarray):
        img = _pil_from_array(item, name)
    elif isinstance(item, str) and item.startswith("skimage:"):
        photo = item.partition(":")[2]
        if photo not in SKIMAGE_PHOTOS:
            raise ExplainError(f"no scikit-image photo {photo!r}; choose one of "
                               f"{', '.join(SKIMAGE_PHOTOS)}")
        try:
            import skimage.data
        except ImportError:
            raise ExplainError(f"{item} needs scikit-image: pip install scikit-image") from None
        img = _pil_from_array(getattr(skimage.data, photo)(), name)
    else:
        from archlab.data import open_image

        return open_image(item, mode)[0]
    if img.mode in ("RGBA", "LA", "P"):
        # Transparent pixels on white, as the data loader does, not on whatever they hide.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert(mode)


def _expand(images: Sequence[Any]) -> list[tuple[str, Any]]:
    out = []
    for i, item in enumerate(images):
        if isinstance(item, (str, Path)) and not str(item).startswith("skimage:"):
            path = Path(item).expanduser()
            if path.is_dir():
                found = sorted(p for p in path.rglob("*")
                               if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if not found:
                    raise FileNotFoundError(f"image folder {path} holds no image files "
                                            f"({', '.join(IMAGE_SUFFIXES[:5])}, ...)")
                out += [(str(p), p) for p in found]
            elif not path.exists():
                near = sorted(p.name for p in path.parent.glob("*")
                              if p.suffix.lower() in IMAGE_SUFFIXES)[:5] \
                    if path.parent.is_dir() else []
                hint = (f"; images in {path.parent}: {', '.join(near)}" if near else
                        "; give an image file, a folder of them, or a scikit-image photo "
                        f"such as skimage:{SKIMAGE_PHOTOS[4]}")
                raise FileNotFoundError(f"image {path} does not exist{hint}")
            else:
                out.append((str(path), path))
        else:
            name = item if isinstance(item, str) else f"image {i}"
            out.append((name, item))
    return out


def load_images(subject: Subject, images: Sequence[Any] | str | Path) -> list[InputImage]:
    """Files, folders, 'skimage:NAME', PIL images, arrays (H, W[, C]) or tensors, resized
    and cropped as the model was evaluated (shorter side to size / crop_pct, centre crop)."""
    from archlab.data.transforms import eval_transform

    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        images = [images]
    mode = "L" if subject.in_chans == 1 else "RGB"
    if subject.in_chans not in (1, 3):
        raise ExplainError(f"{subject.name} takes {subject.in_chans}-channel input; images "
                           "can only be read for 1 (grey) or 3 (RGB) channel models: pass "
                           "normalised tensors to the functions of archlab.analysis.explain")
    transform = eval_transform(subject.image_size, subject.crop_pct)
    out = []
    for name, item in _expand(images):
        if isinstance(item, torch.Tensor) and item.ndim == 4:
            # A ready batch of one: the caller normalised it; the model checks it.
            try:
                subject.model.check_input(item)
            except (ValueError, AttributeError) as e:
                raise ExplainError(f"image {name}: {e}") from None
            x = item[:1].to(subject.device).float()
        else:
            img = _open(item, name, mode)
            x01 = transform(img).float().div(255).unsqueeze(0).to(subject.device)
            x = subject.normalise(x01)
        out.append(InputImage(Path(name).name if isinstance(item, Path) else name, x,
                              subject.to_display(x)[0]))
    return out


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


def read_dataset(subject: Subject, data: Any, split: str | None = None):
    """An ImageData as is, or a dataset spec read for this model's channels (and classes,
    for a folder or CSV); the split defaults to 'test' where the source has one."""
    from archlab.data import dataset_splits, load_dataset

    if not isinstance(data, (str, Path)):
        return data
    spec = str(data)
    split = split or ("test" if "test" in dataset_splits(spec) else "all")
    return load_dataset(spec, split, in_chans=subject.in_chans,
                        classes=subject.classes if subject.classes and Path(spec).exists()
                        else None)


def sample_dataset(subject: Subject, data: Any, split: str | None = None,
                   limit: int | None = None, seed: int = 0):
    """(ImageData, original indices): `data` (an ImageData or a dataset spec) read for this
    model's classes and channels, with `limit` images drawn at random (sorted) when given."""
    from archlab.data import ImageData

    data = read_dataset(subject, data, split)
    if not isinstance(data, ImageData):
        raise ExplainError(f"data must be a dataset name, a folder, a CSV or an ImageData, "
                           f"not {type(data).__name__}")
    if data.in_chans != subject.in_chans:
        raise ExplainError(f"{data.name} has {data.in_chans}-channel images but {subject.name} "
                           f"takes {subject.in_chans}")
    indices = torch.arange(len(data))
    if limit and len(data) > limit:
        g = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(data), generator=g)[:limit].sort().values
        data = data.subset(indices)
    return data, indices


def dataset_batches(subject: Subject, data, batch_size: int = 128, issues: list | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(normalised images, labels, positions in `data`) batches, in order. In-memory images
    are resized as the trainer resizes them; files are decoded as `load_images` does, and a
    file that cannot be decoded is skipped (its message appended to `issues`)."""
    from archlab.data import ImageFileError, open_image
    from archlab.data.transforms import eval_transform

    device = subject.device
    if data.in_memory:
        for start in range(0, len(data), batch_size):
            pos = torch.arange(start, min(start + batch_size, len(data)))
            x = data.images[pos].to(device).float().div_(255)
            if x.shape[-1] != subject.image_size or x.shape[-2] != subject.image_size:
                x = F.interpolate(x, size=(subject.image_size,) * 2, mode="bilinear",
                                  antialias=True, align_corners=False).clamp_(0, 1)
            yield subject.normalise(x), data.targets[pos].to(device), pos
        return
    transform = eval_transform(subject.image_size, subject.crop_pct)
    mode = "L" if subject.in_chans == 1 else "RGB"
    xs, pos = [], []
    for i, path in enumerate(data.files):
        try:
            img, _ = open_image(path, mode, data.max_pixels)
        except ImageFileError as e:
            if issues is not None:
                issues.append(str(e))
            continue
        xs.append(transform(img))
        pos.append(i)
        if len(xs) == batch_size:
            yield _file_batch(subject, data, xs, pos)
            xs, pos = [], []
    if xs:
        yield _file_batch(subject, data, xs, pos)


def _file_batch(subject: Subject, data, xs: list[torch.Tensor], pos: list[int]):
    p = torch.tensor(pos)
    x = torch.stack(xs).to(subject.device).float().div_(255)
    return subject.normalise(x), data.targets[p].to(subject.device), p


def dataset_examples(subject: Subject, data, count: int = 4) -> list[InputImage]:
    """`count` images of different classes: the first image of each of the first `count`
    classes met in `data`, in class order."""
    chosen: dict[int, int] = {}
    for label, pos in zip(data.targets.tolist(), range(len(data))):
        if label not in chosen:
            chosen[label] = pos
        if len(chosen) == min(count, data.num_classes):
            break
    picked = data.subset(sorted(chosen.values(), key=lambda p: data.targets[p]))
    out = []
    for x, y, _ in dataset_batches(subject, picked, batch_size=count):
        for xi, yi, disp in zip(x, y.tolist(), subject.to_display(x)):
            out.append(InputImage(f"{data.name}-{data.classes[yi]}".replace(" ", "_")
                                  .replace("/", "-"), xi[None], disp, yi))
    return out
