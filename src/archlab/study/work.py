"""The loop every process of a study runs: open the study, then claim the runs left one at
a time, train each and record it, until none is left. A run is tried once per command: a
failure, or a run lost to another worker, is not claimed again in the same breath.

`serve` is a whole `archlab compare --worker`: join a study and work on whatever is left.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.study.backends import is_url, open_store, redact_url
from archlab.study.console import Printer, estimate_cost, eta, run_header, run_line
from archlab.study.data import DataCache
from archlab.study.entry import ModelEntry
from archlab.study.lease import LeaseLost
from archlab.study.location import remember_db, resolve_study
from archlab.study.protocol import Protocol, parse_protocol
from archlab.study.run import RunContext, execute_run
from archlab.study.schema import Run
from archlab.study.store import DEFAULT_LEASE_S, Store, StoreError, worker_name


@dataclass
class StudyResult:
    """What one command did to a study: every run of its protocol(s) afterwards, the
    report it wrote, the runs done and failed here."""

    study_dir: Path
    db: str
    protocol: Protocol | None
    runs: list[Run] = field(default_factory=list)
    report: Path | None = None
    done_here: int = 0
    failed_here: int = 0
    interrupted: bool = False


@dataclass
class WorkOptions:
    """How this process trains its runs (the same in the local worker processes)."""

    device: str | None = None          # cpu, cuda, ... (default: the recipe's 'auto')
    root: str | None = None            # where named datasets are
    retry_failed: bool = False
    lease_s: float = DEFAULT_LEASE_S
    verbose: bool = True
    progress: bool = True


@dataclass
class Session:
    """One command's hold on a study: its store, its protocols, the runs it works on, and
    the estimated cost of each model's run (for the time left)."""

    study_dir: Path
    db_spec: str
    store: Store
    options: WorkOptions
    protocols: dict[str, Protocol]
    keys: list[str]
    todo: list[Run]
    printer: Printer
    result: StudyResult
    data: DataCache
    worker: str = field(default_factory=worker_name)
    costs: dict[str, float | None] = field(default_factory=dict)

    @property
    def total_cost(self) -> float:
        return sum(self.costs.get(r.label) or 0.0 for r in self.todo)

    def protocol_of(self, run: Run) -> Protocol:
        p = self.protocols.get(run.protocol_hash) or protocol_from_row(next(
            row for row in self.store.protocols() if row["hash"] == run.protocol_hash))
        self.protocols[run.protocol_hash] = p
        return p

    def all_runs(self) -> list[Run]:
        """Every run of the protocol(s): those of earlier commands with other models too."""
        return [r for h in self.protocols for r in self.store.runs(h)]


def open_session(proto: Protocol | None, study: str | Path | None, db: str | None,
                 worker: bool, options: WorkOptions) -> Session:
    """Open (or start) the study, register `proto`'s runs unless `worker`, and say what
    is done and what is left. The caller closes `session.store`."""
    study_dir, db_spec = resolve_study(study, db, proto.name if proto else None)
    study_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(db_spec)
    try:
        remember_db(study_dir, db_spec)
        protocols = _protocols(store, proto, worker, db_spec)
        keys = [r.key for h in protocols for r in store.runs(h)]
        if proto is not None:
            # Only this protocol's current models and seeds, not runs of older lists.
            wanted = {r.key for r in proto.runs()}
            keys = [k for k in keys if k in wanted]
        all_runs = store.runs(keys=keys)
        todo = [r for r in all_runs if r.status != "done"
                and (options.retry_failed or r.status != "failed")]
        session = Session(study_dir, db_spec, store, options, protocols, keys, todo,
                          Printer(options.verbose), StudyResult(study_dir, db_spec, proto),
                          DataCache(options.root))
        _announce(session, proto, all_runs)
        if proto is not None and todo and options.verbose:
            _estimate_costs(session, proto)
        return session
    except BaseException:
        store.close()
        raise


def _protocols(store: Store, proto: Protocol | None, worker: bool, db_spec: str
               ) -> dict[str, Protocol]:
    protocols: dict[str, Protocol] = {}
    if proto is not None:
        store.add_protocol(proto)
        if not worker:
            store.add_runs(proto.runs())
        protocols[proto.hash] = proto
    if worker and proto is None:
        for row in store.protocols():
            protocols[row["hash"]] = protocol_from_row(row)
        if not protocols:
            raise StoreError(f"{redact_url(db_spec)} holds no study yet: start it with "
                             "`archlab compare PROTOCOL --study/--db ...` first")
    return protocols


def _announce(session: Session, proto: Protocol | None, all_runs: list[Run]) -> None:
    todo, db_spec = session.todo, session.db_spec
    failed_before = [r for r in all_runs
                     if r.status == "failed" and not session.options.retry_failed]
    where = (f"PostgreSQL {redact_url(db_spec)}" if is_url(db_spec) else f"SQLite {db_spec}")
    names = ", ".join(dict.fromkeys(r.label for r in all_runs))
    retry = (f", {len(failed_before)} failed (--retry-failed runs them again)"
             if failed_before else "")
    session.printer.say(f"study {session.study_dir}: {len(all_runs)} runs "
                        f"({len(all_runs) - len(todo)} done{retry}, {len(todo)} to do) "
                        f"in {where}")
    if proto is not None:
        session.printer.say(f"protocol {proto.name} [{proto.hash[:8]}] on {proto.dataset}: "
                            f"{names}; seeds {', '.join(map(str, proto.seeds))}")


def _estimate_costs(session: Session, proto: Protocol) -> None:
    try:
        train_data = session.data.get(proto)[0]
    except Exception:  # noqa: BLE001 - the run itself will say what is wrong
        return
    for r in session.todo:
        if r.label not in session.costs:
            session.costs[r.label] = estimate_cost(proto, ModelEntry(**{
                k: v for k, v in r.entry.items() if k != "path"}), train_data)


def train_left(session: Session, started: int, attempted: set[str], max_runs: int | None,
               budget: float | None) -> None:
    """Claim, train and record the runs left, one at a time, until none is left, the
    study's time budget is spent or `max_runs` were done here. `started`: runs already
    announced (by local workers); `attempted`: runs not to claim again."""
    s, printer, result = session, session.printer, session.result
    done_times: list[tuple[float | None, float]] = []
    while True:
        if max_runs is not None and result.done_here + result.failed_here >= max_runs:
            break
        if budget and printer.elapsed() > budget:
            printer.say(f"the study's time budget ({budget:g} s) is spent; run the same "
                        "command again to continue")
            break
        run = s.store.claim([k for k in s.keys if k not in attempted], s.worker,
                            s.options.lease_s, s.options.retry_failed)
        if run is None:
            break
        attempted.add(run.key)
        protocol = s.protocol_of(run)
        started += 1
        remaining = s.store.counts(s.keys)
        left = remaining.get("pending", 0) + remaining.get("running", 0)
        printer.say(run_header(started, max(len(s.todo), started + left - 1), run,
                               printer.elapsed(),
                               eta(done_times, s.costs, s.todo[started - 1:], s.total_cost)))
        t_run = time.perf_counter()
        measures = train_one(s, run, protocol)
        if measures is not None:
            result.done_here += 1
            done_times.append((s.costs.get(run.label), time.perf_counter() - t_run))
            printer.say(run_line(run, measures))


def train_one(s: Session, run: Run, protocol: Protocol):
    """Train one claimed run and record it (a failure too, with its error.log); its
    measures, or None when it failed or was lost. Ctrl-C gives the run back."""
    o = s.options
    ctx = RunContext(protocol, s.store, s.study_dir, s.worker, o.device, s.data, o.verbose,
                     o.progress, o.lease_s)
    try:
        return execute_run(run, ctx)
    except LeaseLost as e:
        s.printer.say(f"  {e}")
    except KeyboardInterrupt:
        s.store.release(run.key, s.worker)
        s.result.interrupted = True
        s.printer.say(f"\ninterrupted: {run.label} (seed {run.seed}) will resume from its "
                      "checkpoint when the same command runs again")
        raise
    except Exception as e:  # noqa: BLE001 - one failed run does not stop a study
        msg = f"{type(e).__name__}: {e}"
        s.store.fail(run.key, s.worker, msg)
        s.result.failed_here += 1
        _write_error(s.study_dir, run, traceback.format_exc())
        s.printer.say(f"  FAILED {run.label} (seed {run.seed}): {msg}")
    return None


def serve(proto: Protocol | None, study: str | Path | None, db: str | None,
          options: WorkOptions, max_runs: int | None = None) -> StudyResult:
    """Join a study as one worker and train whatever runs are left (all its protocols, or
    `proto`'s), without writing the report."""
    session = open_session(proto, study, db, True, options)
    try:
        train_left(session, 0, set(), max_runs, proto.study_budget if proto else None)
        result = session.result
        result.runs = session.all_runs()
        session.printer.say(f"\nworker {session.worker}: {result.done_here} runs done here"
                            + (f", {result.failed_here} failed" if result.failed_here else "")
                            + f"; nothing left to claim. `archlab report {session.study_dir}` "
                            "writes the report.")
    finally:
        session.store.close()
    return result


def _write_error(study_dir: Path, run: Run, text: str) -> None:
    try:
        d = study_dir / (run.run_dir or f"runs/{run.label}-s{run.seed}-{run.key[:8]}")
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.log").write_text(text)
    except OSError:
        pass


def protocol_from_row(row: dict[str, Any]) -> Protocol:
    """The Protocol a study's database holds (as the command that started it read it)."""
    p = parse_protocol(row["body"], source=f"protocol {row['name']} (from the study database)",
                       default_name=row["name"], check_models=False)
    if p.hash != row["hash"]:
        raise StoreError(f"protocol {row['name']} in the study database hashes to {p.hash[:8]} "
                         f"here, not {row['hash'][:8]}: this archlab reads protocols differently "
                         "from the one that started the study; use the same version")
    p.text = row.get("yaml")
    return p


__all__ = ["Session", "StudyResult", "WorkOptions", "open_session", "protocol_from_row",
           "serve", "train_left", "train_one"]
