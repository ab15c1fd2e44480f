"""The runs of a study grouped by model, ranked by mean test top-1: what each model scored
over its seeds, with the 95% interval of its accuracy, and which test images each run got
right (for the paired tests of verdict.py)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from archlab.study.entry import ModelEntry, card_of
from archlab.study.measures import MEASURES
from archlab.study.predictions import RunPredictions
from archlab.study.schema import Run
from archlab.study.stats import Interval, accuracy_interval


def mean(values: Sequence[float | None]) -> float | None:
    """The mean of the values that are not None (None when there is none)."""
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def _std(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.stdev(v) if len(v) > 1 else None


@dataclass
class ModelSummary:
    """One architecture of a study: its runs and their mean (and spread over seeds)."""

    label: str
    model: str
    family: str
    runs: list[Run]
    done: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.done = [r for r in self.runs if r.status == "done" and r.top1 is not None]

    def mean(self, attr: str) -> float | None:
        return mean([getattr(r, attr) for r in self.done])

    def std(self, attr: str) -> float | None:
        return _std([getattr(r, attr) for r in self.done])

    def first(self, attr: str) -> Any:
        return next((getattr(r, attr) for r in self.done if getattr(r, attr) is not None), None)

    def max(self, attr: str) -> Any:
        v = [getattr(r, attr) for r in self.done if getattr(r, attr) is not None]
        return max(v) if v else None

    def value(self, attr: str) -> Any:
        """A measure over the seeds, summarised as the measure says (mean, first, max)."""
        how = next(f.metadata["summary"] for f in MEASURES if f.name == attr)
        return self.mean(attr) if how in ("mean", "mean_sd") else getattr(self, how)(attr)

    @property
    def params(self) -> int | None:
        return self.first("params")

    @property
    def macs(self) -> int | None:
        return self.first("macs")

    @property
    def peak_mem(self) -> int | None:
        return self.max("peak_mem")

    @property
    def status(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        if counts.get("done", 0) == len(self.runs):
            return "done"
        return ", ".join(f"{n} {s}" for s, n in counts.items())

    @property
    def test_images(self) -> int | None:
        """How many test images each run was judged on."""
        return next(((r.result or {}).get("test_images") for r in self.done
                     if (r.result or {}).get("test_images")), None)

    def interval(self, attr: str = "top1") -> Interval | None:
        """The 95% interval of an accuracy over the seeds: Student's t of the mean with two
        or more seeds, Wilson's binomial interval of the run with one."""
        values = [getattr(r, attr) for r in self.done if getattr(r, attr) is not None]
        if not values or not self.test_images:
            return None
        return accuracy_interval(values, self.test_images)

    def correct(self, tta: bool = False) -> dict[int, np.ndarray]:
        """{seed: which test images the run got right}, for the runs that kept their
        predictions (with TTA: the runs that had it)."""
        out = {}
        for r in self.done:
            p = RunPredictions.of(r)
            if p is not None and (not tta or p.pred_tta is not None):
                out[r.seed] = p.correct(tta)
        return out

    @property
    def best_run(self) -> Run | None:
        return max(self.done, key=lambda r: (r.top1, -r.seed), default=None)


def summarize(runs: Sequence[Run]) -> list[ModelSummary]:
    """Runs grouped by model (label), ranked by mean test top-1 (then by label: the order
    is the same on every call for the same results)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.label, _entry_id(r)), []).append(r)
    labels = [label for label, _ in groups]
    out = []
    for (label, entry_id), rs in groups.items():
        family = next(((r.result or {}).get("family") for r in rs if r.result), None)
        # One label with two configurations (an override edited between commands): both
        # are shown, told apart by their configuration's hash.
        shown = f"{label} #{entry_id[:6]}" if labels.count(label) > 1 else label
        out.append(ModelSummary(shown, rs[0].model, family or family_of(rs[0].model), rs))
    out.sort(key=lambda s: (s.mean("top1") is None, -(s.mean("top1") or 0.0), s.label))
    return out


def _entry_id(run: Run) -> str:
    e = run.entry or {}
    return ModelEntry(e.get("name", run.model), run.label, e.get("recipe") or {},
                      e.get("model_kwargs") or {}).hash


def family_of(name: str) -> str:
    """The family of an architecture ('?' for one no longer registered)."""
    try:
        return card_of(name).family
    except Exception:  # noqa: BLE001 - a model no longer registered
        return "?"


__all__ = ["ModelSummary", "family_of", "mean", "summarize"]
