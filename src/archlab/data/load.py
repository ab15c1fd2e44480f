"""The entry points: where images come from (a named dataset, a folder of class subfolders,
a CSV of files), which splits a source has, and a dataset's train and test sets.

`load_dataset(spec, split)` turns a source into an `ImageData`:

- the named datasets (`fashion-mnist`, `mnist`, `digits`, `cifar10`, `cifar100`) are small
  enough to be decoded once into a uint8 tensor (N, C, H, W) that the trainer batches and
  augments on its device, so the loader is never the bottleneck (Fashion-MNIST's 60,000
  images take 47 MB);
- a folder (`root/<class>/<image>`, or ImageNet's `root/train/<class>/...` beside
  `root/val/<class>/...`) and a CSV of `path,label` rows stay a list of files that
  DataLoader workers decode (`ImageData.to_memory()` decodes a small one once instead).

Bad input is named, never fatal by surprise: a missing or unreadable file, an empty class
folder, an unknown label is reported with the file and the fix; files that cannot be decoded
are skipped and listed (`strict=True` makes every such problem an error), and an image with
more pixels than `max_pixels` is refused as a possible decompression bomb.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from archlab.data.dataset import ImageData, resize_images
from archlab.data.decode import DEFAULT_MAX_PIXELS
from archlab.data.errors import DataError
from archlab.data.files import folder_split_dirs, load_path
from archlab.data.named import NAMED, canonical, load_named
from archlab.data.split import stratified_split


def dataset_splits(spec: str) -> tuple[str, ...]:
    """The splits a source has: ('train', 'test') for the named datasets and ImageNet-style
    folders, ('all',) for a plain folder or a CSV."""
    name = canonical(spec)
    if name in NAMED:
        return ("train", "test")
    path = Path(spec).expanduser()
    if path.is_dir():
        return tuple(folder_split_dirs(path))
    return ("all",)


def evaluation_split(spec: str) -> str:
    """The split a trained model is judged on when none is named: the source's test split,
    or all of it when it has none (a plain folder, a CSV)."""
    return "test" if "test" in dataset_splits(spec) else "all"


def load_dataset(spec: str, split: str = "train", *, root: str | os.PathLike | None = None,
                 image_size: int | None = None, in_chans: int | None = None,
                 classes: Sequence[str] | None = None, download: bool | None = None,
                 strict: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS
                 ) -> ImageData:
    """Load a dataset by name or path.

    spec: 'fashion-mnist', 'mnist', 'digits', 'cifar10', 'cifar100', a folder of class
        subfolders (optionally split as train/ and val/ or test/), or a CSV of `path,label`.
    split: 'train' or 'test' ('all' for a plain folder or CSV, which have only that).
    image_size: resize in-memory images to this side once, at load (upsample the 8x8
        digits to 32, for instance); files are resized when decoded.
    in_chans: 1 to read files as greyscale, 3 (default) for RGB.
    classes: the class names to map labels onto (a trained model's); labels or folders
        outside them are reported.
    download: None downloads a missing named dataset when online; False never does.
    strict: make every skipped row, empty class folder or undecodable file an error.
    """
    if split not in ("train", "test", "all", "val"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    split = "test" if split == "val" else split
    name = canonical(spec)
    if name in NAMED:
        data = load_named(name, split, root=root, download=download, classes=classes,
                          in_chans=in_chans)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(f"no dataset {spec!r}: not a known name ({', '.join(NAMED)}) and "
                            "no such file or folder")
        data = load_path(path, split, classes, in_chans or 3, strict, max_pixels)
    if image_size and data.in_memory and data.image_size != image_size:
        data = resize_images(data, image_size)
    data.spec = {"spec": spec, "split": data.split, "image_size": image_size,
                 "in_chans": data.in_chans, **data.spec}
    return data


def load_splits(spec: str, *, root=None, image_size: int | None = None,
                in_chans: int | None = None, classes: Sequence[str] | None = None,
                holdout: float | None = 0.2, test_fraction: float | None = None,
                subsample: float | None = None, strict: bool = False):
    """(train, test) ImageData of a dataset spec: its own train and test splits where it
    has them; else, for a plain folder or a CSV, a fixed stratified `holdout` share (seed
    0, whatever the run's seed) as the test set, or no test set when `holdout` is None.
    `subsample` keeps a fixed stratified share of the whole dataset (of each of its own
    splits) before anything else is split off: the comparison article works on 25% of its
    images. `test_fraction` keeps a fixed stratified share of the test set (a quicker
    evaluation). The test set is the same images for every caller with the same arguments."""
    kw = dict(root=root, image_size=image_size, strict=strict)
    if "test" in dataset_splits(spec):
        train = load_dataset(spec, "train", in_chans=in_chans, classes=classes, **kw)
        test = load_dataset(spec, "test", classes=train.classes, in_chans=train.in_chans, **kw)
        train, test = _subsample(train, subsample), _subsample(test, subsample)
    elif holdout:
        full = _subsample(load_dataset(spec, "all", in_chans=in_chans, classes=classes, **kw),
                          subsample)
        held, rest = stratified_split(full.targets, holdout, seed=0)
        train, test = full.subset(rest), full.subset(held)
        test.split = "holdout"
    else:
        full = load_dataset(spec, "all", in_chans=in_chans, classes=classes, **kw)
        return _subsample(full, subsample), None
    if test_fraction is not None and test_fraction < 1:
        held, _ = stratified_split(test.targets, test_fraction, seed=0)
        test = test.subset(held)
    return train, test


def _subsample(data, fraction: float | None):
    if fraction is None or fraction >= 1:
        return data
    # Its own stream (seed 1), so that the subsample does not line up with the holdout's.
    kept, _ = stratified_split(data.targets, fraction, seed=1)
    return data.subset(kept)
