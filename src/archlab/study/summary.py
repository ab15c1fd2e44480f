"""The runs of a study grouped by model, and the results table: one row per model, ranked
by mean test top-1, its columns those of `RunMeasures` that the table shows. The same
rows feed the terminal, report.html and summary.csv."""
from __future__ import annotations

import csv
import io
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from archlab._text import fmt_bytes, fmt_time, format_table, human, pct
from archlab.study.entry import ModelEntry, card_of
from archlab.study.measures import MEASURES, TABLE_MEASURES, summary_csv_names
from archlab.study.schema import Run


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


# --------------------------------------------------------------------------------------
# The results table
# --------------------------------------------------------------------------------------

TABLE_HEADERS = ("#", "model", "family", *(f.metadata["header"] for f in TABLE_MEASURES),
                 "seeds", "status")
TABLE_ALIGN = "rll" + "r" * len(TABLE_MEASURES) + "rl"
_SHOWN_AS = {"count": human, "time": fmt_time, "percent": pct, "bytes": fmt_bytes,
             "number": lambda v: "-" if v is None else f"{v:g}"}


def _cell(s: ModelSummary, f) -> str:
    if f.metadata["summary"] != "mean_sd":
        return _SHOWN_AS[f.metadata["shown_as"]](s.value(f.name))
    m, sd = s.mean(f.name), s.std(f.name)
    if m is None:
        return "-"
    return pct(m) + (f" ± {pct(sd)}" if sd is not None else "")


def table_rows(summaries: Sequence[ModelSummary]) -> list[list[str]]:
    return [[str(i) if s.done else "-", s.label, s.family,
             *(_cell(s, f) for f in TABLE_MEASURES), str(len(s.done)), s.status]
            for i, s in enumerate(summaries, 1)]


def table_sort_values(summaries: Sequence[ModelSummary]) -> list[list[Any]]:
    """The number behind each cell of the table (None where the text sorts)."""
    return [[None, None, None, *(s.value(f.name) for f in TABLE_MEASURES), None, None]
            for s in summaries]


def print_results(runs: Sequence[Run], file=None) -> None:
    """The results table, ranked by mean test top-1."""
    out = file or sys.stdout
    summaries = summarize(runs)
    print(format_table(table_rows(summaries), TABLE_HEADERS, TABLE_ALIGN), file=out)
    seeds = max((len(s.done) for s in summaries), default=0)
    if seeds > 1:
        print("(accuracies are the mean ± standard deviation over seeds)", file=out)
    failed = [r for r in runs if r.status == "failed"]
    for r in failed:
        print(f"failed: {r.label} seed {r.seed}: {r.error}", file=out)


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

RUN_FIELDS = ("label", "model", "family", "seed", "status", *(f.name for f in MEASURES),
              "train_images", "test_images", "image_size", "protocol_hash", "key", "run_dir",
              "error")
SUMMARY_FIELDS = ("rank", "label", "model", "family", "seeds",
                  *(n for f in TABLE_MEASURES for n in summary_csv_names(f)), "status")


def runs_csv(runs: Sequence[Run]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RUN_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in runs:
        res = r.result or {}
        w.writerow({**r.as_dict(), "family": res.get("family") or family_of(r.model),
                    "train_images": res.get("train_images"),
                    "test_images": res.get("test_images"), "image_size": res.get("image_size")})
    return buf.getvalue()


def summary_csv(summaries: Sequence[ModelSummary]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS)
    w.writeheader()
    for i, s in enumerate(summaries, 1):
        row: dict[str, Any] = {"rank": i if s.done else None, "label": s.label,
                               "model": s.model, "family": s.family, "seeds": len(s.done),
                               "status": s.status}
        for f in TABLE_MEASURES:
            names = summary_csv_names(f)
            row[names[0]] = s.value(f.name)
            if len(names) > 1:
                row[names[1]] = s.std(f.name)
        w.writerow(row)
    return buf.getvalue()


__all__ = ["ModelSummary", "RUN_FIELDS", "SUMMARY_FIELDS", "TABLE_ALIGN", "TABLE_HEADERS",
           "family_of", "mean", "print_results", "runs_csv", "summarize", "summary_csv",
           "table_rows", "table_sort_values"]
