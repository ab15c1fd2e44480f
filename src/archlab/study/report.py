"""The report of a study: a table in the terminal, a self-contained report.html, CSV files.

The report reads the study database and nothing else: it never trains. Its plots are the
questions a comparison answers:

- accuracy against training time (the closing chart of the course's comparison article:
  what does an extra minute of training buy?), against parameters and against MACs;
- the spread over seeds (is a difference larger than the noise?);
- the learning curves of every run (is a model still improving when the protocol stops?);
- the confusion matrix of the best model and the per-class accuracy of every model (which
  classes are hard, and for whom?);
- each model's card (paper, year, key idea) and the protocol itself, so that a reader can
  reproduce the numbers.

summary.py groups the runs by model and makes the table and the CSV, plots.py draws,
page.py writes the page from its template.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from archlab._io import write_atomic
from archlab.study.backends import redact_url
from archlab.study.location import open_study
from archlab.study.page import REPORT_HTML, RESULTS_CSV, SUMMARY_CSV, build_html
from archlab.study.store import Store
from archlab.study.table import Results, print_results, runs_csv, summary_csv


def choose_protocol(store: Store, protocol: str | None = None) -> dict[str, Any] | None:
    """The protocol row to report: by hash prefix or name, else the most recently active."""
    rows = store.protocols()
    if not rows:
        return None
    if protocol is None:
        return rows[0]
    hits = [r for r in rows if r["hash"].startswith(protocol) or r["name"] == protocol]
    if not hits:
        raise ValueError(f"no protocol {protocol!r} in this study; it has "
                         + ", ".join(f"{r['name']} [{r['hash'][:8]}]" for r in rows))
    return hits[0]


def write_report(study_dir: str | Path, store: Store, protocol_hash: str | None = None,
                 out: str | Path | None = None, file=None) -> Path:
    """Write report.html, results.csv and summary.csv for one protocol of a study; with
    `file`, print the results table there too (the runs are judged once for all of them)."""
    study_dir = Path(study_dir)
    row = choose_protocol(store, protocol_hash)
    results = Results.of(store.runs(row["hash"]) if row else [])
    if file is not None:
        print_results(results, file=file)
    out = Path(out) if out else study_dir / REPORT_HTML
    out.parent.mkdir(parents=True, exist_ok=True)
    csvs = {RESULTS_CSV: runs_csv(results.runs),
            SUMMARY_CSV: summary_csv(results.summaries, results.verdict)}
    write_atomic(out, build_html(results, row, str(study_dir), _db_name(store), csvs))
    for name, text in csvs.items():
        write_atomic(out.parent / name, text)
    return out


def _db_name(store: Store) -> str:
    return redact_url(store.url)


def report(study: str | Path, *, out: str | Path | None = None, protocol: str | None = None,
           csv_path: str | Path | None = None, html_report: bool = True, file=None
           ) -> Path | None:
    """Print the results table of a study and write its report (and CSV)."""
    study_dir, store = open_study(study)
    try:
        row = choose_protocol(store, protocol)
        if row is None:
            raise ValueError(f"{study} holds no runs yet")
        runs = store.runs(row["hash"])
        out_file = file or sys.stdout
        print(f"{row['name']} [{row['hash'][:8]}] in {_db_name(store)}", file=out_file)
        if csv_path:
            write_atomic(Path(csv_path), runs_csv(runs))
        if not html_report:
            print_results(runs, file=out_file)
            return None
        return write_report(study_dir, store, row["hash"], out, file=out_file)
    finally:
        store.close()


__all__ = ["choose_protocol", "report", "write_report"]
