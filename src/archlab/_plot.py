"""Pictures for people: one matplotlib setup (no display, fonts drawn as paths, stable ids)
and the plots that the study report and explain both draw (the confusion matrix).

Figures are `matplotlib.figure.Figure` objects, never pyplot's global state, so that
drawing is safe in any thread and leaves nothing open behind it.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np

STYLE = {
    "svg.fonttype": "path",        # text as shapes: the same on every machine
    "svg.hashsalt": "archlab",     # stable ids: the same study gives the same file
    "figure.dpi": 100, "font.size": 9, "axes.titlesize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3,
}


def figure(width: float, height: float, layout: str | None = None):
    """A new Figure in archlab's style (at most 30 x 40 inches)."""
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams.update(STYLE)
    return Figure(figsize=(min(width, 30), min(height, 40)), dpi=100, layout=layout)


def to_svg(fig, prefix: str) -> str:
    """The figure as an inline <svg> element whose ids cannot collide with another
    figure's on the same page."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'(\sid=")([^"]+)"', lambda m: f'{m.group(1)}{prefix}-{m.group(2)}"', text)
    text = re.sub(r'((?:xlink:)?href="#|url\(#)([^")]+)',
                  lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", text)
    return re.sub(r'<svg ', '<svg class="chart" role="img" ', text, count=1)


def to_png(fig, path: str | Path) -> Path:
    fig.savefig(path, dpi=fig.dpi, facecolor="white")
    return Path(path)


def confusion_figure(counts: Sequence[Sequence[float]], classes: Sequence[str], title: str,
                     annotate_up_to: int = 20, colorbar: bool = True):
    """Rows: the true class, columns: the predicted one; colour is the share of the row,
    and each non-zero cell carries its count while there are at most `annotate_up_to`
    classes."""
    a = np.asarray(counts, dtype=float)
    rows = a / np.maximum(a.sum(1, keepdims=True), 1)
    k = len(classes)
    side = min(9.0, 2.5 + 0.5 * min(k, 40))
    fig = figure(side, side * 0.85, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    if k <= annotate_up_to:
        for i in range(k):
            for j in range(k):
                if a[i, j]:
                    ax.text(j, i, f"{int(a[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    if k <= 40:
        names = [c if len(c) <= 14 else c[:13] + "…" for c in classes]
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    return fig
