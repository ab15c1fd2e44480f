"""Where a Vision Transformer puts its patches: the two right-hand panels of ViT's Figure 7
(Dosovitskiy et al., 2010.11929, section 4.5).

- *Position embedding similarity* (Figure 7, centre): the cosine similarity of each patch's
  position embedding with every other patch's, drawn as a small grid at the patch's place.
  Learned from a raster index alone, the embeddings of a trained ViT come out most alike
  for nearby patches and for patches of the same row and column: the 2-D layout is found
  by training.
- *Mean attention distance* (Figure 7, right): for each head of each layer, the distance
  in pixels between a query patch and the patches it attends to, weighted by the
  attention, averaged over the query patches and the images: the analogue of a receptive
  field. Some heads of the first layers already look across the whole image while others
  stay local, and the distance grows with depth.

The distance is between patch centres, so a patch's distance to itself is 0 and the
patch side is the unit; the class (and distillation) tokens have no place, so their
keys are left out and each query's attention over the patches renormalised to sum to 1
(a mean needs weights that sum to one; where a head sends most of its attention to the
class token, it is the distance of what is left).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from archlab.explain.images import InputImage
from archlab.explain.maps import maps_full
from archlab.explain.subject import ExplainError, Subject


def position_embeddings(subject: Subject | nn.Module) -> tuple[np.ndarray, tuple[int, int]]:
    """The position embeddings the patch tokens of a ViT (a Subject or the model) get,
    (rows*cols, D) in raster order, and the grid (rows, cols). Every kind of archlab's
    ViT: learned 1-D, learned 2-D (the row's half and the column's half), fixed sin-cos."""
    model = subject.model if isinstance(subject, Subject) else subject
    why = no_positions(model)
    if why:
        name = subject.name if isinstance(subject, Subject) else type(model).__name__
        raise ExplainError(f"{name} {why}")
    grid = tuple(int(g) for g in model.grid_size)
    # The embeddings the forward pass adds at the model's own grid, whatever their kind.
    pos = model._pos_embedding_for(grid)
    return pos.detach()[0, model.num_prefix_tokens:].float().cpu().numpy(), grid


def no_positions(model) -> str | None:
    """Why the model has no position embeddings to show, or None when it has."""
    if not hasattr(model, "_pos_embedding_for") or not hasattr(model, "grid_size"):
        return ("has no position embeddings (they belong to transformers, ViT and DeiT; a "
                "convolution knows where it is)")
    if getattr(model, "pos_embedding_kind", "learned") == "none":
        return "was built with pos_embedding='none': it has no position embeddings"
    return None


def position_similarity(pos: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The cosine similarity of every patch's embedding with every patch's: (rows, cols,
    rows, cols), [r, c] the map of patch (r, c). `pos` is (rows*cols, D), raster order."""
    rows, cols = grid
    if pos.shape[0] != rows * cols:
        raise ExplainError(f"{pos.shape[0]} position embeddings for a {rows}x{cols} grid: "
                           f"give one per patch ({rows * cols}), class token left out")
    unit = pos / np.linalg.norm(pos, axis=1, keepdims=True).clip(1e-12)
    return (unit @ unit.T).reshape(rows, cols, rows, cols)


def similarity_mosaic(sim: np.ndarray) -> np.ndarray:
    """(rows, cols, rows, cols) -> one 2-D image of rows x cols tiles, each patch's map at
    its place, with a blank (NaN) line between tiles: ViT's Figure 7 (centre)."""
    rows, cols = sim.shape[:2]
    out = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan)
    for r in range(rows):
        for c in range(cols):
            out[r * (rows + 1):r * (rows + 1) + rows,
                c * (cols + 1):c * (cols + 1) + cols] = sim[r, c]
    return out


@dataclass
class AttentionDistance:
    """Mean attention distance in pixels, `distance` (layers, heads), averaged over
    `images`; `per_image` (images, layers, heads)."""

    distance: np.ndarray
    per_image: np.ndarray
    images: list[str]
    patch_size: int
    grid: tuple[int, int]


def patch_distances(grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(patches, patches) Euclidean distance between patch centres in pixels."""
    y, x = torch.meshgrid(torch.arange(grid[0], dtype=torch.float64),
                          torch.arange(grid[1], dtype=torch.float64), indexing="ij")
    centres = torch.stack([y.reshape(-1), x.reshape(-1)], 1) * patch_size
    return torch.cdist(centres, centres)


def attention_distance(maps: Sequence[torch.Tensor], num_prefix_tokens: int,
                       grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """One image's mean attention distance per layer and head, (layers, heads), from its
    attention probabilities (heads, tokens, tokens) per layer: the patch-to-patch part of
    each row renormalised, weighted by the distance of the patches, summed over the keys
    and averaged over the queries."""
    dist = patch_distances(grid, patch_size)
    p = num_prefix_tokens
    out = []
    for a in maps:
        a = torch.as_tensor(a).double()[:, p:, p:]
        if a.shape[-1] != dist.shape[0]:
            raise ExplainError(f"attention over {a.shape[-1]} patch tokens for a "
                               f"{grid[0]}x{grid[1]} grid")
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        out.append((a * dist).sum(-1).mean(-1))
    return torch.stack(out).float().numpy()


def mean_attention_distance(subject: Subject, images: Sequence[InputImage]
                            ) -> AttentionDistance:
    """The mean attention distance of every head of every layer, averaged over `images`."""
    if not images:
        raise ExplainError("the mean attention distance needs images to average over")
    model = subject.model
    per = []
    for image in images:
        maps = maps_full(subject, image.tensor, "attention distances")
        grid = (image.tensor.shape[-2] // model.patch_size,
                image.tensor.shape[-1] // model.patch_size)
        per.append(attention_distance(maps, model.num_prefix_tokens, grid, model.patch_size))
    per_image = np.stack(per)
    return AttentionDistance(per_image.mean(0), per_image, [im.name for im in images],
                             int(model.patch_size), grid)
