"""What every experiment that trains networks shares: it is a study.

Its protocol is written in code, beside the claim it tests, and run by `archlab.study.compare`
under `<out>/<experiment>/study`: so an experiment stopped halfway resumes where it stopped,
trains its runs side by side with `--jobs`, and leaves a study report beside its page. What
comes back are the study's finished runs, grouped by label, each with its per-step learning
curve (`run.result["steps"]`, one row every `recipe.curve_every` steps) and its test
predictions (`archlab.study.RunPredictions.of(run)`).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from archlab.experiments.base import Context
from archlab.study import Run, compare, parse_protocol, plan


def seeds_for(ctx: Context, settings: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """The seeds to train: `ctx.seeds` of them if given, else the experiment's own count for
    the scale, `settings[scale]["seeds"]` (an experiment's SETTINGS)."""
    return list(range(ctx.seeds or settings[ctx.scale]["seeds"]))


def train_study(name: str, protocol: dict[str, Any], ctx: Context) -> list[Run]:
    """Run the study `protocol` (a protocol mapping, as a YAML file would hold it) for the
    experiment `name` and return its finished runs, in the protocol's order. A run that
    failed stops the experiment: a verdict over the runs that happened to succeed could
    say anything."""
    proto = parse_protocol(protocol, source=f"experiment {name}", default_name=name)
    study = ctx.out_dir / name / "study"
    # A study already finished and reported is read, not reported again: its plots are most
    # of the cost of running an experiment a second time.
    reported = (study / "report.html").exists() and all(
        r["status"] == "done" for r in plan(proto, study))
    result = compare(proto, study=study, jobs=ctx.jobs, device=ctx.device, root=ctx.root,
                     verbose=ctx.verbose, progress=False, report=not reported)
    unfinished = [f"{r.label} seed {r.seed}: {r.status}" + (f" ({r.error})" if r.error else "")
                  for r in result.runs if r.status != "done"]
    if unfinished:
        raise RuntimeError(f"experiment {name}: {len(unfinished)} run(s) did not finish: "
                           + "; ".join(unfinished) + f". Run it again to resume the study "
                           f"in {ctx.out_dir / name / 'study'}.")
    return sorted(result.runs, key=lambda r: r.position)


def by_label(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """The runs of each model label, in the order labels first appear, each sorted by seed."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.label].append(run)
    return {label: sorted(group, key=lambda r: r.seed) for label, group in groups.items()}


def run_path(ctx: Context, name: str, run: Run) -> Path:
    """The absolute directory where the experiment `name`'s study keeps `run`'s checkpoint
    and trained model (for `archlab.train.load_trained`, or as a distillation teacher). It
    is the same every time the experiment runs into the same `ctx.out_dir`: the run's key
    names it."""
    if not run.run_dir:
        raise ValueError(f"run {run.label} seed {run.seed} has no directory: it never started")
    return (ctx.out_dir / name / "study" / run.run_dir).resolve()


def step_curve(run: Run, column: str = "train_error") -> tuple[list[int], list[float]]:
    """(steps, values) of a run's per-step learning curve, e.g. its training error."""
    steps = (run.result or {}).get("steps") or {}
    if column not in steps:
        raise KeyError(f"run {run.label} seed {run.seed} recorded no per-step {column!r}: "
                       "set recipe.curve_every above 0 in the experiment's protocol")
    return list(steps["step"]), list(steps[column])


def steps_to_reach(steps: Sequence[int], values: Sequence[float],
                   threshold: float) -> int | None:
    """The first recorded step at which `values` (an error, a loss) is at or below
    `threshold`; None when the curve never gets there."""
    for step, value in zip(steps, values):
        if value <= threshold:
            return int(step)
    return None


def train_at_sizes(name: str, protocol: dict[str, Any], sizes: dict[str, int],
                   ctx: Context) -> list[Run]:
    """Train `protocol`'s models, each at its own image side `sizes[label]` (a resolution
    multiplier: MobileNet's ρ, EfficientNet's γ^φ).

    A study trains all its models at one `data.image_size`, so that they share a split; here
    each size gets a protocol of its own (named `<name>-<size>px`, the same data, recipe,
    seeds and split), trained one after another in the experiment's one study directory.
    The test images are the same ones in the same order at every size (only resized), so
    runs of different sizes still pair image by image in a paired test."""
    missing = [m["label"] for m in protocol["models"] if m["label"] not in sizes]
    if missing:
        raise KeyError(f"experiment {name}: no image size for {', '.join(missing)}")
    runs: list[Run] = []
    for size in dict.fromkeys(sizes[m["label"]] for m in protocol["models"]):
        part = {**protocol, "name": f"{name}-{size}px",
                "data": {**protocol["data"], "image_size": size},
                "models": [m for m in protocol["models"] if sizes[m["label"]] == size]}
        runs += train_study(name, part, ctx)
    return runs


__all__ = ["by_label", "run_path", "seeds_for", "step_curve", "steps_to_reach", "train_at_sizes",
           "train_study"]
