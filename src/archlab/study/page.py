"""report.html: the study's results, plots, runs, model cards and protocol in one
self-contained page, written from the template templates/report.html.j2 (autoescaped;
CSS, script and plots inline, the CSV files as data: links, so that it needs no network).
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any, Sequence

from archlab._text import fmt_time, pct
from archlab._version import __version__
from archlab.study import gallery, plots
from archlab.study.entry import card_of
from archlab.study.schema import Run
from archlab.study.summary import ModelSummary
from archlab.study.table import (TABLE_HEADERS, Results, interval_note, table_rows,
                                 table_sort_values)
from archlab.study.stats import Difference, difference
from archlab.study.verdict import Verdict, format_p

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
TEMPLATE = "report.html.j2"

# The captions say what each plot answers.
CAPTIONS = {
    "time": "What a minute of training buys: test top-1 against the training time of the "
            "protocol (the closing chart of the comparison article). Vertical bars: the 95% "
            "interval of the accuracy; horizontal: ±1 sd of the time over seeds. Dashed: the "
            "Pareto front (nothing is both faster and more accurate).",
    "params": "Parameters as built for this dataset (classes and input channels).",
    "macs": "MACs of one image at the protocol's input size (counted by torch's flop "
            "counter; the classical baseline has none).",
    "seeds": "Each dot is a run; the line is the 95% interval of the model's accuracy (with "
             "one seed, Wilson's interval of the test images: it shows the test set's noise, "
             "not the spread between trainings). Overlapping intervals do not prove a tie: the "
             "paired tests below do the comparing.",
    "steps": "The training error and loss on the batches, sampled every few steps (not "
             "only per epoch): the curves the ResNet paper draws to show that a deeper plain "
             "network trains worse.",
    "curves": "Every run, epoch by epoch: a curve still rising when the protocol stops says "
              "the model wants more epochs, not that it is worse.",
    "confusion": "Rows: the true class; columns: the prediction; counts on the test set.",
    "per_class": "Which classes are hard, and for which architecture.",
}


def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("archlab.study", "templates"),
                             autoescape=True, keep_trailing_newline=True)
    return env.get_template(TEMPLATE)


def _data_uri(text: str) -> str:
    return "data:text/csv;base64," + base64.b64encode(text.encode()).decode()


def _plots(summaries: Sequence[ModelSummary]) -> dict[str, dict[str, Any]]:
    from markupsafe import Markup

    colours = plots.colours(summaries)
    best = next((s for s in summaries if s.done), None)
    svgs = {
        "time": plots.scatter(summaries, "train_time", "Accuracy against training time",
                              "training time (s)", colours, "p-time"),
        "params": plots.scatter(summaries, "params", "Accuracy against parameters",
                                "parameters", colours, "p-params"),
        "macs": plots.scatter(summaries, "macs", "Accuracy against MACs",
                              "multiply-accumulates per image", colours, "p-macs"),
        "seeds": plots.seed_plot(summaries, colours, "p-seeds"),
        "curves": plots.curves(summaries, colours, "p-curves"),
        "steps": plots.step_curves(summaries, colours, "p-steps"),
        "confusion": plots.confusion(best.best_run, "p-confusion") if best else None,
        "per_class": plots.per_class(summaries, "p-perclass"),
    }
    ids = {"time": "plot-accuracy-time", "params": "plot-accuracy-params",
           "macs": "plot-accuracy-macs", "seeds": "plot-seeds", "curves": "plot-curves",
           "steps": "plot-steps",
           "confusion": "plot-confusion", "per_class": "plot-per-class"}
    # matplotlib's own SVG: the one piece of the page not escaped.
    return {k: {"id": ids[k], "caption": CAPTIONS[k], "svg": None if svg is None else Markup(svg)}
            for k, svg in svgs.items()}


def _results(summaries: Sequence[ModelSummary], verdict: Verdict) -> list[dict[str, Any]]:
    out = []
    for row, values, s in zip(table_rows(summaries, verdict), table_sort_values(summaries),
                              summaries):
        cells = [{"text": c, "v": str(v) if v is not None else ("-1" if c == "-" else None)}
                 for c, v in zip(row, values)]
        out.append({"cells": cells, "failed": any(r.status == "failed" for r in s.runs)})
    return out


def _matrix(verdict: Verdict) -> dict[str, Any] | None:
    """Every pair as a cell of a matrix (row minus column, in points), its adjusted p-value,
    and whether it is significant; rows and columns in rank order."""
    if not verdict.tested:
        return None
    labels = [m for m in verdict.order if m not in verdict.untested]
    rows = []
    for a in labels:
        cells = []
        for b in labels:
            d = difference(verdict.pairs, a, b) if a != b else None
            if d is None:
                cells.append({"kind": "diag" if a == b else "none", "text": "", "p": ""})
                continue
            kind = ("better" if d.delta > 0 else "worse") if d.significant else "tie"
            cells.append({"kind": kind, "text": f"{100 * d.delta:+.2f}",
                          "p": f"p {format_p(d.p_adjusted)}", "mark": "*" if d.significant else "",
                          "title": f"{a} - {b}: {100 * d.delta:+.2f} points, 95% interval "
                                   f"[{100 * d.ci.low:+.2f}, {100 * d.ci.high:+.2f}]; "
                                   f"{d.a_only} images only {a} gets right, {d.b_only} only "
                                   f"{b}; McNemar p {format_p(d.p_value)}, Holm-adjusted "
                                   f"{format_p(d.p_adjusted)}" + _per_seed(d)})
        rows.append({"label": a, "cells": cells})
    return {"labels": labels, "rows": rows, "pairs": len(verdict.pairs),
            "images": verdict.images, "seeds": verdict.seeds}


def _per_seed(d: Difference) -> str:
    if d.seeds < 2:
        return ""
    return "; per seed, unadjusted: " + ", ".join(format_p(p) for p in d.per_seed_p)


def _galleries(summaries: Sequence[ModelSummary], verdict: Verdict,
               protocol: dict[str, Any] | None) -> dict[str, Any]:
    if not verdict.tested:
        return {"pairs": [], "why": "no run kept its per-image predictions"}
    pairs = gallery.disagreements(summaries, verdict, gallery.test_images(protocol))
    why = "" if pairs else ("the test images cannot be read on this machine (the dataset of "
                            "the protocol is not here)")
    return {"pairs": pairs, "why": why}


def _runs(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [{"label": r.label, "seed": r.seed, "status": r.status, "failed": r.status == "failed",
             "epochs": r.epochs_done if r.epochs_done is not None else "-",
             "train_time": fmt_time(r.train_time), "wall_time": fmt_time(r.wall_time),
             "top1": pct(r.top1), "top1_tta": pct(r.top1_tta), "val_top1": pct(r.val_top1),
             "device": r.device or "-",
             "note": (r.error if r.status == "failed" else r.note) or ""}
            for r in sorted(runs, key=lambda r: (r.label, r.seed))]


def _cards(summaries: Sequence[ModelSummary]) -> list[dict[str, Any]]:
    out = []
    for model in dict.fromkeys(s.model for s in summaries):
        try:
            card = card_of(model)
        except Exception:  # noqa: BLE001 - a model no longer registered
            continue
        out.append({"model": model, "family": card.family, "paper": card.paper,
                    "year": card.year, "arxiv": card.arxiv, "key_idea": card.key_idea})
    return out


def _train_images(done: list) -> str:
    """How many images the runs trained on: one number when every run saw the same, the
    range when a model's recipe set its own train_fraction (a data-efficiency study)."""
    counts = {(r.result or {}).get("train_images") for r in done} - {None}
    if not counts:
        return "?"
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high} (each model its own share)"


def build_html(results: Results, protocol: dict[str, Any] | None, study: str, db: str,
               csvs: dict[str, str]) -> str:
    """The page for the judged runs of one protocol (a row of the study's protocols table);
    `csvs` holds the text of results.csv and summary.csv, linked from the page."""
    runs, summaries, verdict = results.runs, results.summaries, results.verdict
    galleries = _galleries(summaries, verdict, protocol)
    protocol = protocol or {}
    body = protocol.get("body") or {}
    done = [r for r in runs if r.status == "done"]
    return _template().render(
        name=protocol.get("name") or "study", dataset=(body.get("data") or {}).get("dataset", "?"),
        train_n=_train_images(done),
        test_n=next(((r.result or {}).get("test_images") for r in done if r.result), None)
        or "?",
        protocol_hash=protocol.get("hash", ""), n_runs=len(runs),
        counts={s: sum(r.status == s for r in runs)
                for s in ("done", "running", "pending", "failed")},
        devices=", ".join(sorted({r.device for r in done if r.device})) or "no device yet",
        version=__version__, written=time.strftime("%Y-%m-%d %H:%M"), db=db,
        description=body.get("description"), multi_seed=any(len(s.done) > 1 for s in summaries),
        headers=TABLE_HEADERS, left={1, 2, len(TABLE_HEADERS) - 1},
        results=_results(summaries, verdict), interval_note=interval_note(summaries),
        verdict=verdict.sentences(), matrix=_matrix(verdict), galleries=galleries,
        tta=body.get("tta") or [], results_csv=RESULTS_CSV, summary_csv=SUMMARY_CSV,
        results_uri=_data_uri(csvs[RESULTS_CSV]), summary_uri=_data_uri(csvs[SUMMARY_CSV]),
        plots=_plots(summaries), runs=_runs(runs), cards=_cards(summaries),
        protocol_text=protocol.get("yaml") or json.dumps(body, indent=1))


__all__ = ["REPORT_HTML", "RESULTS_CSV", "SUMMARY_CSV", "build_html"]
