"""The page of an explanation, and the list a report reads.

index.html is rendered from the Jinja2 template templates/index.html.j2, with autoescaping on
(class names, file names and notes come from users' data) and nothing fetched from the
network: the page opens from the folder alone. explain.json lists the pictures, so that a
study report can embed them without parsing HTML.
"""
from __future__ import annotations

import json
from pathlib import Path

from archlab._io import write_atomic
from archlab.explain.result import Explanation, Picture

MANIFEST = "explain.json"
TEMPLATE = "index.html.j2"


def template(name: str = TEMPLATE):
    """A page template of templates/, autoescaped, strict about missing values."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("archlab.explain", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(name)


def render_html(result: Explanation) -> str:
    """The page: the subject, the error analysis when there is one, the pictures with their
    captions, and the notes on what was left out."""
    e = result.errors
    errors = None if e is None else {
        "data": e.data, "accuracy": f"{e.accuracy:.2%}", "count": f"{e.count:,}",
        "loss": f"{e.loss:.3f}", "most_confused": e.most_confused(10)}
    return template().render(subject=result.subject, errors=errors,
                              pictures=result.pictures, notes=result.notes)


def write_html(result: Explanation) -> Path:
    """index.html gathering the pictures, and explain.json listing them."""
    s, e = result.subject, result.errors
    out = write_atomic(result.out_dir / "index.html", render_html(result))
    manifest = {"model": s.name, "source": s.source, "methods": result.methods,
                "notes": result.notes,
                "pictures": [vars(p) for p in result.pictures]}
    if e is not None:
        manifest["errors"] = {"data": e.data, "accuracy": e.accuracy, "loss": e.loss,
                              "count": e.count, "most_confused": e.most_confused(10)}
    write_atomic(result.out_dir / MANIFEST, json.dumps(manifest, indent=1))
    return out


def list_pictures(out_dir: str | Path) -> list[Picture]:
    """The pictures `explain` wrote to `out_dir`, in the order of its page."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no {MANIFEST}: run `archlab explain ... "
                                f"--out {out_dir}` first")
    return [Picture(**p) for p in json.loads(path.read_text())["pictures"]]
