"""The report of a study: a table in the terminal, a self-contained report.html, CSV files.

The report reads the study database and nothing else: it never trains. Its plots are the
questions a comparison answers:

- accuracy against training time (the closing chart of the course's comparison article:
  what does an extra minute of training buy?), against parameters and against MACs;
- the spread over seeds (is a difference larger than the noise?);
- the learning curves of every run (is a model still improving when the protocol stops?);
- the confusion matrix of the best model and the per-class accuracy of every model (which
  classes are hard, and for whom?);
- each model's card (paper, year, key idea) and the protocol itself, so that a reader can
  reproduce the numbers.

report.html needs no network: CSS inline, plots as inline SVG drawn by matplotlib, the CSV
embedded as a download link.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from archlab._io import write_atomic
from archlab._text import fmt_bytes, fmt_time, format_table, human, pct
from archlab._version import __version__
from archlab.study.store import Run, Store

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"

# --------------------------------------------------------------------------------------
# Per-model summaries
# --------------------------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
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
        return _mean([getattr(r, attr) for r in self.done])

    def std(self, attr: str) -> float | None:
        return _std([getattr(r, attr) for r in self.done])

    @property
    def params(self) -> int | None:
        return next((r.params for r in self.done if r.params is not None), None)

    @property
    def macs(self) -> int | None:
        return next((r.macs for r in self.done if r.macs is not None), None)

    @property
    def peak_mem(self) -> int | None:
        v = [r.peak_mem for r in self.done if r.peak_mem is not None]
        return max(v) if v else None

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
        out.append(ModelSummary(shown, rs[0].model, family or _family_of(rs[0].model), rs))
    out.sort(key=lambda s: (s.mean("top1") is None, -(s.mean("top1") or 0.0), s.label))
    return out


def _entry_id(run: Run) -> str:
    from archlab.study.protocol import ModelEntry

    e = run.entry or {}
    return ModelEntry(e.get("name", run.model), run.label, e.get("recipe") or {},
                      e.get("model_kwargs") or {}).hash


def _family_of(name: str) -> str:
    try:
        return _card(name).family
    except Exception:  # noqa: BLE001 - a model no longer registered
        return "?"


def _card(name: str):
    from archlab.classical import classical_card, is_classical
    from archlab.models import model_card

    return classical_card(name) if is_classical(name) else model_card(name)


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------


def _acc_cell(s: ModelSummary, attr: str) -> str:
    mean, std = s.mean(attr), s.std(attr)
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


TABLE_HEADERS = ("#", "model", "family", "params", "MACs", "epochs", "train time", "top-1 %",
                 "top-5 %", "TTA top-1 %", "img/s", "peak mem", "seeds", "status")
TABLE_ALIGN = "rllrrrrrrrrrrl"


def table_rows(summaries: Sequence[ModelSummary]) -> list[list[str]]:
    rows = []
    for i, s in enumerate(summaries, 1):
        epochs = s.mean("epochs_done")
        rows.append([
            str(i) if s.done else "-", s.label, s.family, human(s.params), human(s.macs),
            "-" if epochs is None else f"{epochs:g}", fmt_time(s.mean("train_time")),
            _acc_cell(s, "top1"), pct(s.mean("top5")), _acc_cell(s, "top1_tta"),
            human(s.mean("throughput")), fmt_bytes(s.peak_mem), str(len(s.done)), s.status])
    return rows


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

RUN_FIELDS = ("label", "model", "family", "seed", "status", "epochs_done", "train_time",
              "wall_time", "params", "macs", "top1", "top5", "top1_tta", "top5_tta",
              "val_top1", "test_loss", "throughput", "peak_mem", "device", "train_images",
              "test_images", "image_size", "protocol_hash", "key", "run_dir", "note", "error")
SUMMARY_FIELDS = ("rank", "label", "model", "family", "seeds", "params", "macs", "epochs",
                  "train_time_mean", "top1_mean", "top1_std", "top5_mean", "top1_tta_mean",
                  "top1_tta_std", "throughput_mean", "peak_mem_max", "status")


def runs_csv(runs: Sequence[Run]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RUN_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in runs:
        res = r.result or {}
        w.writerow({**r.as_dict(), "family": res.get("family") or _family_of(r.model),
                    "train_images": res.get("train_images"),
                    "test_images": res.get("test_images"), "image_size": res.get("image_size")})
    return buf.getvalue()


def summary_csv(summaries: Sequence[ModelSummary]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_FIELDS)
    w.writeheader()
    for i, s in enumerate(summaries, 1):
        w.writerow({"rank": i if s.done else None, "label": s.label, "model": s.model,
                    "family": s.family, "seeds": len(s.done), "params": s.params,
                    "macs": s.macs, "epochs": s.mean("epochs_done"),
                    "train_time_mean": s.mean("train_time"), "top1_mean": s.mean("top1"),
                    "top1_std": s.std("top1"), "top5_mean": s.mean("top5"),
                    "top1_tta_mean": s.mean("top1_tta"), "top1_tta_std": s.std("top1_tta"),
                    "throughput_mean": s.mean("throughput"), "peak_mem_max": s.peak_mem,
                    "status": s.status})
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# Plots: matplotlib to inline SVG
# --------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "path",        # text as shapes: the same on every machine
        "svg.hashsalt": "archlab",     # stable ids: the same study gives the same file
        "figure.dpi": 100, "font.size": 9, "axes.titlesize": 10,
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.alpha": 0.3,
    })
    return plt


def _svg(fig, prefix: str) -> str:
    """The figure as an <svg> element whose ids cannot collide with another figure's."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'(\sid=")([^"]+)"', lambda m: f'{m.group(1)}{prefix}-{m.group(2)}"', text)
    text = re.sub(r'((?:xlink:)?href="#|url\(#)([^")]+)',
                  lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    text = re.sub(r'<svg ', '<svg class="chart" role="img" ', text, count=1)
    return text


FAMILY_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]


def _colours(summaries: Sequence[ModelSummary]) -> dict[str, str]:
    """One colour per model, stable across plots."""
    return {s.label: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, s in enumerate(
        sorted(summaries, key=lambda s: s.label))}


def _scatter(summaries: Sequence[ModelSummary], x_attr: str, title: str, xlabel: str,
             colours: dict[str, str], prefix: str, use_tta: bool = False) -> str | None:
    plt = _plt()
    pts = []
    for s in summaries:
        x = s.mean(x_attr) if x_attr in ("train_time", "throughput") else getattr(s, x_attr)
        y = s.mean("top1")
        if x is None or y is None or x <= 0:
            continue
        xerr = s.std(x_attr) if x_attr == "train_time" else None
        pts.append((s, x, 100 * y, xerr, 100 * s.std("top1") if s.std("top1") else None))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s, x, y, xerr, yerr in pts:
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", ms=7, color=colours[s.label],
                    ecolor=colours[s.label], elinewidth=1, capsize=3, label=s.label)
        ax.annotate(s.label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    xs = [p[1] for p in pts]
    if max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title)
    # Pareto front: no model is both cheaper and more accurate.
    front, best = [], -math.inf
    for s, x, y, _xe, _ye in sorted(pts, key=lambda p: p[1]):
        if y > best:
            front.append((x, y))
            best = y
    if len(front) > 1:
        ax.plot(*zip(*front), "--", color="#999999", lw=1, zorder=0, label="Pareto front")
    ax.margins(x=0.15, y=0.12)
    return _svg(fig, prefix)


def _seed_plot(summaries: Sequence[ModelSummary], colours: dict[str, str], prefix: str
               ) -> str | None:
    rows = [s for s in summaries if s.done]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.2))
    for i, s in enumerate(reversed(rows)):
        ys = [100 * r.top1 for r in s.done]
        ax.scatter(ys, [i] * len(ys), color=colours[s.label], s=28, zorder=3)
        m = sum(ys) / len(ys)
        ax.plot([m, m], [i - 0.3, i + 0.3], color="black", lw=2, zorder=4)
        if len(ys) > 1:
            sd = statistics.stdev(ys)
            ax.plot([m - sd, m + sd], [i, i], color=colours[s.label], lw=1.5, alpha=0.6)
    ax.set_yticks(range(len(rows)), [s.label for s in reversed(rows)])
    ax.set_xlabel("test top-1 accuracy (%): one dot per seed, bar = mean, line = ±1 sd")
    ax.set_title("Mean and spread over seeds")
    ax.grid(axis="y", alpha=0)
    return _svg(fig, prefix)


def _curves(summaries: Sequence[ModelSummary], colours: dict[str, str], prefix: str
            ) -> str | None:
    runs = [r for s in summaries for r in s.runs if r.history]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    styles = ["-", "--", ":", "-."]
    seeds = sorted({r.seed for r in runs})
    labelled: set[str] = set()
    for r in runs:
        h = r.history
        ep = [row["epoch"] for row in h]
        style = styles[seeds.index(r.seed) % len(styles)]
        kw = dict(color=colours.get(r.label, "black"), ls=style, marker="o", ms=3, lw=1.4)
        lab = r.label if r.label not in labelled else None
        labelled.add(r.label)
        if any("val_top1" in row for row in h):
            axes[0].plot(ep, [100 * row.get("val_top1", math.nan) for row in h], label=lab, **kw)
        if any("train_loss" in row for row in h):
            axes[1].plot(ep, [row.get("train_loss", math.nan) for row in h], **kw)
    axes[0].set_title("Validation top-1 by epoch")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("accuracy (%)")
    axes[1].set_title("Training loss by epoch")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("cross-entropy")
    if any(ax.lines for ax in axes[1:]):
        axes[1].set_yscale("log")
    else:
        axes[1].text(0.5, 0.5, "no training loss recorded", ha="center", va="center",
                     transform=axes[1].transAxes)
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=7, loc="lower right", ncol=2)
    if len(seeds) > 1:
        fig.text(0.5, -0.02, "line style: seed " + ", ".join(
            f"{s} {styles[i % len(styles)]}" for i, s in enumerate(seeds)), ha="center")
    fig.tight_layout()
    return _svg(fig, prefix)


def _confusion(run: Run, prefix: str) -> str | None:
    res = run.result or {}
    cm, classes = res.get("confusion"), res.get("classes")
    if not cm or not classes:
        return None
    import numpy as np

    plt = _plt()
    a = np.asarray(cm, dtype=float)
    norm = a / np.maximum(a.sum(1, keepdims=True), 1)
    k = len(classes)
    size = min(9.0, 2.5 + 0.5 * k)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if a[i, j]:
                    ax.text(j, i, f"{int(a[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    names = [c if len(c) <= 14 else c[:13] + "…" for c in classes]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix: {run.label} (seed {run.seed}), "
                 f"top-1 {100 * run.top1:.2f}%")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return _svg(fig, prefix)


def _per_class(summaries: Sequence[ModelSummary], prefix: str) -> str | None:
    rows = [s for s in summaries if s.best_run and (s.best_run.result or {}).get("per_class")]
    if not rows:
        return None
    import numpy as np

    classes = rows[0].best_run.result["classes"]
    if len(classes) > 40:
        return None
    data = []
    for s in rows:
        pcs = [[(r.result or {}).get("per_class") for r in s.done]]
        per = [p for p in pcs[0] if p and len(p) == len(classes)]
        data.append([_mean([p[j] for p in per]) or 0.0 for j in range(len(classes))])
    a = 100 * np.asarray(data)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(12, 2.5 + 0.75 * len(classes)),
                                    0.42 * len(rows) + 1.8))
    im = ax.imshow(a, cmap="viridis", aspect="auto")
    ax.grid(False)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            ax.text(j, i, f"{a[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if a[i, j] < a.mean() else "black")
    ax.set_xticks(range(len(classes)), [c if len(c) <= 12 else c[:11] + "…" for c in classes],
                  rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), [s.label for s in rows])
    ax.set_title("Test accuracy per class (%), mean over seeds")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    return _svg(fig, prefix)


# --------------------------------------------------------------------------------------
# The HTML page
# --------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 13px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #eee; text-align: right; vertical-align: top; }
th { background: #f6f6f6; cursor: default; }
td.l, th.l { text-align: left; }
tr.failed td { color: #b00; }
figure.plot { margin: 1em 0 1.6em; }
figure.plot svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 13px; max-width: 70em; }
pre { background: #f7f7f7; padding: 0.8em 1em; overflow-x: auto; font-size: 12.5px; }
.grid2 { display: flex; flex-wrap: wrap; gap: 1em 2em; }
.grid2 figure { flex: 1 1 480px; }
.note { color: #666; font-size: 13px; }
.idea { max-width: 46em; text-align: left; }
a.dl { display: inline-block; margin-right: 1em; }
"""

_JS = """
// Sort the results table by a column when its header is clicked.
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.style.cursor = 'pointer';
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.dataset.dir === 'asc' ? -1 : 1;
    th.dataset.dir = dir === 1 ? 'asc' : 'desc';
    function key(r) {
      var t = r.cells[col].dataset.v !== undefined ? r.cells[col].dataset.v : r.cells[col].textContent;
      var n = parseFloat(t);
      return isNaN(n) ? t : n;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      return (x > y ? 1 : x < y ? -1 : 0) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _results_table_html(summaries: Sequence[ModelSummary]) -> str:
    rows = table_rows(summaries)
    sort_values = []
    for s in summaries:
        sort_values.append([None, None, None, s.params, s.macs, s.mean("epochs_done"),
                            s.mean("train_time"), s.mean("top1"), s.mean("top5"),
                            s.mean("top1_tta"), s.mean("throughput"), s.peak_mem, None, None])
    left = {1, 2, 13}
    head = "".join(f'<th class="{"l" if i in left else ""}">{_e(h)}</th>'
                   for i, h in enumerate(TABLE_HEADERS))
    body = []
    for row, vals, s in zip(rows, sort_values, summaries):
        cells = []
        for i, (c, v) in enumerate(zip(row, vals)):
            dv = f' data-v="{v}"' if v is not None else (' data-v="-1"' if c == "-" else "")
            cells.append(f'<td class="{"l" if i in left else ""}"{dv}>{_e(c)}</td>')
        cls = ' class="failed"' if any(r.status == "failed" for r in s.runs) else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<table class="sortable" id="results"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _runs_table_html(runs: Sequence[Run]) -> str:
    head = ("model", "seed", "status", "epochs", "train time", "wall time", "top-1 %",
            "TTA top-1 %", "val top-1 %", "device", "note")
    out = [f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead><tbody>"]
    for r in sorted(runs, key=lambda r: (r.label, r.seed)):
        note = r.error if r.status == "failed" else r.note
        out.append(
            f'<tr class="{"failed" if r.status == "failed" else ""}">'
            f'<td class="l">{_e(r.label)}</td><td>{r.seed}</td><td class="l">{_e(r.status)}</td>'
            f"<td>{_e(r.epochs_done if r.epochs_done is not None else '-')}</td>"
            f"<td>{fmt_time(r.train_time)}</td><td>{fmt_time(r.wall_time)}</td>"
            f"<td>{pct(r.top1)}</td><td>{pct(r.top1_tta)}</td><td>{pct(r.val_top1)}</td>"
            f'<td class="l">{_e(r.device or "-")}</td><td class="l">{_e(note or "")}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _cards_html(summaries: Sequence[ModelSummary]) -> str:
    out = ['<table><thead><tr><th class="l">model</th><th class="l">family</th>'
           '<th class="l">paper</th><th>year</th><th class="l">arXiv</th>'
           '<th class="l">key idea</th></tr></thead><tbody>']
    seen = set()
    for s in summaries:
        if s.model in seen:
            continue
        seen.add(s.model)
        try:
            card = _card(s.model)
        except Exception:  # noqa: BLE001
            continue
        arxiv = (f'<a href="https://arxiv.org/abs/{_e(card.arxiv)}">{_e(card.arxiv)}</a>'
                 if card.arxiv else "-")
        out.append(f'<tr><td class="l">{_e(s.model)}</td><td class="l">{_e(card.family)}</td>'
                   f'<td class="l">{_e(card.paper)}</td><td>{_e(card.year)}</td>'
                   f'<td class="l">{arxiv}</td><td class="l idea">{_e(card.key_idea)}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _figure(svg: str | None, fig_id: str, caption: str) -> str:
    if svg is None:
        return (f'<figure class="plot empty" id="{fig_id}"><p class="note">nothing to plot '
                f"yet</p><figcaption>{caption}</figcaption></figure>")
    return f'<figure class="plot" id="{fig_id}">{svg}<figcaption>{caption}</figcaption></figure>'


def build_html(runs: Sequence[Run], protocol: dict[str, Any] | None, study: str,
               db: str) -> str:
    summaries = summarize(runs)
    colours = _colours(summaries)
    done = [r for r in runs if r.status == "done"]
    name = (protocol or {}).get("name") or "study"
    body = (protocol or {}).get("body") or {}
    devices = sorted({r.device for r in done if r.device})
    multi_seed = any(len(s.done) > 1 for s in summaries)
    counts = {s: sum(r.status == s for r in runs) for s in ("done", "running", "pending",
                                                          "failed")}
    best = next((s for s in summaries if s.done), None)
    csv_text = runs_csv(runs)
    csv_uri = "data:text/csv;base64," + base64.b64encode(csv_text.encode()).decode()
    sum_uri = "data:text/csv;base64," + base64.b64encode(
        summary_csv(summaries).encode()).decode()
    dataset = (body.get("data") or {}).get("dataset", "?")
    train_n = next(((r.result or {}).get("train_images") for r in done if r.result), None)
    test_n = next(((r.result or {}).get("test_images") for r in done if r.result), None)
    tta = body.get("tta") or []
    ms = " (mean ± sd over seeds)" if multi_seed else ""

    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>archlab study: {_e(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study: {_e(name)}</h1>",
        f'<p class="sub">{_e(dataset)}: {_e(train_n or "?")} training images, '
        f'{_e(test_n or "?")} test images; protocol <code>{_e((protocol or {}).get("hash", "")[:12])}'
        f"</code>; {counts['done']} of {len(runs)} runs done"
        + (f", {counts['failed']} failed" if counts["failed"] else "")
        + (f", {counts['running']} running" if counts["running"] else "")
        + (f", {counts['pending']} pending" if counts["pending"] else "")
        + f"; {_e(', '.join(devices) or 'no device yet')}. Written by archlab "
        f"{_e(__version__)} on {time.strftime('%Y-%m-%d %H:%M')} from "
        f"<code>{_e(db)}</code>.</p>",
    ]
    if (protocol or {}).get("body", {}).get("description"):
        parts.append(f"<p>{_e(body['description'])}</p>")
    parts += [
        f"<h2>Results{ms}</h2>",
        _results_table_html(summaries),
        '<p class="note">Ranked by test top-1 without test-time augmentation'
        + (f"; TTA averages the softmax of the image and its views ({_e(', '.join(tta))})"
           if tta else "")
        + ". Train time is the trainer's own clock (no evaluation); throughput is inference "
        "at a fixed batch on the run's device; peak memory is the CUDA allocator's peak on a "
        "GPU, the process's peak resident memory (data included) on a CPU. Click a column "
        "to sort.</p>",
        f'<p><a class="dl" download="{RESULTS_CSV}" href="{csv_uri}">results.csv (every run)</a>'
        f'<a class="dl" download="{SUMMARY_CSV}" href="{sum_uri}">summary.csv (per model)</a>'
        "</p>",
        "<h2>Accuracy against cost</h2>",
        _figure(_scatter(summaries, "train_time", "Accuracy against training time",
                         "training time (s)", colours, "p-time"), "plot-accuracy-time",
                "What a minute of training buys: test top-1 against the training time of the "
                "protocol (the closing chart of the comparison article). Error bars: ±1 sd "
                "over seeds. Dashed: the Pareto front (nothing is both faster and more "
                "accurate)."),
        '<div class="grid2">',
        _figure(_scatter(summaries, "params", "Accuracy against parameters", "parameters",
                         colours, "p-params"), "plot-accuracy-params",
                "Parameters as built for this dataset (classes and input channels)."),
        _figure(_scatter(summaries, "macs", "Accuracy against MACs",
                         "multiply-accumulates per image", colours, "p-macs"),
                "plot-accuracy-macs",
                "MACs of one image at the protocol's input size (counted by torch's flop "
                "counter; the classical baseline has none)."),
        "</div>",
        "<h2>Mean and spread over seeds</h2>",
        _figure(_seed_plot(summaries, colours, "p-seeds"), "plot-seeds",
                "Each dot is a run; a difference smaller than the spread is not a result."),
        "<h2>Learning curves</h2>",
        _figure(_curves(summaries, colours, "p-curves"), "plot-curves",
                "Every run, epoch by epoch: a curve still rising when the protocol stops "
                "says the model wants more epochs, not that it is worse."),
        "<h2>Where the errors are</h2>",
        _figure(_confusion(best.best_run, "p-confusion") if best else None, "plot-confusion",
                "Rows: the true class; columns: the prediction; counts on the test set."),
        _figure(_per_class(summaries, "p-perclass"), "plot-per-class",
                "Which classes are hard, and for which architecture."),
        "<h2>Runs</h2>", _runs_table_html(runs),
        "<h2>The models</h2>", _cards_html(summaries),
        "<h2>The protocol</h2>",
        f"<p>Hash <code>{_e((protocol or {}).get('hash', ''))}</code>: every run above was "
        "trained under this file (model entries may add their own overrides).</p>",
        f"<pre>{_e((protocol or {}).get('yaml') or json.dumps(body, indent=1))}</pre>",
        f"<script>{_JS}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def choose_protocol(store: Store, protocol: str | None = None) -> dict[str, Any] | None:
    """The protocol row to report: by hash prefix or name, else the most recently active."""
    rows = store.protocols()
    if not rows:
        return None
    if protocol is None:
        return rows[0]
    hits = [r for r in rows if r["hash"].startswith(protocol) or r["name"] == protocol]
    if not hits:
        raise ValueError(f"no protocol {protocol!r} in this study; it has "
                         + ", ".join(f"{r['name']} [{r['hash'][:8]}]" for r in rows))
    return hits[0]


def write_report(study_dir: str | Path, store: Store, protocol_hash: str | None = None,
                 out: str | Path | None = None) -> Path:
    """Write report.html, results.csv and summary.csv for one protocol of a study."""
    study_dir = Path(study_dir)
    row = choose_protocol(store, protocol_hash)
    runs = store.runs(row["hash"]) if row else []
    out = Path(out) if out else study_dir / REPORT_HTML
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, build_html(runs, row, str(study_dir), _db_name(store)))
    write_atomic(out.parent / RESULTS_CSV, runs_csv(runs))
    write_atomic(out.parent / SUMMARY_CSV, summary_csv(summarize(runs)))
    return out


def _db_name(store: Store) -> str:
    from archlab.study.store import _redact

    return _redact(store.url)


def report(study: str | Path, *, out: str | Path | None = None, protocol: str | None = None,
           csv_path: str | Path | None = None, html_report: bool = True, file=None
           ) -> Path | None:
    """Print the results table of a study and write its report (and CSV)."""
    from archlab.study.runner import open_study

    study_dir, store = open_study(study)
    try:
        row = choose_protocol(store, protocol)
        if row is None:
            raise ValueError(f"{study} holds no runs yet")
        runs = store.runs(row["hash"])
        print(f"{row['name']} [{row['hash'][:8]}] in {_db_name(store)}", file=file or sys.stdout)
        print_results(runs, file=file)
        if csv_path:
                write_atomic(Path(csv_path), runs_csv(runs))
        if not html_report:
            return None
        return write_report(study_dir, store, row["hash"], out)
    finally:
        store.close()
