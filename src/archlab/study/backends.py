"""The two databases a study lives in: SQLite (one file beside the study, several
processes on one machine) and PostgreSQL (workers on several machines); `open_store`
picks one from a path or a URL."""
from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from archlab.study.store import Store, StoreError


# --------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------


class SQLiteStore(Store):
    """A study in one SQLite file; safe for several processes on one machine (not over a
    network file system: use PostgreSQL for several machines)."""

    placeholder = "?"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(str(path).removeprefix("sqlite:///").removeprefix("sqlite://"))
        self.url = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__()
        self.init_schema()

    def _connect(self):
        conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 60000")
        # WAL: readers never block the writer and the writer never blocks readers.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def clone(self) -> "SQLiteStore":
        return SQLiteStore(self.path)

    def _begin_write(self, cur) -> None:
        # Takes the write lock now, not at the first write: the claim's SELECT and UPDATE
        # see and change the same state.
        cur.execute("BEGIN IMMEDIATE")


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


class PostgresStore(Store):
    """A study in a PostgreSQL database, shared by workers on several machines."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()
        self.init_schema()

    def _connect(self):
        try:
            import psycopg
        except ImportError:
            raise StoreError("a PostgreSQL study needs psycopg: pip install 'psycopg[binary]'"
                             ) from None
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=20)
        except psycopg.OperationalError as e:
            raise StoreError(f"cannot connect to {redact_url(self.url)}: "
                             f"{str(e).strip().splitlines()[0]}") from None

    def _begin_write(self, cur) -> None:
        cur.execute("BEGIN")

    def _lock_clause(self) -> str:
        # Rows another worker is claiming are skipped, not waited for.
        return " FOR UPDATE SKIP LOCKED"

    def _schema_lock(self, cur) -> None:
        # Two workers creating the tables at once would collide in the catalog.
        cur.execute("SELECT pg_advisory_xact_lock(741852963)")


def redact_url(url: str) -> str:
    """The URL without its password, to print."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def is_url(spec: str) -> bool:
    """A PostgreSQL URL (anything else is an SQLite path)."""
    return str(spec).startswith(("postgresql://", "postgres://"))


def open_store(spec: str | os.PathLike) -> Store:
    """A store from a PostgreSQL URL or an SQLite file path (created if missing)."""
    spec = str(spec)
    if is_url(spec):
        return PostgresStore(spec)
    return SQLiteStore(spec)


__all__ = ["PostgresStore", "SQLiteStore", "is_url", "open_store", "redact_url"]
