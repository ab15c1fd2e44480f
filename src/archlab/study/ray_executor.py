"""A study's runs as Ray tasks: `archlab compare PROTOCOL --executor ray [--address
ray://HOST:10001]`. Each (architecture, seed) run is one task asking for `cpus_per_run`
CPUs and `gpus_per_run` GPUs; Ray places the tasks on the cluster's machines and GPUs, as
many at a time as fit.

The study database stays the record: a task claims its run, keeps its lease, records its
epochs and its result exactly as an `archlab compare --worker` process does (work.py), and
this process prints the runs as they start and end by reading the database (the watch of
the local workers), then writes the report. A task whose worker process or machine dies is
started again by Ray (`RETRIES` times); the new attempt takes the run over from the dead one
and resumes it from its checkpoint in the run directory. A run that fails in training (a
diverged loss, unreadable data) is recorded as failed and not retried: it would fail again.

Every task must reach the study. On one machine it does; on a cluster the study directory
(the runs' checkpoints) must lie on a disk every node mounts at the same path, and the
database is best a PostgreSQL server. Ray is optional (`pip install 'archlab[ray]'`) and
imported only here, only when a study asks for it.
"""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from archlab.study.backends import is_url, open_store
from archlab.study.console import Printer
from archlab.study.data import DataCache
from archlab.study.protocol import Protocol
from archlab.study.schema import Run
from archlab.study.store import Store
from archlab.study.work import Session, StudyResult, WorkOptions, train_one
from archlab.study.workers import watch

RETRIES = 3                 # attempts after the first, when a task's worker or node dies
MISSING = "the ray executor needs Ray: pip install 'archlab[ray]'"
_TOKEN = "ray-"             # a task's worker name ends in ray-<task id>, as do its retries'
_DATA: dict[str | None, DataCache] = {}    # a Ray worker process loads each dataset once


def import_ray():
    """The ray module, or the one-line reason it is missing."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(MISSING) from None
    return ray


def check_resources(gpus_per_run: float | None, cpus_per_run: float | None) -> None:
    if cpus_per_run is not None and not cpus_per_run > 0:
        raise ValueError(f"cpus_per_run={cpus_per_run} (--cpus-per-run): a run needs some "
                         "CPU; give a number above 0 (1, or 0.5 to put two runs on a core)")
    if gpus_per_run is not None and not gpus_per_run >= 0:
        raise ValueError(f"gpus_per_run={gpus_per_run} (--gpus-per-run): give 0 (CPU runs), "
                         "1, or a share such as 0.5 (two runs on one GPU)")


def warn_unshared(db_spec: str, address: str | None) -> None:
    """A cluster's tasks reach the study only through shared storage: say so when its
    database is an SQLite file (its run directories then lie beside it)."""
    if address and not is_url(db_spec):
        warnings.warn(
            f"the study database is the SQLite file {Path(db_spec).resolve()} and the Ray "
            f"cluster at {address} may train on other machines: they must all see it and the "
            "study's run directories at this same path on a shared disk, and SQLite's locks "
            "are not safe on every network file system. Give --db postgresql://... and a --study "
            "directory on a shared disk, or go on if this path is shared.", stacklevel=4)


def train_on_ray(session: Session, address: str | None = None,
                 gpus_per_run: float | None = None, cpus_per_run: float | None = None,
                 max_runs: int | None = None, budget: float | None = None
                 ) -> tuple[int, set[str]]:
    """Train the session's runs left as Ray tasks, printing them as they start and end;
    returns how many started and the runs given to Ray (this process trains none of them).
    Without `address`, a Ray instance on this machine (one the caller started, or one
    started and shut down here)."""
    ray = import_ray()
    warn_unshared(session.db_spec, address)
    todo = session.todo[:max_runs] if max_runs is not None else session.todo
    own = _connect(ray, address)
    try:
        gpus, cpus, slots = _placement(ray, session, gpus_per_run, cpus_per_run, address)
        refs = _submit(ray, session, todo, gpus, cpus)
        try:
            started = watch(session, budget, lambda: _busy(ray, refs), slots)
        except KeyboardInterrupt:
            session.result.interrupted = True
            session.printer.say("\ninterrupted: the tasks give their runs back; they resume "
                                "from their checkpoints when the same command runs again")
            _cancel(ray, refs)
            raise
        if _busy(ray, refs):      # the study's time budget is spent
            _cancel(ray, refs)
        _record_lost(ray, session, refs)
        return started, {r.key for r in todo}
    finally:
        if own:
            ray.shutdown()


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at `address`, or start Ray on this machine; True when this call
    did (and so shuts it down). A Ray the caller started is used as it is."""
    if ray.is_initialized():
        return False
    # The tasks' output stays in Ray's worker logs (and each run's run.log): this
    # terminal shows the study's lines, as with local workers.
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address is None:
        kwargs["include_dashboard"] = False
    ray.init(address=address, **kwargs)
    return True


def _placement(ray, session: Session, gpus_per_run: float | None,
               cpus_per_run: float | None, address: str | None) -> tuple[float, float, int]:
    """Each run's (GPUs, CPUs) and how many runs fit at once; says so. By default a run
    takes one CPU, and one GPU when the cluster has any."""
    total = ray.cluster_resources()
    cpus_there, gpus_there = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    gpus = (1.0 if gpus_there else 0.0) if gpus_per_run is None else float(gpus_per_run)
    cpus = 1.0 if cpus_per_run is None else float(cpus_per_run)
    device = session.options.device or ""
    if not gpus and device.startswith("cuda"):
        raise ValueError(f"device {device} with no GPU per run: Ray hides the GPUs from a "
                         "task that asks for none; give --gpus-per-run 1 (or a share)")
    slots = int(min(cpus_there // cpus, gpus_there // gpus if gpus else float("inf")))
    where = f"the Ray cluster at {address}" if address else "Ray on this machine"
    has = f"{cpus_there:g} CPUs and {gpus_there:g} GPUs"
    wants = f"{cpus:g} CPU{'s' * (cpus != 1)} and {gpus:g} GPU{'s' * (gpus != 1)}"
    if slots < 1:
        msg = (f"each run asks for {wants} (--cpus-per-run, --gpus-per-run) but {where} "
               f"has {has}")
        if address is None:
            raise ValueError(f"{msg}: ask for less")
        warnings.warn(f"{msg}: the runs wait for a node that has them (an autoscaler may "
                      "add one)", stacklevel=4)
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    session.printer.say(f"{where}: {nodes} node{'s' * (nodes != 1)}, {has}; each run takes "
                        f"{wants}, {max(slots, 1)} at a time; each run's log is run.log in "
                        f"its directory under {session.study_dir / 'runs'}")
    return gpus, cpus, max(slots, 1)


def _submit(ray, session: Session, todo: list[Run], gpus: float, cpus: float
            ) -> dict[Any, Run]:
    """One task per run; their references, to the runs."""
    # A training failure is recorded by the task and not retried (retry_exceptions=False):
    # only a dead worker or node starts a task again.
    task = ray.remote(max_retries=RETRIES, retry_exceptions=False)(run_task)
    study_dir = str(session.study_dir.resolve())
    db_spec = session.db_spec if is_url(session.db_spec) else str(
        Path(session.db_spec).resolve())
    root = session.options.root    # the tasks may work in another directory, or machine
    options = replace(session.options, progress=False,
                      root=str(Path(root).resolve()) if root else None)
    threads = max(1, int(cpus))
    return {task.options(name=f"{run.label} seed {run.seed}", num_cpus=cpus, num_gpus=gpus)
            .remote(session.protocol_of(run), study_dir, db_spec, run.key, options, threads):
            run for run in todo}


def _busy(ray, refs: dict[Any, Run]) -> bool:
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
    return len(ready) < len(refs)


def _cancel(ray, refs: dict[Any, Run], grace_s: float = 60.0) -> None:
    """Ask the tasks still running to give their runs back (a KeyboardInterrupt in each:
    the trainer checkpoints and the claim is released), and wait for them."""
    for ref in refs:
        ray.cancel(ref)
    ray.wait(list(refs), num_returns=len(refs), timeout=grace_s)


def _record_lost(ray, session: Session, refs: dict[Any, Run]) -> None:
    """A run whose task Ray gave up on (its worker died more than RETRIES times, or the
    task broke outside training) is recorded as failed, with Ray's reason."""
    store, printer = session.store, session.printer
    for ref, run in refs.items():
        try:
            ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            continue
        except Exception as e:  # noqa: BLE001 - whatever Ray says, the run is recorded
            lines = str(e).strip().splitlines()
            reason = f"Ray gave up on its task: {type(e).__name__}: {lines[0] if lines else ''}"
            held = store.run(run.key)
            if held.status == "running" and store.fail(run.key, held.worker or "", reason):
                session.result.failed_here += 1
                printer.say(f"  FAILED {run.label} (seed {run.seed}): {reason}")


# --------------------------------------------------------------------------------------
# In the task
# --------------------------------------------------------------------------------------


def run_task(protocol: Protocol, study_dir: str, db_spec: str, key: str,
             options: WorkOptions, threads: int) -> str:
    """The body of one run's Ray task: claim the run, train (or resume) and record it as
    any worker does. Returns its status afterwards, or 'elsewhere' when another worker
    holds it."""
    import torch

    ray = import_ray()
    torch.set_num_threads(threads)
    store = open_store(db_spec)
    try:
        worker = task_worker_name(ray.get_runtime_context().get_task_id())
        run = claim_for_task(store, key, worker, options)
        if run is None:
            return "elsewhere"
        data = _DATA.setdefault(options.root, DataCache(options.root))
        where = Path(study_dir)
        session = Session(where, db_spec, store, options, {protocol.hash: protocol}, [key],
                          [run], Printer(options.verbose), StudyResult(where, db_spec, protocol),
                          data, worker=worker)
        train_one(session, run, protocol)
        return store.run(key).status
    finally:
        store.close()


def task_worker_name(task_id: str) -> str:
    """host:pid:ray-<task id>: the pid tells a dead attempt on this host, as for any
    worker; the task id, the same in every attempt, tells a retry whose run it is."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}{task_id}"


def claim_for_task(store: Store, key: str, worker: str, options: WorkOptions) -> Run | None:
    """Claim the task's run as any worker claims one (pending; or running with a stale
    lease, or a dead worker on this host). Ray starts a task again only when its previous
    attempt's worker or machine died, so a run that attempt held is taken over at once,
    wherever it ran, rather than after the lease. None: done, or another live worker's."""
    run = store.claim([key], worker, options.lease_s, options.retry_failed)
    if run is None:
        held = store.run(key)
        if held.status == "running" and _same_task(held.worker, worker):
            # A lease of 0 s: the heartbeat the dead attempt left is stale.
            run = store.claim([key], worker, 0.0, options.retry_failed)
    return run


def _same_task(a: str | None, b: str) -> bool:
    token = b.rsplit(":", 1)[-1]
    return bool(a) and token.startswith(_TOKEN) and a.rsplit(":", 1)[-1] == token


__all__ = ["MISSING", "RETRIES", "check_resources", "claim_for_task", "import_ray",
           "run_task", "task_worker_name", "train_on_ray", "warn_unshared"]
