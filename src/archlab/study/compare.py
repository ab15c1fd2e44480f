"""Running a study: every (architecture, seed) pair of a protocol, recorded in the study
database, resumable, shareable between workers.

    archlab compare                         # quick-tour on Fashion-MNIST
    archlab compare cifar10 --seeds 0 1 2   # a preset, three seeds
    archlab compare my.yaml --db postgresql://lab@db/studies     # then, on other machines:
    archlab compare --worker --db postgresql://lab@db/studies --study /shared/my
    archlab compare my.yaml --executor ray --address ray://head:10001 --gpus-per-run 1 \
        --db postgresql://lab@db/studies --study /shared/my     # each run a Ray task

A study is a directory (default `studies/<protocol name>`) holding the SQLite database
(`study.db`, unless --db names a PostgreSQL server), one run directory per run (the
trainer's checkpoints and metrics), the report and its CSV. Running the same command again
resumes: finished runs are skipped, an interrupted one continues from its checkpoint.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from archlab._text import fmt_time
from archlab.study.backends import is_url, open_store
from archlab.study.location import resolve_study
from archlab.study.protocol import Protocol, load_protocol
from archlab.study.ray_executor import check_resources, import_ray, train_on_ray
from archlab.study.report import write_report
from archlab.study.store import DEFAULT_LEASE_S
from archlab.study.work import (Session, StudyResult, WorkOptions, open_session, serve,
                                train_left)
from archlab.study.workers import LocalWorkers


def compare(protocol: str | Path | Protocol | None = None, *, models: Iterable[str] | None = None,
            data: str | None = None, seeds: Iterable[int] | None = None,
            overrides: dict[str, Any] | None = None, study: str | Path | None = None,
            db: str | None = None, worker: bool = False, device: str | None = None,
            root: str | None = None, retry_failed: bool = False, lease_s: float = DEFAULT_LEASE_S,
            max_runs: int | None = None, verbose: bool = True, progress: bool = True,
            report: bool = True, out=None, jobs: int | None = None, executor: str = "local",
            address: str | None = None, gpus_per_run: float | None = None,
            cpus_per_run: float | None = None) -> StudyResult:
    """Run every (architecture, seed) pair of a protocol that is not done yet.

    protocol: a preset name (default 'quick-tour'), a YAML path or a Protocol; models,
        data, seeds, overrides change it (see `load_protocol`).
    study: the study directory (default studies/<protocol name>); db: a PostgreSQL URL or
        an SQLite path (default <study>/study.db).
    worker: join an existing study and work on whatever runs are left (all its protocols,
        or `protocol`'s), without writing the report.
    device: cpu, cuda, ... (default: the recipe's 'auto'); root: where named datasets are.
    retry_failed: run failed runs again; lease_s: seconds without a heartbeat after which a
        running run is taken over; max_runs: stop after this many runs (for tests).
    jobs: runs trained side by side (default: the protocol's `jobs`, else 1), each in a
        worker process of its own with its share of the CPU cores (torch threads = cores //
        jobs); this process then only watches them and reports, and their logs go to
        <study>/workers/. A worker that dies leaves its run to the others or to this
        process, which trains what is left at the end.
    executor: 'local' (this process and its `jobs` workers) or 'ray': every run a Ray task
        asking for `cpus_per_run` CPUs (default 1) and `gpus_per_run` GPUs (default 1 when
        the cluster has GPUs, else 0), on the cluster at `address` (ray://HOST:10001) or on
        a Ray started on this machine; a task whose worker dies is retried and resumes
        from its checkpoint (study/ray_executor.py).
    Returns a StudyResult; writes <study>/report.html and results.csv unless report=False.
    """
    _check_executor(executor, jobs, worker, address, gpus_per_run, cpus_per_run)
    options = WorkOptions(device, root, retry_failed, lease_s, verbose, progress)
    if worker and protocol is None:     # every protocol the study holds
        return serve(None, study, db, options, max_runs)
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(
        protocol, models=models, data=data, seeds=seeds, overrides=overrides)
    if worker:
        return serve(proto, study, db, options, max_runs)
    session = open_session(proto, study, db, False, options)
    try:
        started, attempted = 0, set()
        n_jobs = min(jobs or proto.jobs, len(session.todo))
        if executor == "ray" and session.todo:
            started, attempted = train_on_ray(session, address, gpus_per_run, cpus_per_run,
                                              max_runs, proto.study_budget)
        elif n_jobs > 1 and max_runs is None:
            started, attempted = _train_in_workers(session, n_jobs, proto)
        train_left(session, started, attempted, max_runs, proto.study_budget)
        session.result.runs = session.all_runs()
        if report:
            _report(session, proto, out or sys.stdout)
    finally:
        session.store.close()
    return session.result


def _check_executor(executor: str, jobs: int | None, worker: bool, address: str | None,
                    gpus_per_run: float | None, cpus_per_run: float | None) -> None:
    """Refuse what cannot work before anything is opened (or trained)."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor={executor!r} (--executor {executor}): 'local' (this "
                         "machine's processes) or 'ray' (Ray tasks)")
    _check_jobs(jobs, worker)
    if executor == "local":
        given = [f"{name}={value}" for name, value in (
            ("address", address), ("gpus_per_run", gpus_per_run),
            ("cpus_per_run", cpus_per_run)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: these place runs on Ray; add "
                             "executor='ray' (--executor ray)")
        return
    if worker:
        raise ValueError("worker=True with executor='ray': a Ray study is one command, "
                         "`archlab compare PROTOCOL --executor ray` (--worker processes started "
                         "on their own may still join it)")
    if jobs is not None and jobs > 1:
        raise ValueError(f"jobs={jobs} with executor='ray': Ray runs as many runs at a time "
                         "as the cluster fits; size them with --cpus-per-run/--gpus-per-run")
    check_resources(gpus_per_run, cpus_per_run)
    import_ray()   # the one-line reason before anything is written


def _check_jobs(jobs: int | None, worker: bool) -> None:
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs={jobs} (--jobs {jobs}): the number of runs trained side by "
                         "side is 1 or more")
    if worker and jobs is not None and jobs > 1:
        raise ValueError(f"worker=True with jobs={jobs}: --worker is one worker process; start "
                         "more `archlab compare --worker` commands, or leave out --worker and "
                         "let --jobs N start them")


def _train_in_workers(session: Session, jobs: int, proto: Protocol) -> tuple[int, set[str]]:
    """Let `jobs` local worker processes train the runs; returns how many they started and
    the runs that failed in them (this process does not try those again)."""
    o = session.options
    pool = LocalWorkers(jobs, proto, session.study_dir, session.db_spec, o)
    try:
        started = pool.watch(session, proto.study_budget)
    except KeyboardInterrupt:
        session.result.interrupted = True
        session.printer.say("\ninterrupted: the workers give their runs back; they resume "
                            "from their checkpoints when the same command runs again")
        raise
    finally:
        pool.stop()
    # After them, this process trains what a dead worker left.
    return started, {r.key for r in session.store.runs(keys=session.keys)
                     if r.status == "failed"}


def _report(session: Session, proto: Protocol, out) -> None:
    """The results table, report.html and the CSV, and a closing line."""
    result, printer = session.result, session.printer
    counts = {s: sum(r.status == s for r in result.runs)
              for s in ("done", "failed", "running", "pending")}
    print(file=out)
    result.report = write_report(session.study_dir, session.store, proto.hash, file=out)
    printer.say(f"\n{counts['done']} of {len(result.runs)} runs done"
                + (f", {counts['failed']} failed" if counts["failed"] else "")
                + (f", {counts['running']} running elsewhere" if counts["running"] else "")
                + (f", {counts['pending']} pending" if counts["pending"] else "")
                + f" in {fmt_time(printer.elapsed())}")
    printer.say(f"report: {result.report}")
    printer.say(f"csv:    {result.report.parent / 'results.csv'}")


def plan(protocol: Protocol, study: str | Path | None = None, db: str | None = None
         ) -> list[dict[str, Any]]:
    """The runs of a protocol with their state in the study (nothing is written)."""
    study_dir, db_spec = resolve_study(study, db, protocol.name)
    status: dict[str, str] = {}
    if is_url(db_spec) or Path(db_spec).is_file():
        with open_store(db_spec) as store:
            status = {r.key: r.status for r in store.runs(protocol.hash)}
    base_weights = protocol.base_recipe_dict().get("pretrained")
    return [{"key": r.key, "label": r.label, "model": r.entry.name, "seed": r.seed,
             "weights": r.entry.recipe.get("pretrained", base_weights) or "random",
             "status": status.get(r.key, "new")} for r in protocol.runs()]


__all__ = ["compare", "plan"]
