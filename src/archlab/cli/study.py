"""`archlab compare` and `report`: many architectures under one protocol, and the results."""
from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

from archlab._text import format_table
from archlab.cli.options import add_command, add_options
from archlab.cli.recipe_flags import add_recipe_flags
from archlab.study import (
    compare, install_sigterm, list_protocols, load_protocol, plan, presets, report,
)
from archlab.train import parse_assignments


def add_commands(sub) -> None:
    _parser_compare(sub)
    _parser_report(sub)


def _parser_compare(sub) -> None:
    p = add_command(sub, "compare", cmd_compare)
    p.add_argument("protocol", nargs="?",
                   help="a preset (" + ", ".join(presets()) + "; default "
                        "quick-tour) or a protocol YAML file")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="run these instead of the protocol's list (its entries keep their "
                        "overrides; other registered names use the shared recipe)")
    p.add_argument("--data", help="the dataset instead of the protocol's: fashion-mnist, "
                                  "mnist, digits, cifar10, cifar100, a folder or a CSV")
    add_options(p, "--data-root")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                   help="one value N: N seeds counting up from the protocol's first (--seeds "
                        "3 with seeds: [0] runs 0, 1, 2); several: those seeds (--seeds 5 9)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the protocol, e.g. --set recipe.epochs=3 "
                        "--set data.train_fraction=0.5 --set budget.run=10m")
    p.add_argument("--study", help="the study directory (default: studies/<protocol name>)")
    p.add_argument("--db", help="the study database: a PostgreSQL URL "
                                "(postgresql://user@host/db) for workers on several machines, "
                                "or an SQLite file (default: <study>/study.db)")
    p.add_argument("--worker", action="store_true", help="join an existing study (--study "
                   "or --db) and take runs until none is left; writes no report")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="train N runs side by side, each in a worker process with its share "
                        "of the CPU cores (default: the protocol's jobs, else 1)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this process and its --jobs workers (default); ray: every "
                        "run a Ray task, placed on the cluster's machines and GPUs, retried "
                        "from its checkpoint when its worker dies (pip install 'archlab[ray]')")
    p.add_argument("--address", metavar="ADDRESS",
                   help="with --executor ray: the cluster (ray://HOST:10001, or auto on one "
                        "of its nodes; default: start Ray on this machine). Its machines "
                        "must reach the study: --db postgresql://... and --study on a shared "
                        "disk")
    p.add_argument("--gpus-per-run", type=float, metavar="N",
                   help="with --executor ray: GPUs each run asks for (default 1 when the "
                        "cluster has GPUs, else 0; 0.5 puts two runs on a GPU)")
    p.add_argument("--cpus-per-run", type=float, metavar="N",
                   help="with --executor ray: CPUs each run asks for (default 1; its torch "
                        "threads)")
    add_recipe_flags(p, only=("device", "log"))  # log: the protocol's log:, not hashed
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--lease", type=float, default=120.0, metavar="SECONDS",
                   help="a running run whose worker has been silent this long is taken over "
                        "(default 120)")
    p.add_argument("--list", action="store_true",
                   help="list the shipped protocols and stop")
    p.add_argument("--dry-run", action="store_true",
                   help="show the runs and their state, train nothing")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="only the study's lines, not the trainer's")


def _list_protocols() -> None:
    rows = [(p["name"], p["dataset"] or "(--data)", str(p["models"]), p["description"][:90])
            for p in list_protocols()]
    print(format_table(rows, ("protocol", "data", "models", "description"), "llrl"))


def _dry_run(args, overrides) -> None:
    proto = load_protocol(args.protocol, models=args.models, data=args.data,
                          seeds=_seeds(args), overrides=overrides)
    rows = plan(proto, args.study, args.db)
    print(f"protocol {proto.name} [{proto.hash[:8]}] on {proto.dataset}: {len(rows)} runs")
    print("\n".join(f"  {line}" for line in proto.schedule_lines()))
    print(format_table([(r["label"], r["model"], r["seed"], r["weights"], r["status"],
                         r["key"][:8]) for r in rows],
                       ("label", "model", "seed", "weights", "status", "run"), "llrlll"))


def _seeds(args) -> int | list[int] | None:
    """--seeds N is a count, --seeds A B ... the seeds themselves."""
    if args.seeds is None:
        return None
    return args.seeds[0] if len(args.seeds) == 1 else args.seeds


def cmd_compare(args) -> int:
    """train many architectures under one protocol; results in a study

    Run every (architecture, seed) pair of a protocol, record each run in the study database
    (SQLite beside the study, or PostgreSQL with --db), then print the results table and
    write report.html. Running the same command again resumes: finished runs are
    skipped, an interrupted one continues from its checkpoint. `archlab compare --worker
    --study DIR` (or --db URL) in more processes or on more machines shares the work;
    --executor ray makes every run a Ray task, on this machine or a cluster (--address)."""
    if args.list:
        _list_protocols()
        return 0
    overrides = parse_assignments(args.set)
    if args.log:
        overrides["log"] = args.log
    if args.dry_run:
        _dry_run(args, overrides)
        return 0
    previous = install_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line(warnings.showwarning)
            result = compare(
                args.protocol, models=args.models, data=args.data, seeds=_seeds(args),
                overrides=overrides, study=args.study, db=args.db, worker=args.worker,
                device=args.device, root=args.data_root, retry_failed=args.retry_failed,
                lease_s=args.lease, verbose=not args.quiet, progress=not args.no_progress,
                jobs=args.jobs, executor=args.executor, address=args.address,
                gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    failed = sum(r.status == "failed" for r in result.runs)
    return 1 if failed else 0


def _one_line(show):
    """archlab's own warnings as one line on stderr (`archlab compare: warning: ...`);
    other libraries' as they are, with their file and line."""
    archlab_dir = str(Path(__file__).resolve().parents[1])

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith(archlab_dir):
            print(f"archlab compare: warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)
    return showwarning


def _parser_report(sub) -> None:
    p = add_command(sub, "report", cmd_report)
    p.add_argument("study", help="a study directory, its study.db, or a PostgreSQL URL")
    p.add_argument("--out", help="where to write the HTML (default: <study>/report.html)")
    p.add_argument("--protocol", help="which protocol of the study, by name or hash prefix "
                                      "(default: the most recently active)")
    p.add_argument("--csv", help="also write every run to this CSV file")
    p.add_argument("--no-html", action="store_true", help="only the table (and --csv)")


def cmd_report(args) -> int:
    """the results table, report.html and CSV of a study

    Print the results table of a study and write its self-contained report.html (plots of
    accuracy against training time, parameters and MACs, learning curves, spread over
    seeds, confusion matrix, model cards, the protocol) with results.csv and summary.csv
    beside it."""
    path = report(args.study, out=args.out, protocol=args.protocol, csv_path=args.csv,
                  html_report=not args.no_html)
    if path is not None:
        print(f"report: {path}")
    if args.csv:
        print(f"csv:    {args.csv}")
    return 0
