"""Every test image's predicted and true class of a run, stored with the run.

Two models' accuracies differ by noise as well as by skill; with the class each predicted
for each of the same test images, a paired test (McNemar's, a paired bootstrap) tells one
from the other. So every run records them in its `result` JSON, in the test set's order:

    "predictions": {"n": 10000, "dtype": "uint8", "target": "<base64>", "pred": "<base64>",
                    "pred_tta": "<base64>" or null}

one byte per image while the classes fit in a byte (two, little-endian, up to 65536
classes): 10,000 test images take about 40 kB, and a study read on another machine from
PostgreSQL has them too.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

# The stored dtypes, byte order fixed so that a study reads the same on any machine.
_DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2")}


def _classes(values: Any, name: str) -> np.ndarray:
    """`values` (a tensor or array of class indices) as a 1-D int64 array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    out = np.asarray(values)
    if out.ndim != 1 or not (out.size == 0 or np.issubdtype(out.dtype, np.integer)):
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape "
                         f"{out.shape} of {out.dtype}")
    return out.astype(np.int64)


def encode_predictions(target, pred, pred_tta=None) -> dict[str, Any]:
    """The JSON form of one run's per-image classes: true, predicted, predicted with TTA."""
    arrays = {"target": _classes(target, "target"), "pred": _classes(pred, "pred")}
    if pred_tta is not None:
        arrays["pred_tta"] = _classes(pred_tta, "pred_tta")
    n = len(arrays["target"])
    for name, a in arrays.items():
        if len(a) != n:
            raise ValueError(f"{name} holds {len(a)} images, target {n}: the predictions "
                             "must be of the same images, in the same order")
    top = max((int(a.max()) for a in arrays.values() if a.size), default=0)
    low = min((int(a.min()) for a in arrays.values() if a.size), default=0)
    if low < 0 or top >= 1 << 16:
        raise ValueError(f"class indices lie in [0, 65536), got {low}..{top}")
    dtype = "uint8" if top < 256 else "uint16"
    out: dict[str, Any] = {"n": n, "dtype": dtype, "pred_tta": None}
    for name, a in arrays.items():
        out[name] = base64.b64encode(a.astype(_DTYPES[dtype]).tobytes()).decode("ascii")
    return out


def _decode(text: str, dtype: str, n: int, name: str) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(text), dtype=_DTYPES[dtype]).astype(np.int64)
    if len(a) != n:
        raise ValueError(f"stored predictions: {name} holds {len(a)} images, not {n}")
    return a


@dataclass(frozen=True)
class RunPredictions:
    """One run's classes per test image (int64 arrays in the test set's order)."""

    target: np.ndarray
    pred: np.ndarray
    pred_tta: np.ndarray | None

    @classmethod
    def of(cls, run) -> "RunPredictions | None":
        """Those a study run (a Run, or its `result` mapping) stored; None when it has
        none (a study older than them, a failed or unfinished run)."""
        result = run if isinstance(run, dict) else getattr(run, "result", None)
        stored = (result or {}).get("predictions")
        if not stored:
            return None
        dtype, n = stored["dtype"], int(stored["n"])
        if dtype not in _DTYPES:
            raise ValueError(f"stored predictions: unknown dtype {dtype!r}")
        tta = stored.get("pred_tta")
        return cls(_decode(stored["target"], dtype, n, "target"),
                   _decode(stored["pred"], dtype, n, "pred"),
                   _decode(tta, dtype, n, "pred_tta") if tta is not None else None)

    def correct(self, tta: bool = False) -> np.ndarray:
        """Whether each image was classified right (with test-time augmentation: `tta`)."""
        if tta and self.pred_tta is None:
            raise ValueError("this run has no test-time augmented predictions (its protocol "
                             "has no tta, or it is not a network)")
        return (self.pred_tta if tta else self.pred) == self.target


__all__ = ["RunPredictions", "encode_predictions"]
