"""Per-channel statistics of a dataset, computed once and cached by its fingerprint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from archlab._io import write_atomic
from archlab.data.cache import cache_dir
from archlab.data.dataset import ImageData


def channel_stats(data: ImageData, sample: int = 2000, image_size: int = 64,
                  cache: bool = True) -> dict[str, list]:
    """Per-channel mean and std of the pixels (in [0, 1]) and the eigen-decomposition of
    their channel covariance (for AlexNet's PCA lighting noise).

    In-memory data uses every image; files use an evenly spaced sample, decoded at
    `image_size`. The result is cached in the user cache, keyed by the dataset's
    fingerprint, so a large folder is read once.
    """
    key = f"{data.fingerprint()}-{sample}-{image_size}"
    path = cache_dir() / "stats.json"
    if cache:
        try:
            return json.loads(path.read_text())[key]
        except (OSError, ValueError, KeyError):
            pass
    if data.in_memory:
        x = data.images
    else:
        step = max(1, len(data) // sample)
        x = data.subset(range(0, len(data), step)).to_memory(image_size).images
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    outer = torch.zeros(c, c, dtype=torch.float64)
    n = 0
    for i in range(0, len(x), 2048):
        v = x[i:i + 2048].double().div_(255).transpose(0, 1).reshape(c, -1)
        total += v.sum(1)
        outer += v @ v.T
        n += v.shape[1]
    mean = total / n
    cov = outer / n - torch.outer(mean, mean)
    eigval, eigvec = torch.linalg.eigh(cov)
    stats = {"mean": mean.tolist(), "std": cov.diagonal().clamp_min(1e-12).sqrt().tolist(),
             "eigval": eigval.clamp_min(0).tolist(), "eigvec": eigvec.tolist()}
    if cache:
        _write_cache(path, key, stats)
    return stats


def _write_cache(path: Path, key: str, value: Any) -> None:
    try:
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        table[key] = value
        write_atomic(path, json.dumps(table))
    except OSError:
        pass  # a read-only home only costs recomputing
