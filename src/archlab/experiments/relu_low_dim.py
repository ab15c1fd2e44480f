"""`relu-low-dim`: why MobileNetV2's bottlenecks are linear (Sandler et al. 1801.04381, Fig. 1).

A 2-D spiral is embedded in n dimensions by a random matrix T, passed through a ReLU and
projected back with T's pseudo-inverse. Where the ReLU zeroes all but one coordinate (or
all) of a point, the point can no longer be told from its neighbours: the manifold collapses.
In few dimensions (n = 2, 3) that happens to a large share of the spiral; in many (n = 15,
30) almost never, since some two coordinates stay positive almost everywhere. So a ReLU is
safe in a wide layer and destroys information in a narrow one, and MobileNetV2 keeps its
narrow bottleneck layers linear.

Measured: for each n, over many random matrices, the share of the spiral's points whose
ReLU image has fewer than two independent positive coordinates (they are lost: no inverse
can bring them back), with its 95% interval; the paper's pictures are drawn for one matrix.
"""
from __future__ import annotations

import math

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.study.stats import mean_interval

DIMS = (2, 3, 5, 15, 30)
LOW, HIGH = (2, 3), (15, 30)
LOST, KEPT = 0.05, 0.01     # "lost": more than 5% of the points collapse; "kept": under 1%


def spiral(points: int) -> np.ndarray:
    """(points, 2): two turns of an Archimedean spiral around the origin, as in the figure."""
    t = np.linspace(0.5, 4 * math.pi, points)
    return np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (4 * math.pi)


def collapsed(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Which points of x (points, 2) lose information through ReLU(x T^T): fewer than two
    linearly independent rows of T among the coordinates that stay positive."""
    active = (x @ t.T) > 0                                      # (points, n)
    lost = np.ones(len(x), dtype=bool)
    for i, rows in enumerate(active):
        if rows.sum() >= 2:
            lost[i] = np.linalg.matrix_rank(t[rows]) < 2
    return lost


def projected_back(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The paper's picture: T^+ ReLU(T x) for every point."""
    return np.maximum(x @ t.T, 0.0) @ np.linalg.pinv(t).T


def decide(lost: dict[int, list[float]]) -> tuple[str, str]:
    """From the share of collapsed points per dimension (one value per random matrix): the
    claim holds when the low dimensions lose more than LOST of the points and the high ones
    less than KEPT, each by its 95% interval; it does not hold when an interval sits wholly
    on the wrong side; otherwise the numbers cannot say."""
    ci = {n: _interval(v) for n, v in lost.items()}
    words = "; ".join(f"n={n}: {100 * np.mean(lost[n]):.1f}% lost [{100 * ci[n][0]:.1f}, "
                      f"{100 * ci[n][1]:.1f}]" for n in sorted(lost))
    low_lost = all(ci[n][0] > LOST for n in LOW if n in ci)
    high_kept = all(ci[n][1] < KEPT for n in HIGH if n in ci)
    if low_lost and high_kept:
        return HOLDS, words
    if any(ci[n][1] < LOST for n in LOW if n in ci) or any(ci[n][0] > KEPT
                                                            for n in HIGH if n in ci):
        return DOES_NOT_HOLD, words
    return INCONCLUSIVE, words


def _interval(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    ci = mean_interval(values)
    return max(0.0, ci.low), min(1.0, ci.high)


class ReluLowDim(Experiment):
    name = "relu-low-dim"
    claim = ("A ReLU destroys the information of a low-dimensional manifold embedded in few "
             "dimensions, and keeps it in many: MobileNetV2's bottlenecks are linear.")
    source = "MobileNetV2 (Sandler et al., 1801.04381), Figure 1 and section 3.2"
    paper = "a spiral in n dimensions: lost for n = 2, 3; kept for n = 15, 30"

    def run(self, ctx: Context) -> Outcome:
        matrices = ctx.seeds or (30 if ctx.scale == "quick" else 300)
        x = spiral(1000 if ctx.scale == "quick" else 5000)
        lost: dict[int, list[float]] = {}
        for n in DIMS:
            lost[n] = [float(collapsed(x, np.random.default_rng(s).standard_normal((n, 2)))
                             .mean()) for s in range(matrices)]
        verdict, because = decide(lost)
        rows = []
        for n in DIMS:
            lo, hi = _interval(lost[n])
            rows.append([n, f"{100 * np.mean(lost[n]):.1f}", f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                         "lost" if n in LOW else "kept" if n in HIGH else "-"])
        return Outcome(
            verdict, because, ["n", "points lost %", "95% interval", "the paper"], rows,
            [Figure("The spiral through ReLU(T x), projected back with T⁺", _pictures(x),
                    "One random T per n (seed 0), as in the paper's figure: in 2 or 3 "
                    "dimensions whole arcs of the spiral collapse onto lines; in 15 or 30 it "
                    "is bent but every point keeps a place of its own.")],
            numbers={"lost": lost, "matrices": matrices, "points": len(x)})


def _pictures(x: np.ndarray) -> str:
    fig = figure(2.2 * (len(DIMS) + 1), 2.6, layout="constrained")
    axes = fig.subplots(1, len(DIMS) + 1)
    colour = np.linspace(0, 1, len(x))
    panels = [("input", x)] + [(f"n = {n}", projected_back(
        x, np.random.default_rng(0).standard_normal((n, 2)))) for n in DIMS]
    for ax, (title, pts) in zip(axes, panels):
        ax.scatter(pts[:, 0], pts[:, 1], c=colour, cmap="viridis", s=3)
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
    return to_svg(fig, "relu-low-dim")


__all__ = ["ReluLowDim", "collapsed", "decide", "spiral"]
