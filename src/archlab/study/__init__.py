"""Studies: many architectures trained under one protocol, every run kept in a database,
and a report that compares them.

    import archlab.study as study
    result = study.compare("quick-tour")              # or a YAML path; resumable
    study.report("studies/quick-tour")                # table + report.html + CSV

From the top down: compare.py runs a study (work.py is the claim-and-train loop of every
process, workers.py the local worker processes, ray_executor.py the runs as Ray tasks,
run.py one run, console.py its lines in the terminal); report.py writes the table, the
plots and the CSV (summary.py, plots.py, page.py); location.py says where a study lives;
store.py and backends.py are the study database (SQLite or PostgreSQL) with atomic claims
for several workers, its rows shaped by measures.py; protocol.py reads protocol files
(validate.py checks them).
"""
from archlab.study.compare import compare, plan  # noqa: F401
from archlab.study.location import open_study, resolve_study  # noqa: F401
from archlab.study.backends import is_url, open_store, redact_url  # noqa: F401
from archlab.study.measures import RunMeasures  # noqa: F401
from archlab.study.protocol import (  # noqa: F401
    ModelEntry, Protocol, ProtocolError, list_protocols, load_protocol, parse_protocol,
    preset_path, presets,
)
from archlab.study.report import report, write_report  # noqa: F401
from archlab.study.schema import Run  # noqa: F401
from archlab.study.store import Store, StoreError  # noqa: F401
from archlab.study.summary import summarize  # noqa: F401
from archlab.study.table import print_results  # noqa: F401
from archlab.study.verdict import Verdict, judge  # noqa: F401
from archlab.study import stats  # noqa: F401
from archlab.study.work import StudyResult  # noqa: F401
from archlab.study.workers import install_sigterm  # noqa: F401
from archlab.study.predictions import RunPredictions, encode_predictions  # noqa: F401
