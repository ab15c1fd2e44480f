"""What single units respond to: the first layer's filters, and the dataset patches that
excite a channel most.

The first layer's kernels are images themselves: on natural images they become oriented
edges, colour blobs and gratings (Krizhevsky et al. 2012, figure 3); on a random network they
are noise. Deeper channels cannot be drawn as kernels, but they can be shown by the inputs
that excite them: Zeiler & Fergus (1311.2901, figure 2) show, for a channel, the nine image
patches of the validation set with its strongest activation. A unit of a deep map sees only
its receptive field, so the patch is that field, cut from the image around the unit; the
field (size, cumulative stride, offset) comes from the receptive-field tracker of
archlab.analysis.profile. One patch per image: the unit with the channel's largest
activation in that image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from archlab.analysis.profile import Field, layer_fields
from archlab.explain.datasets import dataset_batches, sample_dataset
from archlab.explain.maps import get_layer, map_layers, output_shapes
from archlab.explain.subject import ExplainError, Subject

# The grey that fills the part of a receptive field lying outside the image.
OUTSIDE = 0.5


# --------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------


@dataclass
class Filters:
    """A convolution's kernels: `weights` (out, in, k, k) as stored, `images` (out, k, k, C)
    in [0, 1] with zero at mid-grey, each kernel scaled by its own largest magnitude. RGB
    kernels are colour images; other channel counts are shown as their mean, in grey."""

    layer: str
    weights: np.ndarray
    images: np.ndarray


def first_conv(subject: Subject) -> str:
    """The first convolution that reads the image (in_chans inputs, in module order)."""
    for name, m in subject.model.named_modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == subject.in_chans and m.groups == 1:
            return name
    raise ExplainError(f"{subject.name} has no convolution reading its {subject.in_chans}-"
                       "channel input, so it has no first-layer filters to show")


def filters(subject: Subject, layer: str | None = None) -> Filters:
    """The kernels of `layer` (default: the first convolution) as images."""
    name = layer or first_conv(subject)
    conv = get_layer(subject, name)
    if not isinstance(conv, nn.Conv2d):
        convs = [n for n, m in subject.model.named_modules() if isinstance(m, nn.Conv2d)]
        more = " ..." if len(convs) > 6 else ""
        raise ExplainError(f"{name!r} is a {type(conv).__name__}, not a convolution; filters "
                           f"can be shown for {', '.join(convs[:6])}{more}")
    w = conv.weight.detach().float().cpu()
    shown = w if w.shape[1] == 3 else w.mean(1, keepdim=True)
    scale = shown.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    images = (shown / scale * 0.5 + 0.5).permute(0, 2, 3, 1).numpy()
    return Filters(name, w.numpy(), images)


# --------------------------------------------------------------------------------------
# Max-activating patches
# --------------------------------------------------------------------------------------


@dataclass
class TopPatches:
    """The top-k images of each channel of one layer, with the patch that excites it.

    Arrays are indexed (channel, rank): `values` the activation (descending), `indices` the
    image's index in the dataset, `labels` its class, `units` the (row, column) of the unit
    in the layer's map, `boxes` (top, left, bottom, right) of the patch in input pixels
    (beyond the image where the field is), `patches` (channel, rank, h, w, C) the pixels,
    grey outside the image.
    """

    layer: str
    channels: list[int]
    field: Field
    values: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    units: np.ndarray
    boxes: np.ndarray
    patches: np.ndarray


def patch_box(field: Field | None, row: int, col: int, image_hw: tuple[int, int]
              ) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of unit (row, col)'s receptive field in input pixels.
    Along an axis where the field covers the whole image (or is global) it is the image."""
    box = []
    for axis, unit in ((0, row), (1, col)):
        side = image_hw[axis]
        if field is None or field.is_global or field.size[axis] >= side:
            box.append((0, side))
            continue
        centre = field.start[axis] + unit * field.jump[axis]
        lo = math.floor(centre - field.size[axis] / 2 + 0.5)
        box.append((lo, lo + int(round(field.size[axis]))))
    (top, bottom), (left, right) = box
    return top, left, bottom, right


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box of an (H, W, C) image; the part outside the image is grey."""
    top, left, bottom, right = box
    h, w = image.shape[:2]
    out = np.full((bottom - top, right - left, image.shape[2]), OUTSIDE, dtype=np.float32)
    y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


def default_patch_layers(subject: Subject) -> list[str]:
    """The feature stages with spatial maps; for a transformer, its patch embedding."""
    layers = map_layers(subject)
    if not layers:
        layers = [n for n, m in subject.model.named_modules() if isinstance(m, nn.Conv2d)][:1]
    return layers


def parse_channels(text: str | None) -> int | list[int] | dict[str, list[int]] | None:
    """The channels option: 'N' (the first N of each layer), '0,5,9' (those of each layer),
    or 'LAYER:IDX,...' (channels of named layers, e.g. 'layer2:3,layer2:7,layer3:0')."""
    if not text or not text.strip():
        return None
    items = [t for t in text.replace(" ", ",").split(",") if t]
    named = [t for t in items if ":" in t]
    try:
        if not named:
            values = [int(t) for t in items]
            return values[0] if len(values) == 1 and "," not in text else values
        if len(named) != len(items):
            raise ValueError("mixed")
        out: dict[str, list[int]] = {}
        for t in items:
            layer, _, index = t.rpartition(":")
            out.setdefault(layer, []).append(int(index))
        return out
    except ValueError:
        raise ExplainError(f"channels {text!r}: give N (the first N), a list 0,5,9, or "
                           "LAYER:IDX pairs such as layer2:3,layer3:0 (not a mix)") from None


def _layer_channels(layers: Sequence[str] | None,
                    channels: Sequence[int] | int | dict[str, Sequence[int]] | None
                    ) -> tuple[list[str] | None, dict[str, Any]]:
    """(layers, {layer: its channels or None}) from the two options; channels given per
    layer name the layers too."""
    if isinstance(channels, dict):
        named = list(channels)
        extra = [n for n in (layers or []) if n not in channels]
        if extra:
            raise ExplainError(f"channels are given for {', '.join(named)} but not for "
                               f"{', '.join(extra)}: name each layer's channels "
                               "(LAYER:IDX), or give channels for every layer")
        return named, {n: list(channels[n]) for n in named}
    return (list(layers) if layers else None), {}


def top_patches(subject: Subject, data: Any, layers: Sequence[str] | None = None,
                channels: Sequence[int] | int | dict[str, Sequence[int]] | None = None,
                k: int = 9, split: str | None = None, limit: int | None = 2000,
                batch_size: int = 64, seed: int = 0) -> dict[str, TopPatches]:
    """For each layer and channel, the k images (of `limit` drawn from `data`) whose largest
    activation of the channel is highest, with the patch under the unit that gave it.

    `channels` is a list, an int n for the first n channels (default 16), or a dict
    {layer: channels} (which names the layers).
    """
    layers, per_layer = _layer_channels(layers, channels)
    layers = layers or default_patch_layers(subject)
    if not layers:
        raise ExplainError(f"{subject.name} has no layer with a spatial map to take patches "
                           "from")
    for n in layers:
        get_layer(subject, n)                   # an unknown name is refused here
    shapes = output_shapes(subject, layers)
    for n in layers:
        if shapes[n] is None or len(shapes[n]) != 4:
            raise ExplainError(
                f"max-activating patches need a layer whose output is a feature map "
                f"(N, C, H, W); {n!r} outputs {shapes[n] or 'no tensor'}. Layers that work: "
                f"{', '.join(default_patch_layers(subject))}")
    data, original = sample_dataset(subject, data, split, limit, seed)
    k = max(1, min(k, len(data)))
    picked: dict[str, list[int]] = {}
    for n in layers:
        c = shapes[n][1]
        wanted = per_layer.get(n, channels)
        chosen = list(range(min(16, c))) if wanted is None else (
            list(range(min(wanted, c))) if isinstance(wanted, int) else list(wanted))
        bad = [ch for ch in chosen if not 0 <= ch < c]
        if bad:
            raise ExplainError(f"layer {n!r} has {c} channels (0 to {c - 1}); "
                               f"channel{'s' if len(bad) > 1 else ''} {bad} do not exist")
        picked[n] = chosen
    fields = layer_fields(subject.model, subject.image_size, layers)
    hw = (subject.image_size, subject.image_size)

    # Running top-k per layer: values, positions in `data`, labels, units, patches.
    best: dict[str, dict[str, Any]] = {}
    for n in layers:
        box = patch_box(fields[n], 0, 0, hw)
        ph, pw = box[2] - box[0], box[3] - box[1]
        nc = len(picked[n])
        best[n] = dict(values=torch.full((nc, k), -math.inf), pos=torch.full((nc, k), -1),
                       labels=torch.full((nc, k), -1),
                       units=torch.zeros(nc, k, 2, dtype=torch.long),
                       patches=np.full((nc, k, ph, pw, subject.in_chans), OUTSIDE, np.float32))
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(subject.model.named_modules())
    handles = [modules[n].register_forward_hook(
        lambda _m, _i, out, n=n: outputs.__setitem__(n, out[:, picked[n]].detach()))
        for n in layers]
    try:
        with torch.no_grad():
            for x, y, pos in dataset_batches(subject, data, batch_size):
                subject.model(x)
                display = subject.to_display(x)
                for n in layers:
                    _merge(best[n], outputs[n].float().cpu(), y.cpu(), pos, display, fields[n],
                           hw, k)
    finally:
        for h in handles:
            h.remove()

    out = {}
    for n in layers:
        b = best[n]
        units = b["units"].numpy()
        boxes = np.array([[patch_box(fields[n], r, c, hw) for r, c in row] for row in units])
        pos = b["pos"]
        whole = Field(hw, (1.0, 1.0), (hw[0] / 2, hw[1] / 2), True)
        out[n] = TopPatches(n, picked[n], fields[n] or whole, b["values"].numpy(),
                            original[pos.clamp_min(0)].numpy(), b["labels"].numpy(), units,
                            boxes, b["patches"])
    return out


def _merge(best: dict[str, Any], act: torch.Tensor, labels: torch.Tensor, pos: torch.Tensor,
           display: np.ndarray, field: Field | None, hw: tuple[int, int], k: int) -> None:
    """Fold one batch's per-image maxima (act: images, channels, h, w) into the top-k."""
    n_img, nc, h, w = act.shape
    flat = act.flatten(2)
    vals, where = flat.max(2)                                       # (images, channels)
    candidates = torch.cat([best["values"], vals.T], 1)             # (channels, k + images)
    top_vals, top_idx = candidates.topk(k, dim=1)
    for c in range(nc):
        new_patches = best["patches"][c].copy()
        new_pos, new_lab = best["pos"][c].clone(), best["labels"][c].clone()
        new_units = best["units"][c].clone()
        for rank, j in enumerate(top_idx[c].tolist()):
            if j < k:                       # a previous winner, kept
                new_patches[rank] = best["patches"][c, j]
                new_pos[rank], new_lab[rank] = best["pos"][c, j], best["labels"][c, j]
                new_units[rank] = best["units"][c, j]
            else:                           # an image of this batch
                i = j - k
                r, col = divmod(int(where[i, c]), w)
                new_patches[rank] = crop(display[i], patch_box(field, r, col, hw))
                new_pos[rank], new_lab[rank] = int(pos[i]), int(labels[i])
                new_units[rank] = torch.tensor([r, col])
        best["patches"][c] = new_patches
        best["pos"][c], best["labels"][c], best["units"][c] = new_pos, new_lab, new_units
    best["values"] = top_vals
