"""An experiment's page: the claim, the paper's number beside ours, the table, the plots and
the verdict with the numbers that decided it, in one self-contained HTML file (Jinja2,
autoescaped, plots inline); `verdict.json` beside it for programs; an index of them all."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from archlab._io import write_atomic
from archlab._version import __version__
from archlab.experiments.base import Context, Experiment, Outcome

TEMPLATE = "experiment.html.j2"
INDEX = "index.html.j2"


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
        e=experiment, o=outcome, figures=figures, scale=ctx.scale, version=__version__,
        written=time.strftime("%Y-%m-%d %H:%M"))
    write_atomic(out / "verdict.json", json.dumps(_record(experiment, outcome, ctx), indent=1,
                                                  default=float))
    return write_atomic(out / "index.html", html)


def write_index(done: Sequence[tuple[Experiment, Outcome]], ctx: Context) -> Path:
    rows = [{"e": e, "o": o} for e, o in done]
    html = _env().get_template(INDEX).render(rows=rows, scale=ctx.scale, version=__version__,
                                             written=time.strftime("%Y-%m-%d %H:%M"))
    return write_atomic(ctx.out_dir / "index.html", html)


__all__ = ["write_index", "write_page"]
