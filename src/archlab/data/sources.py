"""Where images come from: named datasets, a folder of class subfolders, a CSV of files.

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

import csv
import gzip
import hashlib
import json
import os
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
# PIL's own threshold for its decompression-bomb warning (about 89 Mpx).
DEFAULT_MAX_PIXELS = 89_478_485
# Memory a file dataset may take once decoded (ImageData.to_memory) before we refuse.
MEMORY_BUDGET_BYTES = 4 * 2**30


class DataError(ValueError):
    """Data that cannot be used as given; the message names the file and the fix."""


class ImageFileError(DataError):
    """One image file that cannot be decoded."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# --------------------------------------------------------------------------------------
# Problems found in the data: counted, with the first few files named
# --------------------------------------------------------------------------------------


class Issues:
    """Problems found while reading data, grouped by kind ('skipped', 'converted', ...)."""

    SHOW = 5  # files named per kind in a summary

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, message: str) -> None:
        self.items[kind].append(message)

    def extend(self, other: "Issues") -> None:
        for kind, messages in other.items.items():
            self.items[kind].extend(messages)

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(v) for v in self.items.values())
        return len(self.items.get(kind, ()))

    def __bool__(self) -> bool:
        return any(self.items.values())

    def summary(self) -> list[str]:
        lines = []
        for kind, messages in self.items.items():
            lines.append(f"{len(messages)} {kind}:")
            lines += [f"  {m}" for m in messages[:self.SHOW]]
            if len(messages) > self.SHOW:
                lines.append(f"  ... and {len(messages) - self.SHOW} more")
        return lines

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.items.items()}


# --------------------------------------------------------------------------------------
# Decoding one image file
# --------------------------------------------------------------------------------------


def open_image(path: str | os.PathLike, mode: str = "RGB",
               max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """Decode an image file into a PIL image in `mode` ('RGB' or 'L').

    Returns (image, note): the note says what conversion the file needed ('RGBA -> RGB,
    transparent pixels on white', '16-bit -> 8-bit', ...) or is None. Raises ImageFileError
    naming the file for an empty, truncated, corrupt or non-image file, or one with more than
    `max_pixels` pixels (a decompression bomb: a few kilobytes that decode to gigabytes).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageFileError(path, f"cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise ImageFileError(path, "is empty (0 bytes); it was cut off while being copied "
                                   "or downloaded: copy it again or delete it")
    with warnings.catch_warnings():
        # PIL only warns between 1x and 2x its limit; we refuse everything above ours.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            raise ImageFileError(path, "is not an image that PIL can read (a wrong extension, "
                                       "or a corrupt file)") from None
        except Image.DecompressionBombError as e:
            raise ImageFileError(path, f"refused as a possible decompression bomb ({e})"
                                 ) from None
        except OSError as e:
            raise ImageFileError(path, f"cannot be opened ({e})") from None
        w, h = img.size
        if max_pixels and w * h > max_pixels:
            img.close()
            raise ImageFileError(
                path, f"is {w}x{h} = {w * h / 1e6:.0f} Mpx, more than the limit of "
                      f"{max_pixels / 1e6:.0f} Mpx: refused as a possible decompression bomb "
                      "(raise max_pixels if the image is genuine)")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageFileError(path, f"is truncated or corrupt ({e}); copy it again or "
                                       "delete it") from None
    if w == 0 or h == 0:
        raise ImageFileError(path, f"has no pixels ({w}x{h})")
    return to_image_mode(img, mode)


def to_image_mode(img, mode: str):
    """Convert a decoded image to 'RGB' or 'L', saying what was done when it was not trivial."""
    from PIL import Image

    src, note = img.mode, None
    if src in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit (and 32-bit) greyscale: PIL's convert('L') would clip at 255, not rescale.
        a = np.asarray(img)
        if src == "F":
            a = a * 255.0 if a.size and float(a.max()) <= 1.0 else a
        elif a.size and int(a.max()) > 255:
            a = a / 257.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        note = f"{src} (16/32-bit) -> 8-bit"
    elif src in ("RGBA", "LA", "La", "RGBa", "PA") or (src == "P" and "transparency" in img.info):
        # Transparent pixels take a white background, not whatever colour they hide.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        note = f"{src} -> RGB, transparent pixels on white"
    elif src == "CMYK":
        img = img.convert("RGB")
        note = "CMYK -> RGB"
    elif src == "P":
        img = img.convert("RGB")
        note = "palette -> RGB"
    elif src == "1":
        img = img.convert("L")
    if img.mode != mode:
        if img.mode not in ("L", "RGB") and note is None:
            note = f"{src} -> {mode}"
        img = img.convert(mode)
    return img, note


# --------------------------------------------------------------------------------------
# The dataset object
# --------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """A labelled set of images: in memory (uint8 `images`, N x C x H x W) or as `files`."""

    name: str
    split: str
    classes: list[str]
    targets: torch.Tensor                      # int64 (N,)
    images: torch.Tensor | None = None         # uint8 (N, C, H, W) when in memory
    files: list[str] | None = None             # paths, when decoded on the fly
    in_chans: int = 3
    # False where a mirror image is another class or none (digits: a mirrored 2 is no 2).
    hflip: bool = True
    spec: dict[str, Any] = field(default_factory=dict)  # how load_dataset made it
    issues: Issues = field(default_factory=Issues, repr=False)
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if (self.images is None) == (self.files is None):
            raise ValueError("an ImageData holds either images or files")
        n = len(self.images) if self.images is not None else len(self.files)
        if len(self.targets) != n:
            raise ValueError(f"{n} images but {len(self.targets)} labels")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int | None:
        """The side of the images in memory; None for files (each has its own)."""
        return int(self.images.shape[-1]) if self.images is not None else None

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ImageData":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return replace(
            self, targets=self.targets[idx],
            images=self.images[idx] if self.images is not None else None,
            files=[self.files[i] for i in idx.tolist()] if self.files is not None else None)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.targets, minlength=self.num_classes).tolist()

    def describe(self) -> str:
        where = (f"in memory, {self.images.shape[-2]}x{self.images.shape[-1]} px, "
                 f"{self.images.numel() / 2**20:.0f} MiB" if self.in_memory else "files")
        return (f"{self.name} [{self.split}]: {len(self):,} images, {self.num_classes} classes, "
                f"{self.in_chans} channel{'s' if self.in_chans > 1 else ''}, {where}")

    def to_memory(self, image_size: int, strict: bool = False) -> "ImageData":
        """Decode every file once, resized (shorter side) and centre-cropped to `image_size`,
        into a uint8 tensor; undecodable files are skipped and listed in `issues`."""
        if self.in_memory:
            return self
        nbytes = len(self) * self.in_chans * image_size * image_size
        if nbytes > MEMORY_BUDGET_BYTES:
            raise DataError(f"{self.name}: {len(self):,} images at {image_size} px take "
                            f"{nbytes / 2**30:.1f} GiB; keep them as files (decoded in "
                            "workers) or choose a smaller image size")
        from torchvision.transforms.v2 import functional as TF

        mode = "L" if self.in_chans == 1 else "RGB"
        issues, kept, arrays = Issues(), [], []
        for i, path in enumerate(self.files):
            try:
                img, note = open_image(path, mode, self.max_pixels)
            except ImageFileError as e:
                if strict:
                    raise
                issues.add("skipped (cannot be decoded)", str(e))
                continue
            if note:
                issues.add("converted", f"{path}: {note}")
            t = TF.pil_to_tensor(img)
            t = TF.center_crop(TF.resize(t, image_size, antialias=True), image_size)
            arrays.append(t)
            kept.append(i)
        if not arrays:
            raise DataError(f"{self.name}: none of the {len(self)} files could be decoded; "
                            + "; ".join(issues.summary()[:3]))
        out = replace(self, images=torch.stack(arrays), files=None,
                      targets=self.targets[torch.tensor(kept)],
                      spec={**self.spec, "in_memory": image_size})
        out.issues = Issues()
        out.issues.extend(self.issues)
        out.issues.extend(issues)
        return out

    def fingerprint(self) -> str:
        """A short hash of the labels and sources, to tell one dataset version from another."""
        h = hashlib.sha256()
        h.update(json.dumps([self.name, self.split, self.classes]).encode())
        h.update(self.targets.numpy().tobytes())
        if self.files is not None:
            h.update("\n".join(self.files).encode())
        else:
            h.update(str(tuple(self.images.shape)).encode())
            h.update(self.images[:: max(1, len(self) // 64)].numpy().tobytes())
        return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------
# Where the data lives
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """archlab's cache: $XDG_CACHE_HOME/archlab or ~/.cache/archlab."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archlab"


def data_dir() -> Path:
    """Where downloads go: $ARCHLAB_DATA, else the cache."""
    env = os.environ.get("ARCHLAB_DATA")
    return Path(env) if env else cache_dir() / "data"


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


# --------------------------------------------------------------------------------------
# Named datasets
# --------------------------------------------------------------------------------------

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
    from archlab.data.split import stratified_split

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


# --------------------------------------------------------------------------------------
# Folders and CSVs
# --------------------------------------------------------------------------------------

_TEST_DIRS = ("test", "val", "valid", "validation")


def is_image_name(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_split_dirs(root: Path) -> dict[str, Path]:
    """{'train': dir, 'test': dir} for ImageNet's layout, {'all': root} for a plain one."""
    train = root / "train"
    tests = [root / t for t in _TEST_DIRS if (root / t).is_dir()]
    if train.is_dir() and _subdirs(train):
        out = {"train": train}
        if tests:
            out["test"] = tests[0]
        return out
    return {"all": root}


def _sort_labels(labels) -> list[str]:
    labels = list(labels)
    if labels and all(lbl.lstrip("-").isdigit() for lbl in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _load_folder(root: Path, split: str, classes: Sequence[str] | None, in_chans: int,
                 strict: bool) -> ImageData:
    dirs = _folder_split_dirs(root)
    folder = _pick_split(dirs, split, root)
    class_dirs = _subdirs(folder)
    issues = Issues()
    if not class_dirs:
        loose = [p for p in folder.iterdir() if is_image_name(p)]
        what = f"{len(loose)} images but" if loose else "nothing, and"
        raise DataError(f"{folder} holds {what} no class subfolders. An image-folder dataset "
                        f"is {folder}/<class name>/<image files>"
                        + ("; to classify loose images use `archlab predict`." if loose else "."))
    names = [d.name for d in class_dirs]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise DataError(f"{folder}: class folder(s) {', '.join(unknown)} are not classes "
                            f"of this model (it knows {', '.join(classes)})")
        class_list = list(classes)
    else:
        class_list = names
    files, targets, ignored = [], [], []
    for d in class_dirs:
        label = class_list.index(d.name)
        found = sorted(p for p in d.rglob("*") if p.is_file())
        images = [p for p in found if is_image_name(p)]
        ignored += [p for p in found if not is_image_name(p) and not p.name.startswith(".")]
        if not images:
            msg = (f"class folder {d} holds no images"
                   + (f" ({len(found)} other files)" if found else "")
                   + "; its class will never be seen in training: add images or remove it")
            if strict:
                raise DataError(msg)
            issues.add("empty class folders", msg)
        files += [str(p) for p in images]
        targets += [label] * len(images)
    for p in ignored:
        issues.add("ignored (not an image by its extension)", str(p))
    if not files:
        raise DataError(f"{folder}: none of its {len(class_dirs)} class folders holds an image "
                        f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return ImageData(str(root), split, class_list, torch.tensor(targets, dtype=torch.long),
                     files=files, in_chans=in_chans, issues=issues,
                     spec={"source": str(folder)})


def _pick_split(dirs: dict[str, Path], split: str, root: Path) -> Path:
    if split in dirs:
        return dirs[split]
    if "all" in dirs and split in ("train", "all", "test"):
        # A plain folder is one split: whatever it is asked for, it is this folder.
        return dirs["all"]
    if split == "all":
        raise DataError(f"{root} is split into {', '.join(dirs)}; ask for one of them")
    raise DataError(f"{root} has no {split!r} split (it has {', '.join(dirs)}); a test split "
                    f"is a sibling folder named {' or '.join(_TEST_DIRS)}")


def _load_csv(path: Path, classes: Sequence[str] | None, in_chans: int,
              strict: bool) -> ImageData:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read as a UTF-8 CSV ({e})") from None
    rows = list(csv.reader(text.splitlines()))
    header = ("path", "file", "filename", "image", "img")
    start = 0
    if (rows and len(rows[0]) >= 2 and rows[0][0].strip().lower() in header
            and not _resolve(path, rows[0][0]).is_file()):
        start = 1
    entries, issues = [], Issues()

    def problem(kind: str, msg: str) -> None:
        if strict:
            raise DataError(msg)
        issues.add(kind, msg)

    for line, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            problem("bad rows", f"{path}, line {line}: expected `path,label`, got "
                                f"{len(row)} fields: {','.join(row)[:80]}")
            continue
        file, label = row[0].strip(), row[1].strip()
        if not label:
            problem("rows without a label", f"{path}, line {line}: {file} has no label")
            continue
        if classes is not None and label not in classes:
            problem("unknown labels", f"{path}, line {line}: label {label!r} is not one of "
                                      f"the classes ({', '.join(classes)})")
            continue
        resolved = _resolve(path, file)
        if not resolved.is_file():
            problem("missing files", f"{path}, line {line}: {resolved} does not exist")
            continue
        entries.append((str(resolved), label))
    if not entries:
        raise DataError(f"{path}: no usable `path,label` rows"
                        + (f" ({'; '.join(issues.summary()[:4])})" if issues else ""))
    class_list = list(classes) if classes is not None else _sort_labels({e[1] for e in entries})
    index = {c: i for i, c in enumerate(class_list)}
    return ImageData(str(path), "all", class_list,
                     torch.tensor([index[e[1]] for e in entries], dtype=torch.long),
                     files=[e[0] for e in entries], in_chans=in_chans, issues=issues,
                     spec={"source": str(path)})


def _resolve(csv_path: Path, file: str) -> Path:
    p = Path(file).expanduser()
    return p if p.is_absolute() else csv_path.parent / p


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------


def _canonical(spec: str) -> str:
    key = spec.strip().lower()
    return _ALIASES.get(key, key)


def dataset_splits(spec: str) -> tuple[str, ...]:
    """The splits a source has: ('train', 'test') for the named datasets and ImageNet-style
    folders, ('all',) for a plain folder or a CSV."""
    name = _canonical(spec)
    if name in NAMED:
        return ("train", "test")
    path = Path(spec).expanduser()
    if path.is_dir():
        return tuple(_folder_split_dirs(path))
    return ("all",)


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
    name = _canonical(spec)
    if name in NAMED:
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
            data = _convert_channels(data, in_chans)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise DataError(f"no dataset {spec!r}: not a known name ({', '.join(NAMED)}) and "
                            "no such file or folder")
        chans = in_chans or 3
        if path.is_dir():
            data = _load_folder(path, split, classes, chans, strict)
        elif path.suffix.lower() in (".csv", ".txt", ".tsv"):
            if split not in ("train", "all", "test"):
                raise DataError(f"a CSV is a single split; got {split!r}")
            data = _load_csv(path, classes, chans, strict)
        else:
            raise DataError(f"{path} is neither a folder of class subfolders nor a CSV of "
                            "`path,label` rows")
        data.max_pixels = max_pixels
    if image_size and data.in_memory and data.image_size != image_size:
        data = resize_images(data, image_size)
    data.spec = {"spec": spec, "split": data.split, "image_size": image_size,
                 "in_chans": data.in_chans, **data.spec}
    return data


def load_splits(spec: str, *, root=None, image_size: int | None = None,
                in_chans: int | None = None, classes: Sequence[str] | None = None,
                holdout: float | None = 0.2, test_fraction: float | None = None,
                strict: bool = False):
    """(train, test) ImageData of a dataset spec: its own train and test splits where it
    has them; else, for a plain folder or a CSV, a fixed stratified `holdout` share (seed
    0, whatever the run's seed) as the test set, or no test set when `holdout` is None.
    `test_fraction` keeps a fixed stratified share of the test set (a quicker evaluation).
    The test set is the same images for every caller with the same arguments."""
    from archlab.data.split import stratified_split

    kw = dict(root=root, image_size=image_size, strict=strict)
    if "test" in dataset_splits(spec):
        train = load_dataset(spec, "train", in_chans=in_chans, classes=classes, **kw)
        test = load_dataset(spec, "test", classes=train.classes, in_chans=train.in_chans, **kw)
    elif holdout:
        full = load_dataset(spec, "all", in_chans=in_chans, classes=classes, **kw)
        held, rest = stratified_split(full.targets, holdout, seed=0)
        train, test = full.subset(rest), full.subset(held)
        test.split = "holdout"
    else:
        return load_dataset(spec, "all", in_chans=in_chans, classes=classes, **kw), None
    if test_fraction is not None and test_fraction < 1:
        held, _ = stratified_split(test.targets, test_fraction, seed=0)
        test = test.subset(held)
    return train, test


def _convert_channels(data: ImageData, in_chans: int) -> ImageData:
    imgs = data.images
    if in_chans == 3 and imgs.shape[1] == 1:
        imgs = imgs.expand(-1, 3, -1, -1).contiguous()
    elif in_chans == 1 and imgs.shape[1] == 3:
        # ITU-R 601 luma, as PIL's convert('L') computes it.
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        imgs = (imgs.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    else:
        raise ValueError(f"cannot convert {imgs.shape[1]} channels to {in_chans}")
    return replace(data, images=imgs, in_chans=in_chans)


def resize_images(data: ImageData, size: int, chunk: int = 4096) -> ImageData:
    """Resize in-memory images to size x size (bilinear, antialiased), in chunks."""
    import torch.nn.functional as F

    out = []
    for i in range(0, len(data), chunk):
        x = data.images[i:i + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return replace(data, images=torch.cat(out))


# --------------------------------------------------------------------------------------
# Per-channel statistics, computed once and cached
# --------------------------------------------------------------------------------------


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
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        table[key] = value
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs recomputing
