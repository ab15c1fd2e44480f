"""The study database's tables, and the Run row read from them; the result columns are
those of `RunMeasures`, so a measure added there is stored, read and reported."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from archlab.study.measures import MEASURES, RunMeasures

SCHEMA_VERSION = 1

# The columns of a run before its measurements: identity, state, lease, history.
_RUN_COLUMNS = """
        key TEXT PRIMARY KEY,
        protocol_hash TEXT NOT NULL,
        position INTEGER NOT NULL,
        label TEXT NOT NULL,
        model TEXT NOT NULL,
        seed INTEGER NOT NULL,
        entry TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        worker TEXT,
        heartbeat DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0,
        created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION,
        finished DOUBLE PRECISION,
        run_dir TEXT,
        archlab_version TEXT,
        history TEXT,"""

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS protocols (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        body TEXT NOT NULL,
        yaml TEXT,
        created DOUBLE PRECISION NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS runs (" + _RUN_COLUMNS + "".join(
        f"\n        {f.name} {f.metadata['sql']}," for f in MEASURES)
    + "\n        result TEXT,\n        error TEXT)",
    "CREATE INDEX IF NOT EXISTS runs_by_protocol ON runs (protocol_hash, status, position)",
]


@dataclass(kw_only=True)
class Run(RunMeasures):
    """A row of the runs table, JSON columns decoded: what a run is, where it stands, and
    (inherited) what it measured."""

    key: str
    protocol_hash: str
    position: int
    label: str
    model: str
    seed: int
    entry: dict[str, Any]
    status: str
    worker: str | None = None
    heartbeat: float | None = None
    attempts: int = 0
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    run_dir: str | None = None
    archlab_version: str | None = None
    history: list[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Run":
        row = dict(row)
        for k in ("entry", "history", "result"):
            if isinstance(row.get(k), str):
                row[k] = json.loads(row[k])
        return cls(**row)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


__all__ = ["Run", "SCHEMA", "SCHEMA_VERSION"]
