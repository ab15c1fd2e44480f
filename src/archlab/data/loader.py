"""Batches: an ImageData cut into shuffled, augmented batches on the training device.

In-memory data is indexed straight from its uint8 tensor (moved to the device once) and
augmented by a `BatchPipeline` there. Files go through DataLoader workers that decode and
crop each image (`FileDataset`), and the same pipeline finishes the batch on the device.

Both orders and all augmentation draws are functions of (seed, epoch, position), never of
the number of workers or of what ran before: so a run repeats exactly, and a run resumed
at batch k of epoch e sees exactly the batches the uninterrupted run saw. Files that cannot
be decoded are dropped from their batch, counted and listed in `issues`; with `strict` the
first one stops the run with its name.
"""
from __future__ import annotations

import base64
import os
from typing import Iterator

import torch

from archlab.data.dataset import ImageData
from archlab.data.decode import open_image
from archlab.data.errors import ImageFileError, Issues
from archlab.data.transforms import BatchPipeline


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (a tiny splitmix-style hash, stable across runs)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return _mix(seed, epoch, stream)


def generator_state(g: torch.Generator) -> str:
    return base64.b64encode(g.get_state().numpy().tobytes()).decode()


def set_generator_state(g: torch.Generator, state: str) -> None:
    g.set_state(torch.frombuffer(bytearray(base64.b64decode(state)), dtype=torch.uint8))


class _Loader:
    """What both loaders share: the epoch's order and augmentation generator, resumable."""

    def __init__(self, data: ImageData, batch_size: int, pipeline: BatchPipeline,
                 device: torch.device, shuffle: bool, drop_last: bool, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.data, self.batch_size, self.pipeline = data, batch_size, pipeline
        self.device, self.shuffle, self.seed = torch.device(device), shuffle, seed
        self.drop_last = drop_last and len(data) >= batch_size
        self.epoch, self.start_batch = 0, 0
        self.generator = torch.Generator()
        self.rank, self.world = 0, 1       # this process's slice of every batch (shard())

    # Whether the device-side augmentation of this loader draws one stream per process
    # (files: each process finishes only its slice) or the global batch's (memory).
    _stream_per_rank = False

    def shard(self, rank: int, world: int) -> None:
        """Several processes (DDP): the batches stay the global ones, of `batch_size`, and
        this process yields its slice `rank` of `world` equal slices of each."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not one of {world} processes")
        if self.batch_size % world:
            raise ValueError(f"batch_size {self.batch_size} is the global batch and must "
                             f"divide among {world} processes")
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0, rng_state: str | None = None) -> None:
        """Prepare epoch `epoch`, optionally resuming at batch `start_batch` with the
        augmentation generator's saved state."""
        self.epoch, self.start_batch = epoch, start_batch
        seed = epoch_seed(self.seed, epoch, 1)
        self.generator.manual_seed(_mix(seed, self.rank) if self._stream_per_rank
                                   and self.world > 1 else seed)
        if rng_state is not None:
            set_generator_state(self.generator, rng_state)

    def rng_state(self) -> str:
        return generator_state(self.generator)

    def order(self) -> torch.Tensor:
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 0))
        return torch.randperm(n, generator=g)

    def _batches(self) -> list[torch.Tensor]:
        order = self.order()
        return [order[i * self.batch_size:(i + 1) * self.batch_size]
                for i in range(self.start_batch, len(self))]


class MemoryLoader(_Loader):
    """Batches of an in-memory ImageData, indexed and augmented on `device`."""

    def __init__(self, data: ImageData, batch_size: int, pipeline: BatchPipeline,
                 device: torch.device | str = "cpu", shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0) -> None:
        super().__init__(data, batch_size, pipeline, torch.device(device), shuffle, drop_last,
                         seed)
        self.images = data.images.to(self.device)
        self.targets = data.targets.to(self.device)
        self.issues = Issues()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (inputs, targets for the loss, true labels)."""
        for idx in self._batches():
            idx = idx.to(self.device)
            labels = self.targets[idx]
            x, y = self.pipeline(self.images[idx], labels, self.generator)
            if self.world > 1:  # the global batch's draws, then this process's slice
                x, y, labels = (t.tensor_split(self.world)[self.rank] for t in (x, y, labels))
            yield x, y, labels


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


class FileDataset(torch.utils.data.Dataset):
    """Decodes and transforms one file per item, in a worker. Never raises for a bad file:
    it returns (None, label, index, error) and the loader decides."""

    def __init__(self, data: ImageData, transform, image_size: int, seed: int = 0) -> None:
        self.files, self.targets = data.files, data.targets.tolist()
        self.mode = "L" if data.in_chans == 1 else "RGB"
        self.max_pixels = data.max_pixels
        self.transform, self.image_size, self.seed = transform, image_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        try:
            img, note = open_image(path, self.mode, self.max_pixels)
        except ImageFileError as e:
            return None, self.targets[i], i, str(e)
        if min(img.size) < self.image_size:
            small = (f"{img.size[0]}x{img.size[1]}, smaller than the {self.image_size} px "
                     "crop: upscaled")
            note = f"{note}; {small}" if note else small
        # The draw depends on (seed, epoch, item) only, whichever worker runs it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(self.seed, self.epoch, 2 + i))
            x = self.transform(img)
        return x, self.targets[i], i, note


def _collate(items):
    good = [it for it in items if it[0] is not None]
    x = torch.stack([it[0] for it in good]) if good else None
    y = torch.tensor([it[1] for it in good], dtype=torch.long)
    notes = [(it[2], it[3], it[0] is None) for it in items if it[3]]
    return x, y, notes


class FileLoader(_Loader):
    """Batches of a file ImageData: decoded in DataLoader workers, finished on `device`."""

    _stream_per_rank = True

    def __init__(self, data: ImageData, batch_size: int, pipeline: BatchPipeline,
                 transform, device: torch.device | str = "cpu", shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, workers: int | None = None,
                 strict: bool = False) -> None:
        super().__init__(data, batch_size, pipeline, torch.device(device), shuffle, drop_last,
                         seed)
        self.dataset = FileDataset(data, transform, pipeline.image_size, seed)
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers
        self.strict = strict
        self.skipped: dict[str, str] = {}      # path -> why, once per file
        self.notes: dict[str, str] = {}

    @property
    def issues(self) -> Issues:
        issues = Issues()
        for msg in self.skipped.values():
            issues.add("skipped (cannot be decoded)", msg)
        for path, note in self.notes.items():
            issues.add("converted or resized", f"{path}: {note}")
        return issues

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self.dataset.epoch = self.epoch
        batches = self._batches()
        if self.world > 1:  # decode only this process's slice of each global batch
            batches = [b.tensor_split(self.world)[self.rank] for b in batches]
        if not batches:
            return
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[b.tolist() for b in batches],
            num_workers=self.workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None)
        for x, labels, notes in loader:
            for i, msg, failed in notes:
                path = self.dataset.files[i]
                if failed:
                    if self.strict:
                        raise ImageFileError(path, msg.partition(": ")[2] or msg)
                    self.skipped[path] = msg
                else:
                    self.notes[path] = msg
            if x is None:
                continue
            x = x.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            x, y = self.pipeline(x, labels, self.generator)
            yield x, y, labels


def make_loader(data: ImageData, batch_size: int, pipeline: BatchPipeline, *,
                transform=None, device: torch.device | str = "cpu", shuffle: bool = True,
                drop_last: bool = True, seed: int = 0, workers: int | None = None,
                strict: bool = False) -> MemoryLoader | FileLoader:
    if data.in_memory:
        return MemoryLoader(data, batch_size, pipeline, device, shuffle, drop_last, seed)
    if transform is None:
        raise ValueError("a file dataset needs a per-image transform")
    return FileLoader(data, batch_size, pipeline, transform, device, shuffle, drop_last, seed,
                      workers, strict)
