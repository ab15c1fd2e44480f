"""The images `explain` is asked about: files, folders, arrays, PIL images and scikit-image's
sample photographs ('skimage:coffee'), turned into what the model sees.

Files are decoded by archlab.data (open_image), and every image is resized and cropped as the
model was evaluated (eval_transform), so a map is drawn over the pixels the model was given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from archlab.data import eval_transform, is_image_name, open_image, to_image_mode
from archlab.explain.subject import ExplainError, Subject

# scikit-image's sample photographs, bundled with the package (nothing is downloaded).
SKIMAGE_PHOTOS = ("astronaut", "camera", "cat", "chelsea", "coffee", "coins", "hubble_deep_field",
                  "immunohistochemistry", "logo", "moon", "page", "retina", "rocket")


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


def _skimage_photo(item: str, name: str):
    photo = item.partition(":")[2]
    if photo not in SKIMAGE_PHOTOS:
        raise ExplainError(f"no scikit-image photo {photo!r}; choose one of "
                           f"{', '.join(SKIMAGE_PHOTOS)}")
    try:
        import skimage.data
    except ImportError:
        raise ExplainError(f"{item} needs scikit-image: pip install scikit-image") from None
    return _pil_from_array(getattr(skimage.data, photo)(), name)


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
        img = _skimage_photo(item, name)
    else:
        return open_image(item, mode)[0]
    # Transparent pixels on white, as the data loader does, not on whatever they hide.
    return to_image_mode(img, mode)[0]


def _missing_image(path: Path) -> FileNotFoundError:
    near = sorted(p.name for p in path.parent.glob("*") if is_image_name(p))[:5] \
        if path.parent.is_dir() else []
    hint = (f"; images in {path.parent}: {', '.join(near)}" if near else
            "; give an image file, a folder of them, or a scikit-image photo "
            f"such as skimage:{SKIMAGE_PHOTOS[4]}")
    return FileNotFoundError(f"image {path} does not exist{hint}")


def _expand(images: Sequence[Any]) -> list[tuple[str, Any]]:
    out = []
    for i, item in enumerate(images):
        if isinstance(item, (str, Path)) and not str(item).startswith("skimage:"):
            path = Path(item).expanduser()
            if path.is_dir():
                found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p))
                if not found:
                    raise FileNotFoundError(f"image folder {path} holds no image files "
                                            "(.jpg, .jpeg, .png, .bmp, .gif, ...)")
                out += [(str(p), p) for p in found]
            elif not path.exists():
                raise _missing_image(path)
            else:
                out.append((str(path), path))
        else:
            name = item if isinstance(item, str) else f"image {i}"
            out.append((name, item))
    return out


def read_images(images: Sequence[Any] | str | Path, mode: str = "L") -> list[tuple[str, Any]]:
    """(name, PIL image in `mode`) of files, folders, 'skimage:NAME', PIL images or arrays
    (H, W[, C]), at their own size: for what looks at pixels rather than a model's input."""
    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        images = [images]
    return [(Path(name).name if isinstance(item, Path) else name, _open(item, name, mode))
            for name, item in _expand(images)]


def load_images(subject: Subject, images: Sequence[Any] | str | Path) -> list[InputImage]:
    """Files, folders, 'skimage:NAME', PIL images, arrays (H, W[, C]) or tensors, resized
    and cropped as the model was evaluated (shorter side to size / crop_pct, centre crop)."""
    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        images = [images]
    mode = "L" if subject.in_chans == 1 else "RGB"
    if subject.in_chans not in (1, 3):
        raise ExplainError(f"{subject.name} takes {subject.in_chans}-channel input; images "
                           "can only be read for 1 (grey) or 3 (RGB) channel models: pass "
                           "normalised tensors to the functions of archlab.explain")
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
