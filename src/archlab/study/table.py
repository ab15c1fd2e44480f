"""The results table of a study, and its CSV files: one row per model, ranked by mean test
top-1 ("=1" for the models not told apart from the first), the accuracies with their 95%
interval, the other columns those of `RunMeasures` that the table shows; the verdict in
words under it. The same rows feed the terminal, report.html and summary.csv."""
from __future__ import annotations

import csv
import io
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Sequence

from archlab._text import fmt_bytes, fmt_time, format_table, human, pct
from archlab.study.measures import MEASURES, TABLE_MEASURES, summary_csv_names
from archlab.study.schema import Run
from archlab.study.stats import binomial_interval
from archlab.study.summary import ModelSummary, family_of, summarize
from archlab.study.verdict import Verdict, judge

TABLE_HEADERS = ("#", "model", "family",
                 *(f.metadata["header"] + (" [95% CI]" if f.metadata["summary"] == "mean_sd"
                                           else "") for f in TABLE_MEASURES),
                 "seeds", "status")
TABLE_ALIGN = "rll" + "r" * len(TABLE_MEASURES) + "rl"
_SHOWN_AS = {"count": human, "time": fmt_time, "percent": pct, "bytes": fmt_bytes,
             "number": lambda v: "-" if v is None else f"{v:g}"}


def _cell(s: ModelSummary, f) -> str:
    if f.metadata["shown_as"] == "time" and s.std(f.name) is not None:
        # A time over seeds with its spread: runs sharing a machine vary by tens of percent.
        return f"{fmt_time(s.mean(f.name))} ±{fmt_time(s.std(f.name))}"
    if f.metadata["summary"] != "mean_sd":
        return _SHOWN_AS[f.metadata["shown_as"]](s.value(f.name))
    m = s.mean(f.name)
    if m is None:
        return "-"
    ci = s.interval(f.name)
    return pct(m) + (f" [{pct(ci.low)}, {pct(ci.high)}]" if ci is not None else "")


def table_rows(summaries: Sequence[ModelSummary], verdict: Verdict | None = None
               ) -> list[list[str]]:
    ranks = (verdict or judge(summaries)).ranks()
    return [[ranks.get(s.label, "-"), s.label, s.family,
             *(_cell(s, f) for f in TABLE_MEASURES), str(len(s.done)), s.status]
            for s in summaries]


def table_sort_values(summaries: Sequence[ModelSummary]) -> list[list[Any]]:
    """The number behind each cell of the table (None where the text sorts)."""
    return [[None, None, None, *(s.value(f.name) for f in TABLE_MEASURES), None, None]
            for s in summaries]


def interval_note(summaries: Sequence[ModelSummary]) -> str:
    """What the brackets of the accuracy columns are."""
    seeds = max((len(s.done) for s in summaries), default=0)
    if seeds > 1:
        return ("Accuracies: the mean over seeds [its 95% interval, Student's t over the "
                "seeds; Wilson's binomial interval for a model with one seed].")
    return ("Accuracies [95% interval, Wilson's binomial interval of the test images: one "
            "seed shows the test set's noise, not the spread between trainings].")


@dataclass
class Results:
    """The runs of one protocol, grouped by model and judged once: the paired tests (a
    bootstrap per pair) are the costly part, and the table, the page and summary.csv all
    read the same verdict."""

    runs: Sequence[Run]
    summaries: Sequence[ModelSummary]
    verdict: Verdict

    @classmethod
    def of(cls, runs: Sequence[Run]) -> "Results":
        summaries = summarize(runs)
        return cls(runs, summaries, judge(summaries))


def print_results(runs: Sequence[Run] | Results, file=None) -> None:
    """The results table, ranked by mean test top-1, and the verdict under it."""
    out = file or sys.stdout
    res = runs if isinstance(runs, Results) else Results.of(runs)
    print(format_table(table_rows(res.summaries, res.verdict), TABLE_HEADERS, TABLE_ALIGN),
          file=out)
    print(textwrap.fill(interval_note(res.summaries), 100), file=out)
    for sentence in res.verdict.sentences():
        print(textwrap.fill(sentence, 100), file=out)
    for r in res.runs:
        if r.status == "failed":
            print(f"failed: {r.label} seed {r.seed}: {r.error}", file=out)


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

RUN_FIELDS = ("label", "model", "family", "seed", "status", *(f.name for f in MEASURES),
              "top1_ci_low", "top1_ci_high", "top1_tta_ci_low", "top1_tta_ci_high",
              "train_images", "test_images", "image_size", "protocol_hash", "key", "run_dir",
              "error")
SUMMARY_FIELDS = ("rank", "label", "model", "family", "seeds",
                  *(n for f in TABLE_MEASURES for n in summary_csv_names(f)),
                  "top1_ci_low", "top1_ci_high", "top1_ci_method", "top1_tta_ci_low",
                  "top1_tta_ci_high", "train_time_sd", "delta_vs_best", "delta_vs_best_ci_low",
                  "delta_vs_best_ci_high", "p_vs_best_adjusted", "tied_with_best", "status")


def _run_interval(r: Run, attr: str, n: int | None) -> tuple[float | None, float | None]:
    v = getattr(r, attr)
    if v is None or not n:
        return None, None
    ci = binomial_interval(round(v * n), n)
    return ci.low, ci.high


def runs_csv(runs: Sequence[Run]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RUN_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in runs:
        res = r.result or {}
        n = res.get("test_images")
        lo, hi = _run_interval(r, "top1", n)
        tlo, thi = _run_interval(r, "top1_tta", n)
        w.writerow({**r.as_dict(), "family": res.get("family") or family_of(r.model),
                    "top1_ci_low": lo, "top1_ci_high": hi, "top1_tta_ci_low": tlo,
                    "top1_tta_ci_high": thi, "train_images": res.get("train_images"),
                    "test_images": n, "image_size": res.get("image_size")})
    return buf.getvalue()


def _verdict_columns(s: ModelSummary, verdict: Verdict) -> dict[str, Any]:
    ci, tta = s.interval("top1"), s.interval("top1_tta")
    d = verdict.vs_best(s.label)
    return {
        "top1_ci_low": ci and ci.low, "top1_ci_high": ci and ci.high,
        "top1_ci_method": ci and ci.method, "top1_tta_ci_low": tta and tta.low,
        "top1_tta_ci_high": tta and tta.high, "train_time_sd": s.std("train_time"),
        "delta_vs_best": d and d.delta, "delta_vs_best_ci_low": d and d.ci.low,
        "delta_vs_best_ci_high": d and d.ci.high, "p_vs_best_adjusted": d and d.p_adjusted,
        "tied_with_best": (s.label in verdict.tied) if d is not None else None,
    }


def summary_csv(summaries: Sequence[ModelSummary], verdict: Verdict | None = None) -> str:
    verdict = verdict or judge(summaries)
    ranks = verdict.ranks()
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS)
    w.writeheader()
    for s in summaries:
        row: dict[str, Any] = {"rank": ranks.get(s.label), "label": s.label, "model": s.model,
                               "family": s.family, "seeds": len(s.done), "status": s.status,
                               **_verdict_columns(s, verdict)}
        for f in TABLE_MEASURES:
            names = summary_csv_names(f)
            row[names[0]] = s.value(f.name)
            if len(names) > 1:
                row[names[1]] = s.std(f.name)
        w.writerow(row)
    return buf.getvalue()


__all__ = ["RUN_FIELDS", "Results", "SUMMARY_FIELDS", "TABLE_ALIGN", "TABLE_HEADERS", "interval_note",
           "print_results", "runs_csv", "summary_csv", "table_rows", "table_sort_values"]
