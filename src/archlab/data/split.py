"""A deterministic, stratified split: the same seed and labels give the same split, always.

Each class's items are put in an order drawn from a generator seeded by (seed, class), and
the first `fraction` of that order is held out. So the split keeps every class's share
(stratified), does not depend on the machine or on the other classes, and the held-out
sets of two fractions with one seed are nested: the 10% subset lies inside the 20% one,
which is what a data-efficiency study wants.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def _class_order(n: int, seed: int, cls: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + cls) % (2**63))
    return torch.randperm(n, generator=g)


def stratified_split(targets: torch.Tensor | Sequence[int], fraction: float, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (held, rest): index tensors, `held` taking round(fraction * n_c) items of every
    class c (at least one when the class has two or more and fraction > 0). Both sorted."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a split fraction lies in [0, 1], got {fraction}")
    targets = torch.as_tensor(targets, dtype=torch.long)
    held, rest = [], []
    for cls in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == cls).flatten()
        order = idx[_class_order(len(idx), seed, cls)]
        k = round(fraction * len(idx))
        if fraction > 0 and k == 0 and len(idx) >= 2:
            k = 1
        if fraction < 1 and k == len(idx) and len(idx) >= 2:
            k -= 1
        held.append(order[:k])
        rest.append(order[k:])
    return _sorted_cat(held), _sorted_cat(rest)


def _sorted_cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.sort(torch.cat(parts))[0] if parts else torch.empty(0, dtype=torch.long)


def train_val_split(targets: torch.Tensor | Sequence[int], val_fraction: float = 0.1,
                    seed: int = 0, train_fraction: float = 1.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (train, val) indices: a stratified `val_fraction` held out, then a stratified
    `train_fraction` of the rest kept for training (for data-efficiency studies)."""
    targets = torch.as_tensor(targets, dtype=torch.long)
    if val_fraction > 0:
        val, train = stratified_split(targets, val_fraction, seed)
    else:
        val, train = torch.empty(0, dtype=torch.long), torch.arange(len(targets))
    if train_fraction < 1.0:
        # A different stream from the validation split's, nested across fractions.
        keep, _ = stratified_split(targets[train], train_fraction, seed + 7919)
        train = train[keep]
    return train, val


def indices_digest(indices: torch.Tensor) -> str:
    """A short hash of an index set, stored in checkpoints to detect a changed split."""
    return hashlib.sha256(torch.as_tensor(indices, dtype=torch.long).numpy().tobytes()
                          ).hexdigest()[:16]

