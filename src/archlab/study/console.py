"""The study's progress in the terminal: a line before and after each run, with an
estimate of the time left from the cost (MACs x images seen) of the runs to go."""
from __future__ import annotations

import time

from archlab.analysis import profile
from archlab._text import fmt_time
from archlab.study.entry import ModelEntry
from archlab.study.measures import RunMeasures
from archlab.study.protocol import Protocol
from archlab.study.schema import Run


class Printer:
    """Study-level progress lines (none when not `enabled`) and the study's clock."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def estimate_cost(protocol: Protocol, entry: ModelEntry, train) -> float | None:
    """A relative cost of training one run: MACs per image x images seen (networks)."""
    if entry.classical:
        return None
    try:
        recipe = protocol.recipe_for(entry, 0)
        size = recipe.image_size or train.image_size or 224
        small = size <= 64 if recipe.small_input is None else recipe.small_input
        prof = profile(entry.name, img_size=size, in_chans=train.in_chans, device="meta",
                       num_classes=train.num_classes, small_input=small,
                       model_kwargs=recipe.model_kwargs)
        images = len(train) * recipe.train_fraction * (1 - recipe.val_fraction) * recipe.epochs
        return 3.0 * prof.macs * images
    except Exception:  # noqa: BLE001 - only an estimate
        return None


def run_header(index: int, total: int, run: Run, elapsed: float, eta: str) -> str:
    """The line before a run: its place in the study, its label and seed, the time."""
    return (f"\n[{index}/{total}] {run.label} (seed {run.seed})"
            f"{' - resuming' if run.attempts > 1 else ''}"
            f"{f' - {run.note}' if run.note else ''}; study {fmt_time(elapsed)}{eta}")


def eta(done_times: list[tuple[float | None, float]], costs: dict[str, float | None],
        left: list[Run], total_cost: float, jobs: int = 1) -> str:
    """', about M:SS to go' for the runs in `left`, `jobs` at a time, from the seconds per
    unit of cost of the runs done so far; nothing until they cover a tenth of the study's
    cost (a tiny first model's seconds per MAC, mostly per-step overhead, would predict
    hours)."""
    if not done_times:
        return ""
    if total_cost and sum(c or 0.0 for c, _ in done_times) < 0.1 * total_cost:
        return ""
    rate_pairs = [(c, t) for c, t in done_times if c]
    fixed = [t for c, t in done_times if not c]
    rate = sum(t for _, t in rate_pairs) / sum(c for c, _ in rate_pairs) if rate_pairs else None
    avg_fixed = (sum(fixed) / len(fixed)) if fixed else (
        sum(t for _, t in done_times) / len(done_times))
    seconds = 0.0
    for r in left:
        c = costs.get(r.label)
        seconds += c * rate if (c and rate) else avg_fixed
    return f", about {fmt_time(seconds / jobs)} to go"


def run_line(run: Run, m: RunMeasures, note: bool = True) -> str:
    """The line under a finished run: its accuracy and times (and the measures' note,
    unless `note` is False)."""
    tta = f" (TTA {m.top1_tta:.2%})" if m.top1_tta is not None else ""
    return (f"  {run.label} seed {run.seed}: test top-1 {m.top1:.2%}{tta}, "
            f"{fmt_time(m.train_time)} training, {fmt_time(m.wall_time)} in all"
            + (f"; {m.note}" if note and m.note else ""))


__all__ = ["Printer", "estimate_cost", "eta", "run_header", "run_line"]
