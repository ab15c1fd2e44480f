"""Test-time augmentation: classify several views of each image and average the answers.

AlexNet (Krizhevsky et al. 2012, section 4.1) predicted "by extracting five 224×224 patches
(the four corner patches and the center patch) as well as their horizontal reflections
(hence ten patches in all), and averaging the predictions made by the network's softmax
layer on the ten patches". The cheaper habits that followed keep the idea: the image and
its mirror (flip), a few small translations (shift), or a few passes of the training
augmentation itself (fastai's `tta`).

A view spec is a string (or a list) of these, joined by '+' or ',':

    flip        the image and its mirror                                  2 views
    shift       the image and four diagonal translations by 1/16 of the  5 views
                side, the border repeated (the study runner's views)
    five_crop   the four corner crops and the centre crop, of the        5 views
                model's input size, cut from a larger image (below)
    ten_crop    five_crop and the mirror of each crop (AlexNet)          10 views
    ten_crop:pad, five_crop:pad   the same crops cut at the training scale
                (the batch padded by reflection, not upscaled: below)
    aug:N       the image and N passes of the training augmentation     N+1 views
                (pad-and-crop by 1/8 of the side, reflected, and a
                random flip), drawn from a seeded generator
    none        the image alone                                           1 view

Items combine: 'flip+shift' is the image, its mirror and four shifts (6 views). The plain
image is one of the views unless the spec holds crops only (AlexNet averaged the ten
patches, not the whole image). Mirrors are left out for data whose classes a mirror changes
(`hflip=False`, e.g. digits), so ten_crop there gives 5 views; the count actually averaged
is always reported.

The larger image the crops are cut from: for image files evaluated at crop_pct < 1 it is the
image resized to side/crop_pct, from which the plain view is the centre crop (224 of 256, as
AlexNet did). Images held in memory are evaluated whole at the training size, so there the
crops come from the batch upscaled bilinearly to L = floor(S / 0.875 + 0.5) (28 -> 32 px,
32 -> 37 px): the crops are then translations by up to (L - S) px at a 1/0.875 zoom, never
the identity. `crop_from="pad"` instead pads the batch by reflection to the same L, keeping
the scale: the crops are then exactly views of the basic augmentation's pad-and-crop. That
is AlexNet's own arrangement (its 224 px crops were cut from the 256 px images it trained
on, at the scale it trained at), and a network trained with pad-and-crop, which never saw
the zoom, needs it: a spec asks for it with `ten_crop:pad` (or `five_crop:pad`), which a
study protocol's `tta:` can name.

Combining: the mean of the views' softmax probabilities, each view weighted alike (AlexNet's
rule). fastai blends instead: beta * plain + (1 - beta) * mean(augmented), beta = 0.25; pass
`beta=0.25` for that. The uniform mean is the default because it is one rule for every spec
(crops have no plain view to favour) and for aug:4 it differs from fastai's only in giving
the plain view 0.20 instead of 0.25 of the weight.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from archlab.data import pad_for, random_hflip, random_translate
from archlab.train.eval_loop import eval_pass, logits_of

VIEWS = ("flip", "shift", "five_crop", "ten_crop", "five_crop:pad", "ten_crop:pad", "aug:N",
         "none")
CROP_FROM = ("resize", "pad")
DEFAULT_CROP_PCT = 0.875


@dataclass(frozen=True)
class TTASpec:
    """A parsed view spec (see the module's docstring)."""

    flip: bool = False
    shift: bool = False
    crops: int = 0          # 0, 5 (five_crop) or 10 (ten_crop)
    aug: int = 0            # passes of the training augmentation
    crop_from: str | None = None   # 'resize' or 'pad' for crops; None: the caller's choice

    @property
    def plain(self) -> bool:
        """Whether the plain image is one of the views (not for crops alone)."""
        return not self.crops or self.flip or self.shift or self.aug > 0

    def count(self, hflip: bool = True) -> int:
        """How many views are averaged (mirrors dropped when `hflip` is False)."""
        n = int(self.plain) + (self.flip and hflip) + 4 * self.shift + self.aug
        if self.crops:
            n += 5 + (5 if self.crops == 10 and hflip else 0)
        return n

    def __str__(self) -> str:
        parts = (["flip"] if self.flip else []) + (["shift"] if self.shift else [])
        parts += [f"{({5: 'five_crop', 10: 'ten_crop'})[self.crops]}"
                  + (f":{self.crop_from}" if self.crop_from else "")] if self.crops else []
        parts += [f"aug:{self.aug}"] if self.aug else []
        return "+".join(parts) or "none"


def parse_tta(spec: str | Sequence[str] | TTASpec | None) -> TTASpec:
    """'flip', 'ten_crop', 'ten_crop:pad', 'flip+shift', ['flip', 'shift'], 'aug:8', 'none'
    -> TTASpec."""
    if isinstance(spec, TTASpec):
        return spec
    if spec is None or spec is False:
        return TTASpec()
    items = spec.replace(",", "+").split("+") if isinstance(spec, str) else list(spec)
    flip = shift = False
    crops = aug = 0
    crop_from = None
    for raw in items:
        item = str(raw).strip().lower().replace("-", "_")
        if item in ("", "none"):
            continue
        if item == "flip":
            flip = True
        elif item == "shift":
            shift = True
        elif item.partition(":")[0] in ("five_crop", "ten_crop"):
            kind, sep, mode = item.partition(":")
            if sep and mode not in CROP_FROM:
                raise ValueError(f"test-time view {raw!r}: crops are cut from the image "
                                 f"resized or padded: write {kind}:resize or {kind}:pad")
            if sep:
                crop_from = mode
            crops = max(crops, 5 if kind == "five_crop" else 10)
        elif item.startswith("aug"):
            _, sep, n = item.partition(":")
            if not sep or not n.isdigit() or int(n) < 1:
                raise ValueError(f"test-time view {raw!r}: write aug:N with N passes of the "
                                 "training augmentation, e.g. aug:8")
            aug += int(n)
        else:
            raise ValueError(f"unknown test-time view {raw!r}; views: {', '.join(VIEWS)} "
                             "(combine them with '+', e.g. flip+shift)")
    return TTASpec(flip, shift, crops, aug, crop_from)


# --------------------------------------------------------------------------------------
# The views of a batch
# --------------------------------------------------------------------------------------


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre size x size crop, offset as torchvision's CenterCrop rounds it."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top:top + size, left:left + size]


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate a batch by (dy, dx) pixels (down and right), repeating the border."""
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def enlarged_side(size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """The side crops are cut from: size / crop_pct, rounded as `eval_transform` does."""
    if not 0.0 < crop_pct < 1.0:
        raise ValueError(f"crop_pct for test-time crops lies in (0, 1), got {crop_pct}")
    return int(math.floor(size / crop_pct + 0.5))


def enlarge(x: torch.Tensor, side: int, mode: str = "resize") -> torch.Tensor:
    """A batch grown to `side`: upscaled bilinearly (resize) or padded by reflection (pad)."""
    h, w = x.shape[-2:]
    if mode == "resize":
        return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    if mode == "pad":
        top, left = (side - h) // 2, (side - w) // 2
        return F.pad(x, (left, side - w - left, top, side - h - top), mode="reflect")
    raise ValueError(f"crop_from is 'resize' or 'pad', got {mode!r}")


def five_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right and centre size x size crops."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"crops of {size} px need an image at least that large, got {h}x{w}")
    return [x[..., :size, :size], x[..., :size, w - size:], x[..., h - size:, :size],
            x[..., h - size:, w - size:], _centre(x, size)]


def tta_views(x: torch.Tensor, spec: str | Sequence[str] | TTASpec | None, hflip: bool = True,
              *, size: int | None = None, crop_pct: float = DEFAULT_CROP_PCT,
              crop_from: str = "resize", generator: torch.Generator | None = None
              ) -> list[torch.Tensor]:
    """Every view of the batch `x` (N, C, H, W) that `spec` names, the plain one first when
    it is a view. `size` is the model's input side (default: x's); a larger `x` is the
    image the crops are cut from and the other views see its centre crop. An `x` of the
    model's size is first enlarged to floor(size / crop_pct + 0.5) for the crops
    (`crop_from` 'resize' or 'pad', unless the spec says which, as in 'ten_crop:pad').
    `generator` draws the aug:N passes (default: seed 0)."""
    spec = parse_tta(spec)
    size = size or x.shape[-1]
    base = x if x.shape[-2:] == (size, size) else _centre(x, size)
    views = [base] if spec.plain else []
    if spec.flip and hflip:
        views.append(base.flip(-1))
    if spec.shift:
        s = max(1, round(size / 16))
        views += [shift(base, dy, dx) for dy, dx in ((s, s), (s, -s), (-s, s), (-s, -s))]
    if spec.crops:
        big = x if min(x.shape[-2:]) > size else enlarge(base, enlarged_side(size, crop_pct),
                                                           spec.crop_from or crop_from)
        crops = five_crops(big, size)
        views += crops
        if spec.crops == 10 and hflip:
            views += [c.flip(-1) for c in crops]
    if spec.aug:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        pad = pad_for("basic", size)
        for _ in range(spec.aug):
            v = random_translate(base, pad, g)
            views.append(random_hflip(v, g) if hflip else v)
    return views


# --------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------


def view_probs(model: nn.Module, x: torch.Tensor,
               spec: str | Sequence[str] | TTASpec | None, hflip: bool = True, *,
               beta: float | None = None, precision: str = "fp32", **view_kwargs: Any
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the views' combined probabilities, the plain view's logits or None when the plain
    image is not a view): what `tta_predict` returns, with the logits the plain metrics of
    the same pass reuse."""
    spec = parse_tta(spec)
    logits = [logits_of(model, v, precision) for v in tta_views(x, spec, hflip, **view_kwargs)]
    probs = [v.softmax(1) for v in logits]
    plain = logits[0] if spec.plain else None
    if beta is not None and spec.plain and len(probs) > 1:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta weighs the plain view, in [0, 1]; got {beta}")
        return beta * probs[0] + (1 - beta) * torch.stack(probs[1:]).mean(0), plain
    return torch.stack(probs).mean(0), plain


@torch.no_grad()
def tta_predict(model: nn.Module, x: torch.Tensor,
                spec: str | Sequence[str] | TTASpec | None, hflip: bool = True, *,
                beta: float | None = None, precision: str = "fp32", **view_kwargs: Any
                ) -> torch.Tensor:
    """Class probabilities (N, classes) of the batch `x`: the mean of the softmax of every
    view (`tta_views`), or with `beta` fastai's blend beta * plain + (1 - beta) * mean of
    the other views. The model is used as it is: put it in eval mode first."""
    return view_probs(model, x, spec, hflip, beta=beta, precision=precision, **view_kwargs)[0]


def run_eval_tta(model: nn.Module, loader, num_classes: int, classes: Sequence[str] | None,
                 spec: str | Sequence[str] | TTASpec, hflip: bool, size: int, *,
                 crop_pct: float = DEFAULT_CROP_PCT, crop_from: str = "resize",
                 beta: float | None = None, precision: str = "fp32", seed: int = 0,
                 progress=None):
    """`run_eval` with test-time augmentation: metrics of the averaged probabilities (the
    loss is the negative log of the averaged probability of the true class)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    g = torch.Generator().manual_seed(seed)    # one stream of aug:N draws for the pass

    def probs_of(x: torch.Tensor):
        return view_probs(model, x, spec, hflip, beta=beta, precision=precision, size=size,
                          crop_pct=crop_pct, crop_from=crop_from, generator=g)

    return eval_pass(model, loader, num_classes, classes, device, precision, progress,
                     probs_of=probs_of, plain=False)[1]
