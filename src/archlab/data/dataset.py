"""The dataset type: `ImageData`, labelled images in memory or as files, and what is done to
it in memory (subsets, decoding files once, resizing, converting channels)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from archlab.data.decode import DEFAULT_MAX_PIXELS, open_image
from archlab.data.errors import DataError, ImageFileError, Issues

# Memory a file dataset may take once decoded (ImageData.to_memory) before we refuse.
MEMORY_BUDGET_BYTES = 4 * 2**30


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


def convert_channels(data: ImageData, in_chans: int) -> ImageData:
    """In-memory images with `in_chans` channels: grey repeated to RGB, or RGB to luma."""
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
