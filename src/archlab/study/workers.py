"""Local worker processes: `jobs` runs of one study trained side by side on this machine,
each in a process of its own with its share of the CPU cores, and the watch over them
(which the Ray executor shares: it reads the study database, not the processes).

The workers claim runs from the study database exactly as `archlab compare --worker`
processes do (so no run is trained twice, and a killed one resumes).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from archlab.study.console import eta, run_header, run_line
from archlab.study.protocol import Protocol
from archlab.study.work import Session, WorkOptions, serve

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _local_worker(protocol: Protocol, study_dir: Path, db_spec: str, options: WorkOptions,
                  threads: int, log_path: Path) -> None:
    """The body of one local worker process: its output to its log, its share of the
    cores, then the same claim-and-train loop as `archlab compare --worker`."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)   # OpenCV's and liblinear's own messages too
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
    torch.set_num_threads(threads)
    install_sigterm()
    try:
        serve(protocol, study_dir, db_spec, replace(options, progress=False))
    except KeyboardInterrupt:
        sys.exit(130)


class LocalWorkers:
    """`jobs` worker processes on this machine sharing one study, and the watch over them.

    The workers claim runs from the study database exactly as `archlab compare --worker`
    processes do (so no run is trained twice, and a killed one resumes); this process
    reads the database once a second and prints each run as it starts and ends."""

    def __init__(self, jobs: int, protocol: Protocol, study_dir: Path, db_spec: str,
                 options: WorkOptions) -> None:
        import multiprocessing

        self.threads = max(1, _cores() // jobs)
        log_dir = study_dir / "workers"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"worker-{i + 1}.log" for i in range(jobs)]
        context = multiprocessing.get_context("spawn")   # no forked torch thread pools
        saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
        # The BLAS libraries read their thread count once, when the child imports them.
        os.environ.update({k: str(self.threads) for k in _THREAD_VARIABLES})
        try:
            self.procs = []
            for log in self.logs:
                proc = context.Process(target=_local_worker, daemon=False, args=(
                    protocol, study_dir, db_spec, options, self.threads, log))
                proc.start()
                self.procs.append(proc)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def watch(self, session: Session, budget: float | None, poll_s: float = 1.0) -> int:
        """Print the runs as the workers start and finish them, until every worker has
        exited; returns how many runs were started."""
        jobs = len(self.procs)
        session.printer.say(f"{jobs} workers, {self.threads} CPU thread{'s' * (self.threads > 1)}"
                            f" each; their logs: {self.logs[0].parent}")
        return watch(session, budget, lambda: any(p.is_alive() for p in self.procs), jobs,
                     poll_s)

    def stop(self, grace_s: float = 60.0) -> None:
        """Ask the workers that are still running to give their runs back (SIGTERM: the
        trainer checkpoints and the claim is released), and wait for them."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()


def watch(session: Session, budget: float | None, busy: Callable[[], bool], jobs: int,
          poll_s: float = 1.0) -> int:
    """Print the session's runs as other processes (local workers, Ray tasks) start and
    finish them, reading the study database every `poll_s` seconds, until `busy()` is
    False or the study's time budget is spent; returns how many runs were started."""
    store, keys, todo, printer = session.store, session.keys, session.todo, session.printer
    costs, total_cost, result = session.costs, session.total_cost, session.result
    seen = {r.key: r.status for r in store.runs(keys=keys)}
    todo_keys = {r.key for r in todo}
    announced: set[str] = set()
    done_times: list[tuple[float | None, float]] = []
    while True:
        working = busy()
        if budget and printer.elapsed() > budget:
            break   # the caller's loop after this says so, and stops the work
        runs = store.runs(keys=keys)
        for r in runs:
            before, seen[r.key] = seen.get(r.key), r.status
            if r.status == before or r.key not in todo_keys or r.status == "pending":
                continue
            if r.key not in announced:  # a short run may start and end between two looks
                announced.add(r.key)
                left = [q for q in runs if q.key in todo_keys
                        and q.status in ("pending", "running")]
                printer.say(run_header(len(announced), len(todo), r, printer.elapsed(),
                                       eta(done_times, costs, left, total_cost, jobs)))
            if r.status == "done":
                result.done_here += 1
                if r.wall_time:
                    done_times.append((costs.get(r.label), r.wall_time))
                printer.say(run_line(r, r, note=False))
            elif r.status == "failed":
                result.failed_here += 1
                printer.say(f"  FAILED {r.label} (seed {r.seed}): {r.error}")
        if not working:
            break
        time.sleep(poll_s)
    return len(announced)


def install_sigterm() -> Any:
    """SIGTERM as Ctrl-C outside the trainer (which handles both itself), so that a worker
    stopped by its scheduler gives its run back."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


__all__ = ["LocalWorkers", "install_sigterm", "watch"]
