"""SIFT, a bag of visual words and a linear SVM: image classification before CNNs.

The pipeline the course starts from, as it stood around 2004-2006:

1. describe (archlab.classical.sift): RootSIFT descriptors (Lowe 2004) on a dense grid of
   keypoints (`detector: dense`, the default), because on small, centred objects a grid
   covers every part while a detector finds few stable points (Fei-Fei & Perona 2005 found
   dense sampling better for classification), or at the keypoints Lowe's difference-of-
   Gaussians detector finds, each with its scale and dominant orientation (`detector:
   dog`). Each descriptor is a 4x4 grid of 8-bin histograms of gradient orientation: 128
   numbers, robust to small shifts and to lighting.
2. quantise: k-means over a sample of descriptors learns a vocabulary of k "visual
   words"; each descriptor is replaced by its nearest word (Csurka et al. 2004, "Visual
   categorization with bags of keypoints").
3. pool: an image becomes the histogram of its words (`encoding: histogram`), over the
   whole image and over the cells of a spatial pyramid (Lazebnik et al. 2006): a bag of
   words forgets where things are, the pyramid gives some of it back. A histogram keeps
   only how many descriptors fell near each word; VLAD (Jegou et al. 2010, `encoding:
   vlad`, the default) also keeps where they fell relative to it, the sum of their
   residuals, so a small vocabulary (16 words of PCA-reduced descriptors) says more than
   a large histogram: on 28 px Fashion-MNIST about 8 points more accuracy than 1024-word
   histograms, at a fraction of the cost.
4. classify: the codes are power- and L2-normalised (VLAD per word first, "intra-
   normalisation", Arandjelovic & Zisserman 2013) and a linear SVM (one-vs-rest)
   separates the classes.

Every stage is a choice a CNN learns instead: the filters (SIFT's gradients), the
vocabulary (the feature maps), the pooling (the pyramid), only the classifier is shared.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from archlab.classical.sift import (DETECTORS, Descriptors, as_grey_uint8, describe_dense,
                                    describe_dog)

PAPER = ("Visual Categorization with Bags of Keypoints (Csurka et al. 2004); SIFT "
         "(Lowe 2004); spatial pyramid (Lazebnik et al. 2006)")
KEY_IDEA = ("Hand-designed features, learned vocabulary: SIFT descriptors (on a dense grid, or "
            "at difference-of-Gaussians keypoints) are quantised into k-means 'visual words', "
            "each image becomes a histogram of words over a spatial pyramid, and a linear SVM "
            "separates the classes.")


def _option(default: Any, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class BoVWConfig:
    """The pipeline's choices (the defaults suit 28-32 px images such as Fashion-MNIST)."""

    upscale: int = _option(28, "images are resized to this side first")
    detector: str = _option("dense", "dense (a grid) or dog (difference-of-Gaussians "
                                     "keypoints, each with its scale and orientation)")
    step: int = _option(3, "dense grid spacing, in pixels of the resized image")
    patch: int = _option(8, "dense keypoint size: the side SIFT's 4x4 cells cover")
    encoding: str = _option("vlad", "vlad (residuals to each word) or histogram (word counts)")
    vocab_size: int = _option(16, "k, the number of visual words")
    pca_dims: int = _option(64, "VLAD: descriptors projected to this many dims (0: keep 128)")
    pyramid: tuple[int, ...] = _option((1, 2), "grid sides of the spatial pyramid levels")
    kmeans_sample: int = _option(100_000, "descriptors sampled to learn the vocabulary")
    C: float = _option(1.0, "SVM regularisation (inverse)")
    power: float = _option(0.5, "power normalisation of the codes (0.5: signed square root)")
    max_iter: int = _option(3000, "SVM solver iterations")
    seed: int = _option(0, "k-means, PCA and SVM seed")

    def __post_init__(self) -> None:
        self.pyramid = tuple(int(v) for v in self.pyramid)
        if self.detector not in DETECTORS:
            raise ValueError(f"sift-bovw: unknown detector {self.detector!r}; choose "
                             f"{' or '.join(DETECTORS)}")
        for name in ("upscale", "step", "patch", "vocab_size", "kmeans_sample", "max_iter"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"sift-bovw: {name} must be positive, got {getattr(self, name)}")
        if self.encoding not in ("vlad", "histogram"):
            raise ValueError(f"sift-bovw: encoding is 'vlad' or 'histogram', got {self.encoding!r}")
        if not 0 <= self.pca_dims <= 128:
            raise ValueError(f"sift-bovw: pca_dims lies in 0..128, got {self.pca_dims}")
        if not self.pyramid or min(self.pyramid) < 1:
            raise ValueError(f"sift-bovw: pyramid is a list of grid sides >= 1, got {self.pyramid}")
        if self.patch > self.upscale:
            raise ValueError(f"sift-bovw: patch ({self.patch}) must fit in the image "
                             f"(upscale {self.upscale})")
        if self.C <= 0:
            raise ValueError(f"sift-bovw: C must be positive, got {self.C}")

    @classmethod
    def fields(cls) -> list[str]:
        return list(cls.__dataclass_fields__)

    @classmethod
    def options(cls) -> list[tuple[str, Any, str]]:
        """(name, default, what it sets) of every option, in order."""
        return [(f.name, f.default, f.metadata["help"]) for f in dataclass_fields(cls)]

    def code_size(self) -> int:
        """The length of an image's code: cells x words (x dims for VLAD)."""
        cells = sum(s * s for s in self.pyramid)
        dims = (self.pca_dims or 128) if self.encoding == "vlad" else 1
        return cells * self.vocab_size * dims

    def learned_numbers(self, num_classes: int) -> dict[str, int]:
        """How many numbers fitting learns from data, by stage: none by gradient descent."""
        pca = self.encoding == "vlad" and 0 < self.pca_dims < 128
        dims = self.pca_dims if pca else 128
        return {"PCA": (dims + 1) * 128 if pca else 0, "vocabulary": self.vocab_size * dims,
                "SVM": num_classes * (self.code_size() + 1)}


class SiftBoVW:
    """SIFT + bag of visual words + linear SVM, trained with `fit(images, labels)`.

    Images are uint8 arrays or tensors shaped (N, C, H, W) or (N, H, W); colour images are
    described in grey, as SIFT was.
    """

    def __init__(self, config: BoVWConfig | None = None, **kwargs: Any) -> None:
        self.config = config or BoVWConfig(**kwargs)
        self.pca_mean: np.ndarray | None = None         # (128,)
        self.pca_components: np.ndarray | None = None   # (dims, 128)
        self.vocabulary: np.ndarray | None = None       # (k, dims) float32
        self.coef: np.ndarray | None = None             # (classes, features)
        self.intercept: np.ndarray | None = None        # (classes,)
        self.classes: list[str] | None = None
        self.timings: dict[str, float] = {}

    # -- 1. describe ----------------------------------------------------------------------
    def describe(self, images) -> Descriptors:
        """RootSIFT descriptors of every image at the detector's keypoints."""
        c = self.config
        imgs = as_grey_uint8(images)
        if c.detector == "dog":
            return describe_dog(imgs, c.upscale)
        return describe_dense(imgs, c.upscale, c.step, c.patch)

    def _project(self, desc: np.ndarray) -> np.ndarray:
        if self.pca_components is None:
            return desc
        return (desc - self.pca_mean) @ self.pca_components.T

    # -- 2-3. quantise and pool -------------------------------------------------------------
    def _cells(self, desc: Descriptors) -> np.ndarray:
        """The pyramid cell of every keypoint at every level: (keypoints, levels), numbered
        across levels (level 1 is cell 0, level 2 cells 1-4, ...)."""
        xs, ys = desc.xy[:, 0], desc.xy[:, 1]
        cols, offset = [], 0
        for side in self.config.pyramid:
            cy = np.minimum((ys / desc.side * side).astype(int), side - 1)
            cx = np.minimum((xs / desc.side * side).astype(int), side - 1)
            cols.append(offset + cy * side + cx)
            offset += side * side
        return np.stack(cols, 1)

    def _assign(self, desc: np.ndarray, chunk: int = 65536) -> np.ndarray:
        v = self.vocabulary
        vv = (v * v).sum(1)
        out = np.empty(len(desc), dtype=np.int64)
        for i in range(0, len(desc), chunk):
            d = desc[i:i + chunk]
            # |d - v|^2 = |d|^2 - 2 d.v + |v|^2, and |d|^2 is the same for every word.
            out[i:i + chunk] = np.argmin(vv[None, :] - 2.0 * d @ v.T, axis=1)
        return out

    def encode(self, descriptors: Descriptors, chunk: int = 2048, sparse: bool = False):
        """The normalised code of each image: (N, cells * k) histograms or (N, cells * k *
        dims) VLAD vectors, all zero for an image without keypoints; with `sparse`, a
        float64 CSR matrix (the SVM's input, without ever holding the dense codes of every
        image)."""
        if self.vocabulary is None:
            raise RuntimeError("sift-bovw: fit() first (no vocabulary)")
        chunks = (self._encode(descriptors.images(i, i + chunk))
                  for i in range(0, len(descriptors), chunk))
        if not sparse:
            return np.concatenate(list(chunks))
        import scipy.sparse as sp

        return sp.vstack([sp.csr_matrix(c, dtype=np.float64) for c in chunks], format="csr")

    def _encode(self, descriptors: Descriptors) -> np.ndarray:
        import scipy.sparse as sp

        c = self.config
        n, m = len(descriptors), len(descriptors.values)
        k = len(self.vocabulary)
        ncells = sum(s * s for s in c.pyramid)
        d = self._project(descriptors.values).astype(np.float32)
        words = self._assign(d)                                  # (m,)
        cells = self._cells(descriptors)                         # (m, levels)
        levels = cells.shape[1]
        owner = np.repeat(np.arange(n), descriptors.counts())    # (m,)
        # Every descriptor votes once per pyramid level: slot = image, cell, word.
        slot = (owner[:, None] * ncells + cells) * k + words[:, None]   # (m, levels)
        member = sp.csr_matrix(
            (np.ones(m * levels, np.float32),
             (slot.ravel(), np.repeat(np.arange(m), levels))),
            shape=(n * ncells * k, m))
        if c.encoding == "histogram":
            per_image = np.maximum(descriptors.counts(), 1).astype(np.float32)[:, None]
            code = np.asarray(member.sum(1), dtype=np.float32).reshape(n, ncells * k) / per_image
        else:
            residual = d - self.vocabulary[words]
            code = np.asarray(member @ residual, dtype=np.float32).reshape(n, ncells * k, -1)
        code = np.sign(code) * np.abs(code) ** c.power
        if code.ndim == 3:
            code /= np.maximum(np.linalg.norm(code, axis=-1, keepdims=True), 1e-12)
            code = code.reshape(n, -1)
        code /= np.maximum(np.linalg.norm(code, axis=1, keepdims=True), 1e-12)
        return code

    # -- 4. training and use ----------------------------------------------------------------
    def fit(self, images, labels, classes: Sequence[str] | None = None) -> "SiftBoVW":
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.decomposition import PCA
        from sklearn.svm import LinearSVC

        c = self.config
        labels = np.asarray(labels).astype(np.int64)
        t0 = time.perf_counter()
        desc = self.describe(images)
        t1 = time.perf_counter()
        flat = desc.values
        if len(flat) < c.vocab_size:
            raise ValueError(f"sift-bovw: the {len(desc)} training images gave {len(flat)} "
                             f"descriptors, fewer than the {c.vocab_size} words to learn: give "
                             "more images, or detector dense (a grid finds some on any image)")
        rng = np.random.default_rng(c.seed)
        sample = flat[rng.choice(len(flat), min(c.kmeans_sample, len(flat)), replace=False)]
        if c.pca_dims and c.pca_dims < 128 and c.encoding == "vlad":
            pca = PCA(c.pca_dims, random_state=c.seed).fit(sample)
            self.pca_mean = pca.mean_.astype(np.float32)
            self.pca_components = np.ascontiguousarray(pca.components_, dtype=np.float32)
            sample = self._project(sample)
        km = MiniBatchKMeans(n_clusters=c.vocab_size, random_state=c.seed, batch_size=4096,
                             n_init=3, max_iter=50)
        km.fit(sample)
        self.vocabulary = km.cluster_centers_.astype(np.float32)
        t2 = time.perf_counter()
        # Sparse codes for the SVM: a (cell, word) pair that no descriptor fell into is
        # zero, and liblinear copies the matrix into its own float64 form anyway.
        feats = self.encode(desc, sparse=True)
        del desc
        svm = LinearSVC(C=c.C, max_iter=c.max_iter, random_state=c.seed)
        with warnings.catch_warnings():
            # liblinear's "increase the number of iterations" after max_iter: the codes are
            # separable enough that the last digits of the optimum do not move accuracy.
            warnings.simplefilter("ignore", category=_convergence_warning())
            svm.fit(feats, labels)
        coef, intercept = svm.coef_, svm.intercept_
        if coef.shape[0] == 1:  # two classes: sklearn keeps one hyperplane
            coef = np.concatenate([-coef, coef])
            intercept = np.concatenate([-intercept, intercept])
        self.coef = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept = np.ascontiguousarray(intercept, dtype=np.float32)
        n_classes = max(int(labels.max()) + 1, len(classes or ()))
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
        self.timings = {"describe": t1 - t0, "vocabulary": t2 - t1,
                        "encode+svm": time.perf_counter() - t2}
        return self

    def decision_function(self, images, batch: int = 2048) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("sift-bovw: fit() first")
        out = []
        for i in range(0, len(images), batch):
            out.append(self.encode(self.describe(images[i:i + batch])) @ self.coef.T
                       + self.intercept)
        return np.concatenate(out)

    def predict(self, images) -> np.ndarray:
        return self.decision_function(images).argmax(1)

    @property
    def num_params(self) -> int:
        """Numbers learned from data: the projection, the vocabulary, the SVM's hyperplanes."""
        return sum(int(a.size) for a in (self.pca_mean, self.pca_components, self.vocabulary,
                                         self.coef, self.intercept) if a is not None)

    # -- files (safetensors: nothing is unpickled) --------------------------------------
    def save(self, path: str | Path) -> Path:
        import json

        from safetensors.numpy import save_file

        if self.coef is None:
            raise RuntimeError("sift-bovw: nothing to save before fit()")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": "archlab-sift-bovw/1", "config": json.dumps(asdict(self.config)),
                "classes": json.dumps(self.classes)}
        arrays = {"vocabulary": self.vocabulary, "coef": self.coef, "intercept": self.intercept}
        if self.pca_components is not None:
            arrays.update(pca_mean=self.pca_mean, pca_components=self.pca_components)
        # safetensors writes the buffer as it lies: a transposed view would come back scrambled.
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path),
                  metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SiftBoVW":
        import json

        from safetensors import safe_open
        from safetensors.numpy import load_file

        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
        if meta.get("format") != "archlab-sift-bovw/1":
            raise ValueError(f"{path} is not a sift-bovw model written by archlab")
        arrays = load_file(str(path))
        model = cls(BoVWConfig(**json.loads(meta["config"])))
        model.vocabulary, model.coef = arrays["vocabulary"], arrays["coef"]
        model.intercept = arrays["intercept"]
        model.pca_mean = arrays.get("pca_mean")
        model.pca_components = arrays.get("pca_components")
        model.classes = json.loads(meta["classes"])
        return model


def _convergence_warning():
    from sklearn.exceptions import ConvergenceWarning

    return ConvergenceWarning
