"""Where two models disagree: for every pair of a study's models, the test images that one
gets right and the other wrong, as small inline pictures for the report.

The images come from the protocol's own test set (the report reads data, never trains);
each run's stored predictions say what it answered on each image. The images shown first
are those on which the disagreement holds for the most seeds: a model that gets an image
right on every seed where the other gets it wrong on every seed has learnt something the
other has not, where a disagreement on one seed of three may be chance.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from archlab.data import ImageData, open_image
from archlab.study.data import DataCache
from archlab.study.predictions import RunPredictions
from archlab.study.protocol import parse_protocol
from archlab.study.summary import ModelSummary
from archlab.study.verdict import Verdict

PER_SIDE = 8          # images shown for each direction of a pair
THUMB = 56            # pixels of a thumbnail's side


@dataclass
class Side:
    """The images `right` gets right and `wrong` gets wrong."""

    right: str
    wrong: str
    count: int                                       # such images, summed over seeds
    images: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PairGallery:
    a: str
    b: str
    sides: tuple[Side, Side]

    @property
    def key(self) -> str:
        return f"{self.a} vs {self.b}"


def test_images(protocol_row: dict[str, Any] | None) -> ImageData | None:
    """The study's test set, as its runs were judged on (None when it cannot be read here,
    e.g. a dataset on another machine)."""
    if not protocol_row:
        return None
    try:
        protocol = parse_protocol(protocol_row["body"], default_name=protocol_row["name"],
                                  check_models=False)
        return DataCache().get(protocol)[1]
    except Exception:  # noqa: BLE001 - the report goes on without pictures
        return None


def _thumbnail(data: ImageData, i: int) -> str:
    from PIL import Image

    if data.in_memory:
        a = data.images[i].numpy()
        img = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    else:
        img, _ = open_image(data.files[i], "L" if data.in_chans == 1 else "RGB")
    img = img.resize((THUMB, THUMB), Image.NEAREST if img.width < THUMB else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _side(right: ModelSummary, wrong: ModelSummary, seeds: list[int],
          preds: dict[str, dict[int, RunPredictions]], data: ImageData,
          per_side: int) -> Side:
    r = np.stack([preds[right.label][s].correct() for s in seeds])
    w = np.stack([preds[wrong.label][s].correct() for s in seeds])
    wins = (r & ~w).sum(axis=0)                       # seeds on which only `right` is right
    order = np.lexsort((np.arange(len(wins)), -wins))
    chosen = [int(i) for i in order[:per_side] if wins[i] > 0]
    side = Side(right.label, wrong.label, int(wins.sum()))
    classes = data.classes
    for i in chosen:
        s = next(s for s in seeds if r[seeds.index(s), i] and not w[seeds.index(s), i])
        said = int(preds[wrong.label][s].pred[i])
        side.images.append({"src": _thumbnail(data, i), "index": i,
                            "truth": classes[int(data.targets[i])],
                            "said": classes[said] if said < len(classes) else str(said),
                            "seeds": f"{int(wins[i])} of {len(seeds)}"})
    return side


def disagreements(summaries: Sequence[ModelSummary], verdict: Verdict, data: ImageData | None,
                  per_side: int = PER_SIDE) -> list[PairGallery]:
    """A gallery for every pair of models that kept their predictions, in rank order
    (#1 against #2 first), when the test set can be read and matches the predictions."""
    if data is None or not verdict.tested:
        return []
    by_label = {s.label: s for s in summaries}
    preds = {s.label: {r.seed: p for r in s.done if (p := RunPredictions.of(r)) is not None}
             for s in summaries if s.label in verdict.order}
    targets = data.targets.numpy()
    if any(not np.array_equal(p.target, targets) for ps in preds.values() for p in ps.values()):
        return []   # another test set than the runs were judged on
    out = []
    tested = [m for m in verdict.order if preds.get(m)]
    for i, a in enumerate(tested):
        for b in tested[i + 1:]:
            seeds = sorted(set(preds[a]) & set(preds[b]))
            if not seeds:
                continue
            out.append(PairGallery(a, b, (
                _side(by_label[a], by_label[b], seeds, preds, data, per_side),
                _side(by_label[b], by_label[a], seeds, preds, data, per_side))))
    return out


__all__ = ["PairGallery", "Side", "disagreements", "test_images"]
