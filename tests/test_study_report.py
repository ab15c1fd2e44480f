"""The study report: a terminal table, CSV files, and a self-contained report.html that a
real browser (headless Chromium, spoken to over the DevTools protocol) opens with no
console errors and no network, with every plot drawn; the test saves a screenshot."""
from __future__ import annotations

import base64
import csv
import io
import json

import pytest
import torch

from browser import open_page
from study_fixtures import tiny_protocol

from archlab.study import compare, report

PLOTS = ("plot-accuracy-time", "plot-accuracy-params", "plot-accuracy-macs", "plot-seeds",
         "plot-curves", "plot-steps", "plot-confusion", "plot-per-class")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two models and the classical baseline, two seeds each, on the digits."""
    tmp = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    mp.setenv("ARCHLAB_OFFLINE", "1")
    threads = torch.get_num_threads()
    proto = tiny_protocol(tmp / "tiny.yaml", epochs=2, seeds=(0, 1), extra="""\
        - name: sift-bovw
          model_kwargs: {upscale: 32, step: 4, patch: 8, vocab_size: 8, pca_dims: 16}
        """)
    compare(proto, study=tmp / "study", progress=False, verbose=False)
    torch.set_num_threads(threads)
    mp.undo()
    return tmp / "study"


def test_terminal_table_and_csv(study, tmp_path, capsys):
    path = report(study, csv_path=tmp_path / "runs.csv")
    out = capsys.readouterr().out
    assert path == study / "report.html"
    for label in ("resnet-tiny", "resnet-tiny-w", "sift-bovw"):
        assert label in out
    rows = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1"}
    assert all(r["status"] == "done" and 0 <= float(r["top1"]) <= 1 for r in rows)
    summary = list(csv.DictReader(io.StringIO((study / "summary.csv").read_text())))
    assert {r["label"] for r in summary} == {"resnet-tiny", "resnet-tiny-w", "sift-bovw"}
    # Every accuracy carries its interval, and the table says which models are tied.
    assert "top-1 % [95% CI]" in out and ("Tied with #1" in out or "ahead of every" in out)
    for r in summary:
        assert float(r["top1_ci_low"]) <= float(r["top1_mean"]) <= float(r["top1_ci_high"])
        assert r["top1_ci_method"] == "t"           # two seeds each
    assert sum(r["delta_vs_best"] == "" for r in summary) == 1   # the first has none
    for r in rows:
        assert float(r["top1_ci_low"]) <= float(r["top1"]) <= float(r["top1_ci_high"])


def test_report_is_self_contained(study):
    html = (study / "report.html").read_text()
    # No network: nothing is fetched from elsewhere (links to papers are only links).
    for needle in ("<script src", "<link ", "@import", "src=\"http", "url(http"):
        assert needle not in html, needle
    for plot in PLOTS:
        assert f'id="{plot}"' in html, plot
    assert "tiny" in html and "Deep Residual Learning" in html   # the protocol and the cards
    # The paired comparison: a 3x3 matrix of the models, and a gallery for each of the 3 pairs.
    assert html.count('id="pairwise"') == 1 and html.count("<select id=\"pair-select\"") == 1
    assert html.count('class="gallery"') == 3
    assert "McNemar" in html and "Holm" in html


def test_report_opens_in_chromium_with_every_plot_drawn(study, tmp_path):
    with open_page(study / "report.html") as (browser, problems, requests):
        assert problems == [], problems
        # The page itself is the only request: no fonts, scripts or images from anywhere.
        assert all(u.startswith(("file:", "data:")) for u in requests), requests

        figures = browser.drawn_figures()
        assert set(PLOTS) <= set(figures), sorted(figures)
        for plot in PLOTS:
            f = figures[plot]
            assert not f["empty"] and f["width"] > 200 and f["height"] > 100 and f["marks"] > 5, f

        # The gallery shows one pair at a time, and the select switches it.
        shown = browser.evaluate("""(() => {
            const visible = () => [...document.querySelectorAll('div.gallery')]
                .filter(g => !g.hidden).map(g => g.id);
            const before = visible();
            const s = document.getElementById('pair-select');
            s.value = s.options[2].value;
            s.dispatchEvent(new Event('change'));
            const imgs = [...document.querySelectorAll('div.gallery:not([hidden]) img')]
                .map(i => i.naturalWidth);
            return JSON.stringify([before, visible(), imgs]); })()""")
        before, after, widths = json.loads(shown)
        assert before == ["pair-0"] and after == ["pair-2"]
        assert widths and all(w == 56 for w in widths)   # the thumbnails decode

        # The results table sorts when a header is clicked (the page's own script runs).
        order = browser.evaluate("""(() => {
            const t = document.querySelector('table.sortable');
            const rows = () => [...t.tBodies[0].rows].map(r => r.cells[1].textContent);
            const before = rows();
            t.tHead.rows[0].cells[1].click();
            return JSON.stringify([before, rows()]); })()""")
        before, after = json.loads(order)
        assert sorted(before) == sorted(after) and after == sorted(after)

        height = browser.evaluate("document.documentElement.scrollHeight")
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1})
        png = base64.b64decode(shot["data"])
        out = tmp_path / "report.png"
        out.write_bytes(png)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_the_page_gives_the_range_of_training_images_when_models_differ():
    from types import SimpleNamespace

    from archlab.study.page import _train_images

    def runs(*counts):
        return [SimpleNamespace(result={"train_images": n}) for n in counts]

    assert _train_images(runs(1000, 1000)) == "1000"
    # A data-efficiency study: each model trained on its own share of the pool.
    assert _train_images(runs(50, 1000, 200)) == "50-1000 (each model its own share)"
    assert _train_images([SimpleNamespace(result=None)]) == "?"
