"""PROVISIONAL (lead's worktree only, replaced at merge by helper-7's module): the contract."""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np


def _enc(a, dtype):
    return base64.b64encode(np.asarray(a, dtype=dtype).tobytes()).decode()


def encode_predictions(target, pred, pred_tta=None) -> dict:
    k = int(max(np.max(target), np.max(pred))) + 1
    dtype = "uint8" if k <= 256 else "uint16"
    return {"n": len(target), "dtype": dtype, "target": _enc(target, dtype),
            "pred": _enc(pred, dtype), "pred_tta": None if pred_tta is None else _enc(pred_tta, dtype)}


@dataclass(frozen=True)
class RunPredictions:
    target: np.ndarray
    pred: np.ndarray
    pred_tta: np.ndarray | None

    @classmethod
    def of(cls, run):
        p = (run.result or {}).get("predictions")
        if not p:
            return None
        dec = lambda s: None if s is None else np.frombuffer(base64.b64decode(s), dtype=p["dtype"]).astype(np.int64)
        return cls(dec(p["target"]), dec(p["pred"]), dec(p.get("pred_tta")))

    def correct(self, tta: bool = False) -> np.ndarray:
        pred = self.pred_tta if tta else self.pred
        return pred == self.target
