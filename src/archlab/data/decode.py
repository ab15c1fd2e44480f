"""Decoding one image file: which names are images, how a file becomes a PIL image in 'RGB' or
'L', and the pixel limit that refuses a decompression bomb."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from archlab.data.errors import ImageFileError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
# PIL's own threshold for its decompression-bomb warning (about 89 Mpx).
DEFAULT_MAX_PIXELS = 89_478_485


def is_image_name(p: Path) -> bool:
    """Whether a file is an image by its extension (hidden files are not)."""
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


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
