"""The plots of a study's report, each an inline SVG (None when there is nothing to plot
yet): accuracy against cost, the spread over seeds, the learning curves, where the errors
are."""
from __future__ import annotations

import math
from typing import Sequence

from archlab._plot import confusion_figure, figure, to_svg
from archlab.study.schema import Run
from archlab.study.summary import ModelSummary, mean


FAMILY_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]


def colours(summaries: Sequence[ModelSummary]) -> dict[str, str]:
    """One colour per model, stable across plots."""
    return {s.label: FAMILY_COLOURS[i % len(FAMILY_COLOURS)] for i, s in enumerate(
        sorted(summaries, key=lambda s: s.label))}


def _yerr(s: ModelSummary, y: float) -> list[list[float]] | None:
    """The 95% interval of a model's top-1 as matplotlib's (below, above) error bar."""
    ci = s.interval("top1")
    if ci is None:
        return None
    return [[100 * (y - ci.low)], [100 * (ci.high - y)]]


def scatter(summaries: Sequence[ModelSummary], x_attr: str, title: str, xlabel: str,
             colours: dict[str, str], prefix: str, use_tta: bool = False) -> str | None:
    pts = []
    for s in summaries:
        x = s.mean(x_attr) if x_attr in ("train_time", "throughput") else getattr(s, x_attr)
        y = s.mean("top1")
        if x is None or y is None or x <= 0:
            continue
        xerr = s.std(x_attr) if x_attr == "train_time" else None
        pts.append((s, x, 100 * y, xerr, _yerr(s, y)))
    if not pts:
        return None
    fig = figure(6.4, 4.2)
    ax = fig.add_subplot()
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
    return to_svg(fig, prefix)


def seed_plot(summaries: Sequence[ModelSummary], colours: dict[str, str], prefix: str
               ) -> str | None:
    rows = [s for s in summaries if s.done]
    if not rows:
        return None
    fig = figure(6.4, 0.45 * len(rows) + 1.2)
    ax = fig.add_subplot()
    for i, s in enumerate(reversed(rows)):
        ys = [100 * r.top1 for r in s.done]
        ax.scatter(ys, [i] * len(ys), color=colours[s.label], s=28, zorder=3)
        m = sum(ys) / len(ys)
        ax.plot([m, m], [i - 0.3, i + 0.3], color="black", lw=2, zorder=4)
        ci = s.interval("top1")
        if ci is not None:
            ax.plot([100 * ci.low, 100 * ci.high], [i, i], color=colours[s.label], lw=2.5,
                    alpha=0.5, solid_capstyle="butt")
    ax.set_yticks(range(len(rows)), [s.label for s in reversed(rows)])
    seeds = max(len(s.done) for s in rows)
    ax.set_xlabel("test top-1 accuracy (%): one dot per seed, bar = mean, line = 95% interval"
                  + (" (t over seeds)" if seeds > 1 else " (Wilson, test images: one seed)"))
    ax.set_title("Mean over seeds and its 95% interval" if seeds > 1 else
                 "One seed: the test set's sampling noise (no spread between trainings yet)")
    ax.grid(axis="y", alpha=0)
    return to_svg(fig, prefix)


LINE_STYLES = ["-", "--", ":", "-."]


def _run_panels(runs: Sequence[Run], colours: dict[str, str], draw, **line) -> tuple:
    """(figure, its two axes, the seeds): one line per run on each panel, the model's colour
    and the seed's line style, each model labelled once; `draw(run, axes, style, label)`
    draws one run with `style` (colour, line style and `line`)."""
    fig = figure(10, 3.9)
    axes = fig.subplots(1, 2)
    seeds = sorted({r.seed for r in runs})
    labelled: set[str] = set()
    for r in runs:
        style = dict(color=colours.get(r.label, "black"),
                     ls=LINE_STYLES[seeds.index(r.seed) % len(LINE_STYLES)], **line)
        draw(r, axes, style, r.label if r.label not in labelled else None)
        labelled.add(r.label)
    if len(seeds) > 1:
        fig.text(0.5, -0.02, "line style: seed " + ", ".join(
            f"{s} {LINE_STYLES[i % len(LINE_STYLES)]}" for i, s in enumerate(seeds)),
            ha="center")
    return fig, axes, seeds


def curves(summaries: Sequence[ModelSummary], colours: dict[str, str], prefix: str
           ) -> str | None:
    runs = [r for s in summaries for r in s.runs if r.history]
    if not runs:
        return None

    def draw(r: Run, axes, style, label) -> None:
        h = r.history
        ep = [row["epoch"] for row in h]
        if any("val_top1" in row for row in h):
            axes[0].plot(ep, [100 * row.get("val_top1", math.nan) for row in h], label=label,
                         **style)
        if any("train_loss" in row for row in h):
            axes[1].plot(ep, [row.get("train_loss", math.nan) for row in h], **style)

    fig, axes, _ = _run_panels(runs, colours, draw, marker="o", ms=3, lw=1.4)
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
    fig.tight_layout()
    return to_svg(fig, prefix)


def step_curves(summaries: Sequence[ModelSummary], colours: dict[str, str], prefix: str
                ) -> str | None:
    """Training error and loss every few steps (the ResNet paper's Fig. 1 and 6 are drawn
    this way: a deeper plain net's training error stays above a shallower one's)."""
    runs = [r for s in summaries for r in s.done if (r.result or {}).get("steps")]
    if not runs:
        return None

    def draw(r: Run, axes, style, label) -> None:
        st = r.result["steps"]
        axes[0].plot(st["epoch"], [100 * e for e in st["train_error"]], label=label, **style)
        axes[1].plot(st["epoch"], st["train_loss"], **style)

    fig, axes, _ = _run_panels(runs, colours, draw, lw=1.2)
    axes[0].set_title("Training error, every few steps")
    axes[0].set_ylabel("error on the batches (%)")
    axes[1].set_title("Training loss, every few steps")
    axes[1].set_ylabel("cross-entropy")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return to_svg(fig, prefix)


def confusion(run: Run, prefix: str) -> str | None:
    """The confusion matrix of one run (counts; colour: the share of the true class)."""
    res = run.result or {}
    cm, classes = res.get("confusion"), res.get("classes")
    if not cm or not classes:
        return None
    return to_svg(confusion_figure(cm, classes, f"Confusion matrix: {run.label} (seed "
                                   f"{run.seed}), top-1 {100 * run.top1:.2f}%"), prefix)


def per_class(summaries: Sequence[ModelSummary], prefix: str) -> str | None:
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
        data.append([mean([p[j] for p in per]) or 0.0 for j in range(len(classes))])
    a = 100 * np.asarray(data)
    fig = figure(min(12, 2.5 + 0.75 * len(classes)), 0.42 * len(rows) + 1.8)
    ax = fig.add_subplot()
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
    return to_svg(fig, prefix)


__all__ = ["FAMILY_COLOURS", "colours", "confusion", "curves", "per_class", "scatter",
           "seed_plot", "step_curves"]
