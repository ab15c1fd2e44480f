"""The datasets `explain` reads: for max-activating patches, the error analysis and the
example images of attribution maps. Read through archlab.data, fed as `archlab eval` feeds
them (the same evaluation view: resize, centre crop, normalise), so the error analysis sees
what evaluation sees.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from archlab.data import (
    BatchPipeline, ImageData, ImageFileError, eval_transform, evaluation_split, load_dataset,
    open_image,
)
from archlab.explain.images import InputImage
from archlab.explain.subject import ExplainError, Subject


def read_dataset(subject: Subject, data: Any, split: str | None = None):
    """An ImageData as is, or a dataset spec read for this model's channels (and classes,
    for a folder or CSV); the split defaults to 'test' where the source has one."""
    if not isinstance(data, (str, Path)):
        return data
    spec = str(data)
    return load_dataset(spec, split or evaluation_split(spec), in_chans=subject.in_chans,
                        classes=subject.classes if subject.classes and Path(spec).exists()
                        else None)


def sample_dataset(subject: Subject, data: Any, split: str | None = None,
                   limit: int | None = None, seed: int = 0):
    """(ImageData, original indices): `data` (an ImageData or a dataset spec) read for this
    model's classes and channels, with `limit` images drawn at random (sorted) when given."""
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


def dataset_batches(subject: Subject, data: ImageData, batch_size: int = 128,
                    issues: list | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(normalised images, labels, positions in `data`) batches, in order. In-memory images
    are resized as the trainer resizes them; files are decoded as `load_images` does, and a
    file that cannot be decoded is skipped (its message appended to `issues`)."""
    device = subject.device
    pipeline = BatchPipeline(subject.image_size, subject.mean, subject.std)

    def batch(uint8: torch.Tensor, pos: torch.Tensor):
        return (*pipeline(uint8.to(device), data.targets[pos].to(device)), pos)

    if data.in_memory:
        for start in range(0, len(data), batch_size):
            pos = torch.arange(start, min(start + batch_size, len(data)))
            yield batch(data.images[pos], pos)
        return
    transform = eval_transform(subject.image_size, subject.crop_pct)
    mode = "L" if subject.in_chans == 1 else "RGB"
    xs, kept = [], []
    for i, path in enumerate(data.files):
        try:
            img, _ = open_image(path, mode, data.max_pixels)
        except ImageFileError as e:
            if issues is not None:
                issues.append(str(e))
            continue
        xs.append(transform(img))
        kept.append(i)
        if len(xs) == batch_size:
            yield batch(torch.stack(xs), torch.tensor(kept))
            xs, kept = [], []
    if xs:
        yield batch(torch.stack(xs), torch.tensor(kept))


def one_per_class(data: ImageData, count: int = 4) -> list[int]:
    """The positions of `count` images of different classes: the first image of each of the
    first `count` classes met in `data`, in class order."""
    chosen: dict[int, int] = {}
    for label, pos in zip(data.targets.tolist(), range(len(data))):
        if label not in chosen:
            chosen[label] = pos
        if len(chosen) == min(count, data.num_classes):
            break
    return sorted(chosen.values(), key=lambda p: data.targets[p])


def dataset_examples(subject: Subject, data: ImageData, count: int = 4) -> list[InputImage]:
    """`count` images of different classes (`one_per_class`), as the model sees them."""
    picked = data.subset(one_per_class(data, count))
    out = []
    for x, y, _ in dataset_batches(subject, picked, batch_size=count):
        for xi, yi, disp in zip(x, y.tolist(), subject.to_display(x)):
            out.append(InputImage(f"{data.name}-{data.classes[yi]}".replace(" ", "_")
                                  .replace("/", "-"), xi[None], disp, yi))
    return out
