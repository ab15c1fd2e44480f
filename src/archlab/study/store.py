"""The study database: every run of a study, its state and what it measured.

SQLite by default (one file, `study.db`, beside the study's outputs), or a PostgreSQL URL
(`postgresql://user@host/db`) when workers on several machines share one study. The same
few SQL statements run on both.

A run row moves pending -> running -> done (or failed). Workers *claim* runs atomically:
SQLite takes the database's write lock for the claim (`BEGIN IMMEDIATE`, in WAL mode so
readers never wait), PostgreSQL locks the candidate rows with `FOR UPDATE SKIP LOCKED`, so
two workers never take the same run. A running run carries its worker's name
(host:pid:token) and a heartbeat; when the heartbeat is older than the lease, or the worker
was on this host and its process is gone, another worker may claim it again and resumes it
from its checkpoint. A worker that finds its run taken from it (its heartbeat no longer
matches) stops; the first worker to finish a run records it, so no result is lost and none
is recorded twice.
"""
from __future__ import annotations

import abc
import json
import os
import secrets
import socket
import time
from typing import Any, Iterable, Sequence

from archlab._version import __version__
from archlab.study.measures import RESULT_COLUMNS
from archlab.study.schema import SCHEMA, SCHEMA_VERSION, Run

DEFAULT_LEASE_S = 120.0


class StoreError(RuntimeError):
    """The study database cannot be used as asked."""


def worker_name() -> str:
    """host:pid:token; the token tells this process from a later one with the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def local_worker_dead(worker: str | None) -> bool:
    """True when `worker` ran on this host and its process no longer exists."""
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is as dead as it gets
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Store(abc.ABC):
    """The study database. `open_store(path_or_url)` picks SQLite or PostgreSQL; the
    subclasses give the connection and how a write transaction takes its lock."""

    placeholder = "?"
    url: str

    # -- the dialect-specific part --------------------------------------------------------
    @abc.abstractmethod
    def _connect(self): ...

    @abc.abstractmethod
    def _begin_write(self, cur) -> None: ...

    def _lock_clause(self) -> str:
        return ""

    # -- plumbing -------------------------------------------------------------------------
    def __init__(self) -> None:
        self.conn = self._connect()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection is not an error
            pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def clone(self) -> "Store":
        """A second connection to the same database (for a heartbeat thread)."""
        return type(self)(self.url)

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _rows(self, cur) -> list[dict[str, Any]]:
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the rows it changed."""
        cur = self.conn.cursor()
        try:
            self._begin_write(cur)
            cur.execute(self._sql(sql), tuple(params))
            n = cur.rowcount
            self._commit(cur)
            return n
        except BaseException:
            self._rollback(cur)
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            rows = self._rows(cur)
            self._end_read(cur)
            return rows
        except BaseException:
            self._rollback(cur)
            raise

    def _commit(self, cur) -> None:
        cur.execute("COMMIT")

    def _rollback(self, cur) -> None:
        try:
            cur.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction open
            pass

    def _end_read(self, cur) -> None:
        pass

    def init_schema(self) -> None:
        cur = self.conn.cursor()
        try:
            self._begin_write(cur)
            self._schema_lock(cur)
            for stmt in SCHEMA:
                cur.execute(stmt)
            cur.execute(self._sql("SELECT value FROM meta WHERE key = 'schema'"))
            row = cur.fetchone()
            if row is None:
                cur.execute(self._sql("INSERT INTO meta (key, value) VALUES ('schema', ?)"),
                            (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.url}: a study database of schema {row[0]}, this "
                                 f"archlab writes schema {SCHEMA_VERSION}; use another study")
            self._commit(cur)
        except BaseException:
            self._rollback(cur)
            raise

    def _schema_lock(self, cur) -> None:
        pass

    # -- protocols ------------------------------------------------------------------------
    def add_protocol(self, protocol) -> None:
        self.execute(
            # The same hash from a later command (other models or seeds): its form is kept.
            "INSERT INTO protocols (hash, name, body, yaml, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (hash) DO UPDATE SET name = excluded.name, body = excluded.body, "
            "yaml = excluded.yaml",
            (protocol.hash, protocol.name, json.dumps(protocol.as_dict(), default=str),
             protocol.to_yaml(), time.time()))

    def protocols(self) -> list[dict[str, Any]]:
        """Every protocol of the study with its run counts, the most recently active first."""
        rows = self.query(
            "SELECT p.hash, p.name, p.body, p.yaml, p.created, COUNT(r.key) AS runs, "
            "MAX(COALESCE(r.finished, r.started, r.created)) AS active "
            "FROM protocols p LEFT JOIN runs r ON r.protocol_hash = p.hash "
            "GROUP BY p.hash, p.name, p.body, p.yaml, p.created")
        for r in rows:
            r["body"] = json.loads(r["body"])
        rows.sort(key=lambda r: -(r["active"] or r["created"]))
        return rows

    # -- runs -----------------------------------------------------------------------------
    def add_runs(self, runs: Iterable) -> int:
        """Insert the RunSpecs not yet in the study; returns how many were new."""
        runs = list(runs)
        cur = self.conn.cursor()
        now = time.time()
        try:
            self._begin_write(cur)
            new = 0
            for r in runs:
                cur.execute(self._sql(
                    "INSERT INTO runs (key, protocol_hash, position, label, model, seed, entry, "
                    "status, created, archlab_version) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', "
                    "?, ?) ON CONFLICT (key) DO NOTHING"),
                    (r.key, r.protocol_hash, r.position, r.label, r.entry.name, r.seed,
                     json.dumps(r.entry.as_dict()), now, __version__))
                new += max(cur.rowcount, 0)
            self._commit(cur)
            return new
        except BaseException:
            self._rollback(cur)
            raise

    def runs(self, protocol_hash: str | None = None, keys: Iterable[str] | None = None
             ) -> list[Run]:
        sql, params = "SELECT * FROM runs", []
        where = []
        if protocol_hash:
            where.append("protocol_hash = ?")
            params.append(protocol_hash)
        keys = list(keys) if keys is not None else None
        if keys is not None:
            if not keys:
                return []
            where.append(f"key IN ({', '.join('?' * len(keys))})")
            params += keys
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY position, seed"
        return [Run.from_row(r) for r in self.query(sql, params)]

    def run(self, key: str) -> Run:
        rows = self.runs(keys=[key])
        if not rows:
            raise StoreError(f"no run {key} in {self.url}")
        return rows[0]

    def claim(self, keys: Sequence[str], worker: str, lease_s: float = DEFAULT_LEASE_S,
              retry_failed: bool = False) -> Run | None:
        """Atomically take the first run among `keys` that nobody is doing: pending (or
        failed, with retry_failed), or running with a stale heartbeat or a dead local
        worker. Returns the claimed run, or None when none is left."""
        if not keys:
            return None
        statuses = ("pending", "running", "failed") if retry_failed else ("pending", "running")
        now = time.time()
        cur = self.conn.cursor()
        try:
            self._begin_write(cur)
            cur.execute(self._sql(
                f"SELECT key, status, worker, heartbeat FROM runs WHERE key IN "
                f"({', '.join('?' * len(keys))}) AND status IN "
                f"({', '.join('?' * len(statuses))}) ORDER BY position, seed"
                + self._lock_clause()), (*keys, *statuses))
            chosen = None
            for row in self._rows(cur):
                if row["status"] != "running":
                    chosen = row
                    break
                stale = row["heartbeat"] is None or now - row["heartbeat"] > lease_s
                if stale or local_worker_dead(row["worker"]):
                    chosen = row
                    break
            if chosen is None:
                self._commit(cur)
                return None
            cur.execute(self._sql(
                "UPDATE runs SET status = 'running', worker = ?, heartbeat = ?, "
                "started = COALESCE(started, ?), attempts = attempts + 1, error = NULL "
                "WHERE key = ? AND status = ? AND COALESCE(worker, '') = ?"),
                (worker, now, now, chosen["key"], chosen["status"], chosen["worker"] or ""))
            taken = cur.rowcount == 1
            self._commit(cur)
        except BaseException:
            self._rollback(cur)
            raise
        if not taken:  # lost a race the lock should have prevented: try again
            return self.claim(keys, worker, lease_s, retry_failed)
        run = self.run(chosen["key"])
        run.note = (f"taken over from {chosen['worker']}" if chosen["status"] == "running"
                    else run.note)
        return run

    def heartbeat(self, key: str, worker: str) -> bool:
        """Refresh the lease; False when the run is no longer this worker's."""
        return self.execute("UPDATE runs SET heartbeat = ? WHERE key = ? AND worker = ? "
                            "AND status = 'running'", (time.time(), key, worker)) == 1

    def set_run_dir(self, key: str, worker: str, run_dir: str) -> bool:
        return self.execute("UPDATE runs SET run_dir = ? WHERE key = ? AND worker = ?",
                            (run_dir, key, worker)) == 1

    def record_history(self, key: str, worker: str, history: list[dict[str, Any]]) -> bool:
        """The per-epoch metrics so far (also a heartbeat)."""
        return self.execute(
            "UPDATE runs SET history = ?, epochs_done = ?, heartbeat = ? WHERE key = ? AND "
            "worker = ? AND status = 'running'",
            (json.dumps(history, default=json_default), len(history), time.time(), key,
             worker)) == 1

    def finish(self, key: str, worker: str, values: dict[str, Any],
               history: list[dict[str, Any]] | None, result: dict[str, Any]) -> bool:
        """Record a finished run. The first worker to finish wins: a run another worker
        took over is still recorded if it is not done yet."""
        cols = [c for c in RESULT_COLUMNS if c in values]
        sets = ", ".join(f"{c} = ?" for c in cols)
        return self.execute(
            f"UPDATE runs SET status = 'done', worker = ?, finished = ?, history = ?, "
            f"result = ?{', ' + sets if sets else ''} WHERE key = ? AND status IN "
            "('running', 'pending')",
            (worker, time.time(), json.dumps(history or [], default=json_default),
             json.dumps(result, default=json_default), *(values[c] for c in cols), key)) == 1

    def fail(self, key: str, worker: str, error: str) -> bool:
        return self.execute(
            "UPDATE runs SET status = 'failed', finished = ?, error = ? WHERE key = ? AND "
            "worker = ? AND status = 'running'", (time.time(), error, key, worker)) == 1

    def release(self, key: str, worker: str) -> bool:
        """Give a run back (interrupted): pending again, resumable by anyone."""
        return self.execute(
            "UPDATE runs SET status = 'pending', worker = NULL, heartbeat = NULL WHERE key = ? "
            "AND worker = ? AND status = 'running'", (key, worker)) == 1

    def reset(self, keys: Sequence[str]) -> int:
        """Forget the results of runs (they will be done again)."""
        if not keys:
            return 0
        return self.execute(
            f"UPDATE runs SET status = 'pending', worker = NULL, heartbeat = NULL, "
            f"finished = NULL, error = NULL, history = NULL, result = NULL, epochs_done = NULL "
            f"WHERE key IN ({', '.join('?' * len(keys))})", tuple(keys))

    def counts(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = self.query(f"SELECT status, COUNT(*) AS n FROM runs WHERE key IN "
                          f"({', '.join('?' * len(keys))}) GROUP BY status", tuple(keys))
        return {r["status"]: int(r["n"]) for r in rows}


def json_default(v: Any) -> Any:
    """JSON for numpy and torch scalars and arrays (and anything else as its str)."""
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return str(v)
