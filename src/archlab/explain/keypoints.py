"""What SIFT sees: the keypoints Lowe's difference-of-Gaussians detector finds on an image,
each drawn as a circle whose radius is its scale and a radius along its dominant
orientation, the picture of SIFT the course shows.

`archlab explain sift-bovw IMAGE...` (or `--data fashion-mnist` for a few of its images)
draws them with no trained run: the detector learns nothing from data. It is the detector
of the baseline's `detector: dog` (archlab.classical.detect_dog, OpenCV's SIFT with Lowe's
constants), and an image under DOG_MIN_SIDE pixels is enlarged to it first, as there; the
picture shows the image the detector ran on. `img_size` resizes every image to that square
first, as the baseline's `upscale` does (`--img-size 28` shows what it sees on
Fashion-MNIST).

Scale and orientation follow OpenCV (and cv2.drawKeypoints' rich keypoints): the radius is
`size / 2`, the Gaussian scale sigma at which the keypoint was found, in pixels of the
image; the angle is in degrees, clockwise on the screen from the x axis (image y points
down), the peak of the histogram of gradient directions around the keypoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from archlab._io import write_atomic
from archlab._plot import figure, to_png
from archlab.explain.page import MANIFEST, template
from archlab.explain.pictures import slug
from archlab.explain.result import Picture
from archlab.explain.subject import ExplainError

TEMPLATE = "keypoints.html.j2"


@dataclass
class ImageKeypoints:
    """The DoG keypoints of one image."""

    name: str
    image: np.ndarray         # (H, W) uint8: the pixels the detector ran on
    given_size: tuple[int, int]   # (H, W) before any enlarging
    xy: np.ndarray            # (K, 2) centres (x, y), pixels of `image`
    scale: np.ndarray         # (K,) sigma, pixels (OpenCV's size / 2)
    angle: np.ndarray         # (K,) dominant orientation, degrees clockwise on the screen

    @property
    def count(self) -> int:
        return len(self.xy)


@dataclass
class KeypointsExplanation:
    images: list[ImageKeypoints]
    pictures: list[Picture] = field(default_factory=list)
    out_dir: Path | None = None

    @property
    def html(self) -> Path | None:
        return self.out_dir / "index.html" if self.out_dir else None


def sift_keypoints(image: np.ndarray, name: str = "image") -> ImageKeypoints:
    """The DoG keypoints of an (H, W) uint8 grey image, as the sift-bovw baseline detects
    them."""
    from archlab.classical import detect_dog

    kps, _, seen = detect_dog(np.ascontiguousarray(image, dtype=np.uint8))
    return ImageKeypoints(
        name, seen, tuple(image.shape[:2]),
        np.array([k.pt for k in kps], np.float64).reshape(-1, 2),
        np.array([k.size / 2 for k in kps], np.float64),
        np.array([k.angle for k in kps], np.float64))


def _grey_images(images: Sequence[Any] | None, data: Any, split: str | None,
                 count: int) -> list[tuple[str, np.ndarray]]:
    from archlab.explain.images import read_images

    if images:
        return [(name, np.asarray(img)) for name, img in read_images(images, "L")]
    if data is None:
        raise ExplainError("sift-bovw: give images to detect keypoints on (files, folders, "
                           "skimage:camera) or a dataset to take a few from (--data "
                           "fashion-mnist)")
    from archlab.classical.sift import as_grey_uint8
    from archlab.data import evaluation_split, load_dataset, open_image
    from archlab.explain.datasets import one_per_class

    ds = load_dataset(str(data), split or evaluation_split(str(data)))
    out = []
    for pos in one_per_class(ds, count):
        name = f"{ds.name}-{ds.classes[int(ds.targets[pos])]}".replace(" ", "_")
        pixels = (as_grey_uint8(ds.images[pos:pos + 1])[0] if ds.in_memory
                  else np.asarray(open_image(ds.files[pos], "L")[0]))
        out.append((name.replace("/", "-"), pixels))
    return out


def plot_keypoints(kp: ImageKeypoints, out_dir: Path, stem: str) -> Picture:
    from matplotlib.collections import EllipseCollection, LineCollection

    h, w = kp.image.shape
    fig = figure(6.0, 6.0 * h / w + 0.5, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(kp.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    colour = (1.0, 0.85, 0.0)
    ax.add_collection(EllipseCollection(
        2 * kp.scale, 2 * kp.scale, np.zeros(kp.count), units="xy", offsets=kp.xy,
        offset_transform=ax.transData, facecolors="none", edgecolors=colour, linewidths=0.8))
    rad = np.deg2rad(kp.angle)
    tips = kp.xy + kp.scale[:, None] * np.stack([np.cos(rad), np.sin(rad)], 1)
    ax.add_collection(LineCollection(np.stack([kp.xy, tips], 1), colors=[colour],
                                     linewidths=0.8))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(f"{kp.name[:40]}: {kp.count} keypoints", fontsize=10)
    enlarged = ("" if kp.image.shape == kp.given_size else
                f", enlarged from {kp.given_size[1]}x{kp.given_size[0]}")
    return Picture(
        to_png(fig, out_dir / f"keypoints-{stem}.png").name, "keypoints",
        f"SIFT keypoints of {kp.name}",
        f"{kp.count} difference-of-Gaussians keypoints on the {w}x{h} px image{enlarged}; "
        "each circle's radius is the keypoint's scale (sigma), its line the dominant "
        "orientation")


def write_page(result: KeypointsExplanation) -> Path:
    """index.html with the pictures and the counts, and explain.json listing them."""
    rows = [{"name": k.name, "count": k.count, "size": f"{k.image.shape[1]}x{k.image.shape[0]}",
             "median_scale": f"{np.median(k.scale):.1f}" if k.count else "-"}
            for k in result.images]
    html = template(TEMPLATE).render(images=rows, pictures=result.pictures)
    out = write_atomic(result.out_dir / "index.html", html)
    manifest = {"model": "sift-bovw", "methods": ["keypoints"], "notes": [],
                "counts": {k.name: k.count for k in result.images},
                "pictures": [vars(p) for p in result.pictures]}
    write_atomic(result.out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return out


def explain_keypoints(images: Sequence[Any] | None = None, *,
                      out_dir: str | Path | None = None, data: Any = None,
                      split: str | None = None, num_images: int = 4,
                      img_size: int | None = None,
                      log: Callable[[str], None] | None = None) -> KeypointsExplanation:
    """The DoG keypoints of `images` (files, folders, 'skimage:NAME', arrays), or of
    `num_images` images of different classes of `data`; with `out_dir`, a picture of each
    and an index.html with their counts."""
    from archlab.classical.sift import cv2_module

    cv2 = cv2_module()
    say = log or (lambda _msg: None)
    if img_size is not None and img_size < 1:
        raise ExplainError(f"img_size must be a positive side in pixels, got {img_size}")
    found = []
    for name, pixels in _grey_images(images, data, split, num_images):
        if img_size:
            pixels = cv2.resize(pixels, (img_size, img_size), interpolation=cv2.INTER_LINEAR)
        found.append(sift_keypoints(pixels, name))
        say(f"keypoints of {name}: {found[-1].count}")
    result = KeypointsExplanation(found)
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.out_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for kp in found:
            stem = slug(kp.name)
            while stem in used:
                stem += "-"
            used.add(stem)
            result.pictures.append(plot_keypoints(kp, result.out_dir, stem))
        write_page(result)
    return result
