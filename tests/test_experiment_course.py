""""The course, reproduced": the one page that `archlab experiment all` writes, opened in
headless Chromium with no console errors, nothing fetched and every plot drawn."""
from __future__ import annotations

import json
import re

import pytest

from browser import open_page

from archlab.experiments import Context, run_all
from archlab.experiments.registry import EXPERIMENTS, PARTS, part_of

CHEAP = ("conv-mechanics", "relu-low-dim")   # computation only: seconds, no training


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    outcomes = run_all(Context(out_dir=out, seeds=2, verbose=False), names=CHEAP)
    return out, outcomes


def test_every_experiment_belongs_to_one_part_in_the_course_order():
    names = [e.name for part in PARTS.values() for e in part]
    assert names == list(EXPERIMENTS) and len(set(names)) == len(names)
    assert part_of("conv-mechanics") == "The architectures"
    assert part_of("swish-vs-relu") == "How they are trained"


def test_the_page_gathers_each_claim_with_its_verdict_and_rerun_command(course):
    out, outcomes = course
    html = (out / "index.html").read_text()
    assert "<title>The course, reproduced" in html
    for name, outcome in outcomes.items():
        record = json.loads((out / name / "verdict.json").read_text())
        e = EXPERIMENTS[name]
        # The index row links to the section; the section holds source, paper, ours, verdict.
        assert f'<a href="#{name}">{name}</a>' in html
        assert f'<section class="claim" id="{name}">' in html
        section = html.split(f'id="{name}">', 1)[1].split("</section>", 1)[0]
        for text in (e.source, e.paper, record["because"], record["verdict"]):
            assert _escaped(text) in section, text
        assert f"archlab experiment {name} --scale quick --out {out}" in section
        assert section.count('<figure class="plot"') == len(outcome.figures) > 0
    counts = re.search(r"holds: (\d+)</span>.*?does not hold: (\d+)</span>.*?inconclusive: (\d+)",
                       html, re.S).groups()
    assert sum(map(int, counts)) == len(CHEAP)
    for needle in ("<script src", "<link ", "@import", "src=\"http", "url(http"):
        assert needle not in html, needle


def test_the_page_opens_in_chromium_with_every_plot_drawn(course):
    out, outcomes = course
    with open_page(out / "index.html") as (browser, problems, requests):
        assert problems == [], problems
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        figures = browser.drawn_figures("section.claim figure.plot")
        expected = {f"{n}-plot-{i}" for n, o in outcomes.items() for i in range(len(o.figures))}
        assert set(figures) == expected
        for f in figures.values():
            assert f["width"] > 200 and f["height"] > 100 and f["marks"] > 5, f
        # The index's links land on the sections.
        target = browser.evaluate("document.querySelector('#verdicts a').getAttribute('href')")
        assert browser.evaluate(f"!!document.querySelector('{target}')")


def test_a_resumed_run_keeps_the_time_the_measurement_took(course, tmp_path):
    out, outcomes = course
    first = json.loads((out / "relu-low-dim" / "verdict.json").read_text())
    # Inflate the recorded time: a rerun with the same numbers keeps it, as a resumed study
    # that trained nothing would.
    (out / "relu-low-dim" / "verdict.json").write_text(json.dumps({**first, "seconds": 600.0}))
    again = run_all(Context(out_dir=out, seeds=2, verbose=False), names=["relu-low-dim"])
    assert again["relu-low-dim"].seconds == 600.0
    assert "10.0" in (out / "index.html").read_text()          # minutes, in the index
    # Other numbers (another seed count) are a new measurement, timed afresh.
    other = run_all(Context(out_dir=out, seeds=3, verbose=False), names=["relu-low-dim"])
    assert other["relu-low-dim"].seconds < 600.0


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
