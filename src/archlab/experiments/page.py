"""An experiment's page: the claim, the paper's number beside ours, the table, the plots and
the verdict with the numbers that decided it, in one self-contained HTML file (Jinja2,
autoescaped, plots inline); `verdict.json` beside it for programs; and "The course,
reproduced", one page that gathers every experiment run, to be read from top to bottom."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from archlab._io import write_atomic
from archlab._version import __version__
from archlab.experiments.base import Context, Experiment, Outcome

TEMPLATE = "experiment.html.j2"
COURSE = "course.html.j2"


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("archlab.experiments", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _record(experiment: Experiment, outcome: Outcome, ctx: Context) -> dict:
    return {**experiment.describe(), "verdict": outcome.verdict, "because": outcome.because,
            "scale": ctx.scale, "seconds": outcome.seconds, "numbers": outcome.numbers,
            "archlab": __version__, "written": time.strftime("%Y-%m-%d %H:%M")}


def write_page(experiment: Experiment, outcome: Outcome, ctx: Context) -> Path:
    from markupsafe import Markup

    out = ctx.out_dir / experiment.name
    out.mkdir(parents=True, exist_ok=True)
    figures = [{"title": f.title, "caption": f.caption, "svg": Markup(f.svg)}
               for f in outcome.figures]
    html = _env().get_template(TEMPLATE).render(
        e=experiment, o=outcome, figures=figures, kind=_verdict_kind(outcome.verdict),
        scale=ctx.scale, version=__version__, written=time.strftime("%Y-%m-%d %H:%M"))
    write_atomic(out / "verdict.json", json.dumps(_record(experiment, outcome, ctx), indent=1,
                                                  default=float))
    return write_atomic(out / "index.html", html)


def measured_seconds(experiment: Experiment, outcome: Outcome, ctx: Context) -> float:
    """What the experiment's numbers cost to measure. A run that only resumed a finished
    study (its numbers the same as those already recorded) took seconds, not the minutes the
    training took: it keeps the recorded time. A run stopped halfway and resumed counts only
    its second part."""
    seconds = float(outcome.seconds or 0.0)
    try:
        before = json.loads((ctx.out_dir / experiment.name / "verdict.json").read_text())
    except (OSError, ValueError):
        return seconds
    now = json.loads(json.dumps(outcome.numbers, default=float))
    if before.get("scale") == ctx.scale and before.get("numbers") == now:
        return max(seconds, float(before.get("seconds") or 0.0))
    return seconds


def write_course(done: Sequence[tuple[str, Experiment, Outcome]], ctx: Context) -> Path:
    """`<out>/index.html`, "The course, reproduced": an index of the verdicts, then each
    claim with its source, the paper's number, ours, the plots, the verdict and the command
    that reruns it. `done` holds (part of the course, experiment, outcome) in order."""
    from markupsafe import Markup

    sections = []
    for part, e, o in done:
        figures = [{"title": f.title, "caption": f.caption, "svg": Markup(f.svg),
                    "id": f"{e.name}-plot-{i}"} for i, f in enumerate(o.figures)]
        sections.append({"part": part, "e": e, "o": o, "figures": figures,
                         "kind": _verdict_kind(o.verdict),
                         "rerun": f"archlab experiment {e.name} --scale {ctx.scale} "
                                  f"--out {ctx.out_dir}"})
    counts = {kind: sum(s["kind"] == kind for s in sections) for kind in ("holds", "not", "open")}
    minutes = sum(float(s["o"].seconds or 0.0) for s in sections) / 60
    html = _env().get_template(COURSE).render(
        sections=sections, counts=counts, minutes=minutes, scale=ctx.scale, version=__version__,
        written=time.strftime("%Y-%m-%d %H:%M"))
    return write_atomic(ctx.out_dir / "index.html", html)


def _verdict_kind(verdict: str) -> str:
    return ("holds" if verdict.startswith("holds") else "not" if verdict.startswith("does not")
            else "open")


__all__ = ["measured_seconds", "write_course", "write_page"]
