"""What a unit sees in its top images, projected back to pixels: Zeiler & Fergus's deconvnet
(1311.2901, section 2.1 and figure 2).

To show what excites a unit of a deep layer, Zeiler & Fergus keep that one activation,
set every other activation of the layer to zero, and run the map back down to the pixels
through a "deconvnet": each convolution transposed, each max pooling undone through the
switches recorded on the way up, and each ReLU applied again to the signal coming down.
That is the gradient of the unit with respect to the input, except at the ReLUs: the
gradient passes only where the ReLU's input was positive (the forward mask), the deconvnet
passes whatever is positive in the signal coming down, whatever the forward pass did. The
picture is the structure of the patch that the unit responds to, not the patch itself: in
their figure 2 each grid of nine projections sits beside the nine patches they came from.

captum's NeuronDeconvolution does exactly that (the ReLU modules' backward replaced by a
ReLU of the incoming gradient; max pooling and convolutions by autograd, which is the
switches and the transposed kernels); the one-hot is at the unit that gave the channel's
largest activation in the image (its value would only scale the projection).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from archlab.explain.datasets import dataset_batches, read_dataset
from archlab.explain.maps import get_layer, quiet_relu_hooks
from archlab.explain.subject import ExplainError, Subject
from archlab.explain.units import TopPatches, crop


@dataclass
class Projections:
    """The deconvnet projection of each top patch of a TopPatches, indexed as it is
    (channel, rank): `images` (channel, rank, h, w, C) cut to the same receptive-field box
    as the patch, mid-grey at zero, each projection scaled by its largest magnitude (`peak`,
    (channel, rank)); grey outside the image."""

    layer: str
    channels: list[int]
    images: np.ndarray
    peak: np.ndarray


def project(subject: Subject, x: torch.Tensor, layer: str, channel: int,
            units: torch.Tensor | np.ndarray) -> np.ndarray:
    """The deconvnet projections to pixel space of one unit per image: `x` (N, C, H, W)
    normalised images, `units` (N, 2) the (row, column) in `layer`'s map of the unit of
    `channel` to project in each; returns (N, C, H, W), zero wherever the unit does not
    see."""
    from captum import attr as ca

    module = get_layer(subject, layer)
    units = torch.as_tensor(np.asarray(units), dtype=torch.long).reshape(-1, 2)
    if len(units) != len(x):
        raise ExplainError(f"one unit per image: {len(x)} images but {len(units)} units")
    which = torch.arange(len(x))

    def one_unit(out: torch.Tensor) -> torch.Tensor:
        # Each image's own unit: one backward pass projects them all (in eval mode the
        # images of a batch do not interact).
        return out[which, channel, units[:, 0].to(out.device), units[:, 1].to(out.device)]

    with quiet_relu_hooks():
        a = ca.NeuronDeconvolution(subject.model, module).attribute(
            x.detach().clone().requires_grad_(True), one_unit)
    return a.detach().float().cpu().numpy()


def deconv_projections(subject: Subject, data: Any, tops: dict[str, TopPatches],
                       split: str | None = None) -> dict[str, Projections]:
    """For every layer, channel and rank of `tops` (from `top_patches` on the same `data`),
    the projection of the unit that gave the patch, cut to the patch's box."""
    data = read_dataset(subject, data, split)
    out = {}
    for layer, tp in tops.items():
        nc, k = tp.values.shape
        h, w = tp.patches.shape[2:4]
        images = np.full((nc, k, h, w, subject.in_chans), 0.5, np.float32)
        peak = np.zeros((nc, k), np.float32)
        for c, channel in enumerate(tp.channels):
            found = np.isfinite(tp.values[c])          # fewer images than k: ranks left empty
            picked = data.subset(torch.as_tensor(tp.indices[c][found]))
            x, _, pos = next(dataset_batches(subject, picked, max(1, int(found.sum()))))
            ranks = np.flatnonzero(found)[pos.numpy()]
            maps = project(subject, x, layer, channel, tp.units[c][ranks])
            for rank, m in zip(ranks, maps):
                peak[c, rank] = float(np.abs(m).max())
                shown = 0.5 + m / (2 * max(peak[c, rank], 1e-12))
                images[c, rank] = crop(shown.transpose(1, 2, 0), tuple(tp.boxes[c, rank]))
        out[layer] = Projections(layer, list(tp.channels), images, peak)
    return out
