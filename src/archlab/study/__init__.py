"""Studies: many architectures trained under one protocol, every run kept in a database,
and a report that compares them.

    import archlab.study as study
    result = study.compare("quick-tour")              # or a YAML path; resumable
    study.report("studies/quick-tour")                # table + report.html + CSV

protocol.py reads and validates protocol files, store.py is the study database (SQLite or
PostgreSQL) with atomic claims for several workers, runner.py trains and measures each
run, report.py writes the table, the plots and the CSV.
"""
from archlab.study.protocol import (  # noqa: F401
    ModelEntry, Protocol, ProtocolError, load_protocol, parse_protocol, presets,
)
from archlab.study.report import print_results, report, summarize, write_report  # noqa: F401
from archlab.study.runner import StudyResult, compare, open_study  # noqa: F401
from archlab.study.runner import install_sigterm, plan  # noqa: F401
from archlab.study.store import Run, Store, StoreError, open_store  # noqa: F401
