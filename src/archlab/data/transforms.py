"""Augmentation and preprocessing.

Two places run them. Images held in memory are augmented a whole batch at a time on the
training device (`BatchPipeline`), every sample with its own random draw, so that a 2-core
CPU or a GPU is never waiting for a loader. Image files are decoded, resized and cropped in
DataLoader workers (`file_transform`, torchvision v2 on each image); the per-batch part
(PCA lighting, normalisation, random erasing, mixup and cutmix) then runs on the device for
both.

The presets (`PRESETS`):

- none: the evaluation view only.
- flip: horizontal flips only: no translation, so a small network that underfits within
  its budget is not given a harder task (Fashion-MNIST's short recipe).
- basic: translation by pad-and-crop and horizontal flips (the CIFAR ResNet recipe:
  4 px of padding on 32 px images).
- alexnet: AlexNet's random crops (224 of 256: translations of up to 12.5% of the side),
  flips, and "PCA lighting": each image gets multiples of the principal components of the
  training set's RGB covariance added, with magnitudes proportional to their eigenvalues
  times N(0, 0.1) (Krizhevsky et al. 2012, section 4.1).
- rrc: Inception's random-resized crops (8%-100% of the area, aspect 3/4-4/3) and flips.
- randaugment: basic, then RandAugment (1909.13719): N operations drawn from 14, all at
  magnitude M (default N=2, M=9).

Independent of the preset: random erasing (1708.04896), mixup (1710.09412) and cutmix
(1905.04899). Every random draw comes from an explicit torch.Generator, so a run can be
repeated exactly and resumed in the middle of an epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PRESETS = ("none", "flip", "basic", "alexnet", "rrc", "randaugment")


@dataclass
class Augment:
    """What to do to training images (the recipe's augmentation fields)."""

    preset: str = "basic"
    hflip: bool = True
    randaugment_n: int = 2
    randaugment_m: int = 9
    lighting: float = 0.1        # std of the PCA lighting noise (alexnet preset)
    random_erasing: float = 0.0  # probability per image
    mixup: float = 0.0           # Beta(alpha, alpha); 0 is off
    cutmix: float = 0.0          # Beta(alpha, alpha); 0 is off
    rrc_scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown augmentation {self.preset!r}; choose one of "
                             f"{', '.join(PRESETS)}")

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def pad_for(preset: str, size: int) -> int:
    """Translation range: 4 px per 32 (basic, randaugment) or AlexNet's 16 of 256."""
    if preset == "alexnet":
        return max(1, round(size * (256 / 224 - 1) / 2))
    return max(1, round(size / 8))


# --------------------------------------------------------------------------------------
# Batched operations on float images in [0, 1], one random draw per sample
# --------------------------------------------------------------------------------------


def _rand(g: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=g)


def random_translate(x: torch.Tensor, pad: int, g: torch.Generator | None,
                     mode: str = "reflect") -> torch.Tensor:
    """Pad every side by `pad` and cut a window of the original size at a random offset."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[batch, chans, rows, cols]


def random_hflip(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    flip = (_rand(g, x.shape[0]) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


def random_resized_crop(x: torch.Tensor, g: torch.Generator | None,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Inception's crop: a random area fraction and aspect ratio, resized to the full size."""
    n = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * _rand(g, n)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(g, n)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - w) * (2 * _rand(g, n) - 1)
    cy = (1 - h) * (2 * _rand(g, n) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def pca_lighting(x: torch.Tensor, eigval: Sequence[float], eigvec: Sequence[Sequence[float]],
                 std: float, g: torch.Generator | None) -> torch.Tensor:
    """AlexNet's colour noise: add eigvec @ (alpha * eigval), alpha ~ N(0, std), per image."""
    n, c = x.shape[:2]
    val = torch.tensor(eigval, dtype=x.dtype, device=x.device)
    vec = torch.tensor(eigvec, dtype=x.dtype, device=x.device)
    alpha = (torch.randn(n, c, generator=g) * std).to(x)
    shift = (alpha * val) @ vec.T                       # (n, c)
    return (x + shift[:, :, None, None]).clamp_(0, 1)


def random_erasing(x: torch.Tensor, p: float, g: torch.Generator | None,
                   area: tuple[float, float] = (0.02, 1 / 3),
                   ratio: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Replace a random rectangle of a fraction of the images by Gaussian noise (applied to
    normalised images, so the noise has the data's scale)."""
    n, c, h, w = x.shape
    apply = _rand(g, n) < p
    s = area[0] + (area[1] - area[0]) * _rand(g, n)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(g, n)
    r = torch.exp(log_r)
    eh = torch.sqrt(s * r * h * w).round().clamp(1, h).long()
    ew = torch.sqrt(s / r * h * w).round().clamp(1, w).long()
    y0 = (_rand(g, n) * (h - eh + 1)).long()
    x0 = (_rand(g, n) * (w - ew + 1)).long()
    noise = torch.randn(x.shape, generator=g).to(x)
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    mask = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
            & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None])
            & apply[:, None, None])
    return torch.where(mask[:, None].to(x.device), noise, x)


def _beta(alpha: float, g: torch.Generator | None) -> float:
    # torch's Beta sampler takes no generator; numpy's, seeded from ours, does.
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float,
              cutmix: float, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (blend two images and their labels) or cutmix (paste a box of one image into
    another, labels in proportion to the area); one of the two per batch when both are on.
    Returns the mixed images and soft targets (n, num_classes)."""
    n, _, h, w = x.shape
    use_cutmix = cutmix > 0 and (mixup <= 0 or float(_rand(g, 1)) < 0.5)
    lam = _beta(cutmix if use_cutmix else mixup, g)
    perm = torch.randperm(n, generator=g).to(x.device)
    if use_cutmix:
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,),
                                                                                  generator=g))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)     # the area actually pasted
    else:
        x = x * lam + x[perm] * (1.0 - lam)
    one_hot = F.one_hot(y, num_classes).to(x.dtype)
    return x, one_hot * lam + one_hot[perm] * (1.0 - lam)


# --------------------------------------------------------------------------------------
# RandAugment, vectorised: every image draws its own operations
# --------------------------------------------------------------------------------------

_RA_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
           "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(img: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + factor[:, None, None, None] * (img - degenerate)).clamp_(0, 1)


def _sharpen_base(x: torch.Tensor) -> torch.Tensor:
    # PIL's SMOOTH kernel on the interior, the border left as it is (as torchvision does).
    k = torch.tensor([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]], dtype=x.dtype,
                     device=x.device) / 13
    c = x.shape[1]
    blurred = F.conv2d(x, k.expand(c, 1, 3, 3), groups=c)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = blurred
    return out


def rand_augment(x: torch.Tensor, g: torch.Generator | None, num_ops: int = 2,
                 magnitude: int = 9, bins: int = 31) -> torch.Tensor:
    """torchvision's RandAugment operation space and magnitudes, on float images in [0, 1],
    with an independent draw per image and one batched call per operation."""
    from torchvision.transforms.v2 import functional as TF

    n, c, h, w = x.shape
    level = magnitude / (bins - 1)           # position of M on the magnitude scale
    for _ in range(num_ops):
        op = torch.randint(0, len(_RA_OPS), (n,), generator=g)
        sign = torch.where(_rand(g, n) < 0.5, -1.0, 1.0)
        out = x.clone()
        # The five geometric operations share one resampling of the batch.
        theta = torch.eye(2, 3).repeat(n, 1, 1)
        s = 0.3 * level * sign
        t = 150 / 331 * level * sign * 2     # translation, as a fraction of the [-1, 1] span
        a = torch.deg2rad(30 * level * sign)
        theta[op == 1, 0, 1], theta[op == 1, 0, 2] = s[op == 1], s[op == 1]  # about the top-left
        theta[op == 2, 1, 0], theta[op == 2, 1, 2] = s[op == 2], s[op == 2]
        theta[op == 3, 0, 2] = -t[op == 3]
        theta[op == 4, 1, 2] = -t[op == 4]
        rot = op == 5
        theta[rot, 0, 0], theta[rot, 0, 1] = torch.cos(a[rot]), -torch.sin(a[rot])
        theta[rot, 1, 0], theta[rot, 1, 1] = torch.sin(a[rot]), torch.cos(a[rot])
        geo = ((op >= 1) & (op <= 5)).nonzero().flatten()
        if len(geo):
            sel = x[geo.to(x.device)]
            grid = F.affine_grid(theta[geo].to(x), list(sel.shape), align_corners=False)
            out[geo.to(x.device)] = F.grid_sample(sel, grid, mode="nearest",
                                                  padding_mode="zeros", align_corners=False)
        factor = 1.0 + 0.9 * level * sign
        for k, name in enumerate(_RA_OPS[6:], start=6):
            idx = (op == k).nonzero().flatten()
            if not len(idx):
                continue
            d_idx = idx.to(x.device)
            sel, f = x[d_idx], factor[idx].to(x)
            if name == "Brightness":
                res = (sel * f[:, None, None, None]).clamp_(0, 1)
            elif name == "Color":
                res = _blend(sel, _grey(sel).expand_as(sel), f) if c == 3 else sel
            elif name == "Contrast":
                mean = _grey(sel).mean((1, 2, 3), keepdim=True)
                res = _blend(sel, mean.expand_as(sel), f)
            elif name == "Sharpness":
                res = _blend(sel, _sharpen_base(sel), f) if h > 2 and w > 2 else sel
            elif name == "Posterize":
                bits = int(round(8 - magnitude / ((bins - 1) / 4)))
                q = 2 ** (8 - bits)
                res = torch.floor(sel * 255 / q) * q / 255
            elif name == "Solarize":
                res = torch.where(sel >= 1.0 - level, 1.0 - sel, sel)
            elif name == "AutoContrast":
                lo = sel.amin((2, 3), keepdim=True)
                hi = sel.amax((2, 3), keepdim=True)
                span = hi - lo
                res = torch.where(span > 0, (sel - lo) / span.clamp_min(1e-8), sel)
            else:  # Equalize: histogram equalisation needs integer levels
                u8 = (sel * 255).round().to(torch.uint8)
                res = TF.equalize(u8).to(x.dtype) / 255
            out[d_idx] = res
        x = out
    return x


# --------------------------------------------------------------------------------------
# The device-side pipeline
# --------------------------------------------------------------------------------------


class BatchPipeline:
    """uint8 batch -> normalised float batch, on the batch's device.

    `geometric=True` (images held in memory) also runs the preset's crops, flips and
    RandAugment here; for files the workers did those already. Without `augment` it is the
    evaluation view: resize to `image_size`, normalise.
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: Augment | None = None, geometric: bool = True,
                 eigval: Sequence[float] | None = None,
                 eigvec: Sequence[Sequence[float]] | None = None, num_classes: int = 0,
                 channels_last: bool = False) -> None:
        self.image_size, self.augment, self.geometric = image_size, augment, geometric
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.eigval, self.eigvec = eigval, eigvec
        self.num_classes, self.channels_last = num_classes, channels_last
        if augment is not None and augment.preset == "alexnet" and augment.lighting > 0 and (
                eigval is None or eigvec is None):
            raise ValueError("the alexnet preset's PCA lighting needs the data's eigval/eigvec "
                             "(archlab.data.channel_stats)")
        if augment is not None and augment.mixes and num_classes < 2:
            raise ValueError("mixup and cutmix need num_classes")

    def __call__(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.augment
        x = x.float().div_(255)
        if self.geometric and a is not None and a.preset == "randaugment":
            x = rand_augment(x, g, a.randaugment_n, a.randaugment_m)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False).clamp_(0, 1)
        if a is not None:
            if self.geometric:
                if a.preset in ("basic", "alexnet", "randaugment"):
                    x = random_translate(x, pad_for(a.preset, self.image_size), g)
                elif a.preset == "rrc":
                    x = random_resized_crop(x, g, a.rrc_scale)
                if a.hflip and a.preset != "none":
                    x = random_hflip(x, g)
            if a.preset == "alexnet" and a.lighting > 0:
                x = pca_lighting(x, self.eigval, self.eigvec, a.lighting, g)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if a is not None:
            if a.random_erasing > 0:
                x = random_erasing(x, a.random_erasing, g)
            if a.mixes:
                x, y = mix_batch(x, y, self.num_classes, a.mixup, a.cutmix, g)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


# --------------------------------------------------------------------------------------
# Per-image transforms for files (run in DataLoader workers)
# --------------------------------------------------------------------------------------


def eval_transform(image_size: int, crop_pct: float = 0.875, interpolation: str = "bilinear"):
    """Resize the shorter side to image_size / crop_pct, cut the centre image_size square:
    the evaluation view of ImageNet-trained networks (256 -> 224 at crop_pct 0.875). A PIL
    image is resized by PIL before it becomes a uint8 tensor, as torchvision's weights'
    transforms do, so that archlab feeds their weights exactly the pixels they were
    measured on."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(int(math.floor(image_size / crop_pct + 0.5)),
                  interpolation=v2.InterpolationMode(interpolation), antialias=True),
        v2.CenterCrop(image_size),
        v2.PILToTensor(),
    ])


class ImageMode:
    """PIL image -> 'L' or 'RGB' (alpha on white, 16-bit rescaled: data.decode's rules);
    tensors pass unchanged."""

    def __init__(self, in_chans: int) -> None:
        self.mode = "L" if in_chans == 1 else "RGB"

    def __call__(self, img):
        from PIL import Image

        from archlab.data.decode import to_image_mode

        return to_image_mode(img, self.mode)[0] if isinstance(img, Image.Image) else img


def transforms_for(model_or_cfg):
    """The evaluation transforms a model's weights expect, from its `pretrained_cfg` (or
    such a dict): PIL image (or uint8 tensor) -> mode -> resize the shorter side to
    size / crop_pct with the cfg's interpolation -> centre crop -> float in [0, 1] ->
    normalise. The same tensor as torchvision's `weights.transforms()` and timm's
    `create_transform(**resolve_data_config(...))` for the same numbers (archlab rounds
    size / crop_pct as torchvision does)."""
    from torchvision.transforms import v2

    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg)
    if not isinstance(cfg, dict) or "input_size" not in cfg:
        raise ValueError(f"{type(model_or_cfg).__name__} carries no pretrained_cfg (input_size, "
                         "mean, std, ...): build it with archlab.create_model or load it with "
                         "archlab.load_trained, or pass such a dict")
    c, size, _ = cfg["input_size"]
    return v2.Compose([
        ImageMode(c),
        eval_transform(size, cfg.get("crop_pct", 0.875), cfg.get("interpolation", "bilinear")),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(cfg["mean"]), list(cfg["std"])),
    ])


def file_transform(augment: Augment | None, image_size: int, crop_pct: float = 0.875):
    """PIL image -> uint8 tensor (C, image_size, image_size): the preset's geometric part."""
    from torchvision.transforms import v2

    if augment is None or augment.preset == "none":
        return eval_transform(image_size, crop_pct)
    flip = [v2.RandomHorizontalFlip()] if augment.hflip else []
    p = augment.preset
    if p == "alexnet":
        ops = [v2.Resize(int(round(image_size * 256 / 224)), antialias=True),
               v2.RandomCrop(image_size)]
    elif p == "flip":
        ops = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    elif p == "basic":
        ops = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
               v2.RandomCrop(image_size, padding=pad_for(p, image_size),
                             padding_mode="reflect")]
    else:  # rrc, randaugment
        ops = [v2.RandomResizedCrop(image_size, scale=augment.rrc_scale, antialias=True)]
    ops = [v2.PILToTensor(), *ops, *flip]
    if p == "randaugment":
        ops.append(v2.RandAugment(augment.randaugment_n, augment.randaugment_m))
    return v2.Compose(ops)
