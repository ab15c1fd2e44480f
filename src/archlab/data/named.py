"""The named datasets (fashion-mnist, mnist, digits, cifar10, cifar100): small enough to be
decoded once into a uint8 tensor. Found in the usual folders, downloaded when missing and
online, with a message that says how to get them when not."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from archlab.data.cache import cache_dir, data_dir
from archlab.data.dataset import ImageData, convert_channels
from archlab.data.errors import DataError
from archlab.data.split import stratified_split

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# name -> (folder names it may sit in, torchvision class name, class names, mirror-safe)
_IDX_DATASETS = {
    "fashion-mnist": (("fashion-mnist", "FashionMNIST/raw", "fashion_mnist"), "FashionMNIST",
                      FASHION_MNIST_CLASSES, True),
    "mnist": (("mnist", "MNIST/raw"), "MNIST", [str(i) for i in range(10)], False),
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "fmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100",
            "sklearn-digits": "digits"}
NAMED = ("fashion-mnist", "mnist", "digits", "cifar10", "cifar100")


def canonical(spec: str) -> str:
    """A dataset name in its one spelling ('FMNIST' -> 'fashion-mnist'); other specs lowered."""
    key = spec.strip().lower()
    return _ALIASES.get(key, key)


def load_named(name: str, split: str, *, root, download: bool | None,
               classes: Sequence[str] | None, in_chans: int | None) -> ImageData:
    """A named dataset's split in memory ('all' is the training split, but for digits),
    checked against `classes` and converted to `in_chans` channels when asked."""
    split = "train" if split == "all" and name != "digits" else split
    if name in _IDX_DATASETS:
        data = _load_idx_dataset(name, split, root, download)
    elif name == "digits":
        data = _load_digits(split)
    else:
        data = _load_cifar(name, split, root, download)
    if classes is not None and list(classes) != data.classes:
        raise DataError(f"{name} has classes {data.classes}, not {list(classes)}")
    if in_chans and in_chans != data.in_chans:
        data = convert_channels(data, in_chans)
    return data


def _search_roots(root: str | os.PathLike | None) -> list[Path]:
    roots = []
    if root:
        roots.append(Path(root))
    if os.environ.get("ARCHLAB_DATA"):
        roots.append(Path(os.environ["ARCHLAB_DATA"]))
    roots += [cache_dir() / "data", Path("/usr/share/datasets")]
    return roots


def _offline() -> bool:
    return os.environ.get("ARCHLAB_OFFLINE", "") not in ("", "0")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format, plain or gzipped) into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} cannot be read ({e}); it may be truncated: reinstall or "
                        "download it again") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an idx file of unsigned bytes (magic {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path} holds {len(data)} bytes where its header {dims} promises "
                        f"{expected}; it is truncated or corrupt: reinstall or download it "
                        "again")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folders: Sequence[str], split: str, root) -> tuple[Path, Path] | None:
    names = _IDX[split]
    for base in _search_roots(root):
        for sub in ("", *folders):
            d = base / sub if sub else base
            found = []
            for n in names:
                hit = next((d / (n + ext) for ext in (".gz", "") if (d / (n + ext)).is_file()),
                           None)
                found.append(hit)
            if all(found):
                return found[0], found[1]
    return None


def _load_idx_dataset(name: str, split: str, root, download: bool | None) -> ImageData:
    folders, tv_name, classes, hflip = _IDX_DATASETS[name]
    found = _find_idx(folders, split, root)
    if found is None and download is not False and not _offline():
        target = data_dir()
        try:
            import torchvision

            getattr(torchvision.datasets, tv_name)(str(target), train=split == "train",
                                                    download=True)
        except Exception as e:  # noqa: BLE001  network errors come in many types
            hint = f" (download failed: {type(e).__name__}: {e})"
        else:
            hint = ""
        found = _find_idx(folders, split, target)
    else:
        hint = ""
    if found is None:
        apt = ("`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
               if name == "fashion-mnist" else "")
        where = ", ".join(str(r) for r in _search_roots(root))
        raise DataError(
            f"{name} ({split}) was not found in {where}{hint}. Get it with {apt}put the idx "
            f"files ({', '.join(n + '.gz' for n in _IDX[split])}) in a folder and set "
            f"ARCHLAB_DATA to it (or pass root=...); online, archlab downloads them with "
            "torchvision.")
    images = torch.from_numpy(read_idx(found[0]).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(found[1]).astype(np.int64))
    if len(images) != len(labels):
        raise DataError(f"{found[0]} holds {len(images)} images but {found[1]} "
                        f"{len(labels)} labels")
    return ImageData(name, split, list(classes), labels, images=images, in_chans=1,
                     hflip=hflip, spec={"source": str(found[0].parent)})


def _load_digits(split: str) -> ImageData:
    """scikit-learn's 1,797 8x8 digits (16 grey levels). They ship no test set: a fixed
    stratified fifth (seed 0) is the test split, the rest the training split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn: pip install scikit-learn"
                        ) from None
    d = load_digits()
    images = torch.from_numpy(np.rint(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    targets = torch.from_numpy(d.target.astype(np.int64))
    if split in ("train", "test"):
        test_idx, train_idx = stratified_split(targets, 0.2, seed=0)
        keep = train_idx if split == "train" else test_idx
        images, targets = images[keep], targets[keep]
    return ImageData("digits", split, [str(i) for i in range(10)], targets, images=images,
                     in_chans=1, hflip=False)


def _load_cifar(name: str, split: str, root, download: bool | None) -> ImageData:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    train = split == "train"
    errors = []
    for base in _search_roots(root):
        if (base / cls.base_folder).is_dir():
            try:
                ds = cls(str(base), train=train, download=False)
                break
            except RuntimeError as e:
                errors.append(f"{base}: {e}")
    else:
        if download is False or _offline():
            ds = None
        else:
            try:
                ds = cls(str(data_dir()), train=train, download=True)
            except Exception as e:  # noqa: BLE001
                errors.append(f"download failed: {type(e).__name__}: {e}")
                ds = None
        if ds is None:
            raise DataError(
                f"{name} ({split}) was not found in "
                f"{', '.join(str(r / cls.base_folder) for r in _search_roots(root))}"
                f"{' (' + '; '.join(errors) + ')' if errors else ''}. Download it where there "
                f"is internet (torchvision.datasets.{cls.__name__}(root, download=True)) and "
                "set ARCHLAB_DATA to that root (or pass root=...).")
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return ImageData(name, split, list(ds.classes), torch.tensor(ds.targets, dtype=torch.long),
                     images=images, in_chans=3, hflip=True)

