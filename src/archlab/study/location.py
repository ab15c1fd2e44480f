"""Where a study lives: its directory (default `studies/<protocol name>`) and its
database, the SQLite file `study.db` in it or a PostgreSQL server that a `study.json` in
it names (without the password), so that `archlab report DIR` finds either."""
from __future__ import annotations

import json
import os
from pathlib import Path

from archlab._io import write_atomic
from archlab.study.backends import is_url, open_store, redact_url
from archlab.study.store import Store

STUDIES_DIR = Path("studies")
DB_FILE = "study.db"
STUDY_FILE = "study.json"     # where a study kept in PostgreSQL says so


def resolve_study(study: str | os.PathLike | None, db: str | None,
                  protocol_name: str | None) -> tuple[Path, str]:
    """(study directory, database spec). The directory defaults to studies/<protocol>; the
    database to its study.db, or to the PostgreSQL URL a study.json there names."""
    if study is None and db is not None and not is_url(db):
        study = Path(db).parent
    if study is None:
        if protocol_name is None:
            raise ValueError("which study? give --study DIR (or --db URL)")
        study = STUDIES_DIR / protocol_name
    study_dir = Path(study)
    if db is None:
        info = study_dir / STUDY_FILE
        if info.is_file():
            db = json.loads(info.read_text()).get("db")
        db = db or str(study_dir / DB_FILE)
    return study_dir, db


def remember_db(study_dir: Path, db: str) -> None:
    """A PostgreSQL study leaves its URL (without password) in study.json, so that
    `archlab report DIR` finds the database."""
    if not is_url(db):
        return
    write_atomic(study_dir / STUDY_FILE, json.dumps({"db": redact_url(db).replace(":***@", "@")},
                                                    indent=1))


def open_study(study: str | os.PathLike, db: str | None = None) -> tuple[Path, Store]:
    """(directory, store) of an existing study: a directory, a study.db file or a URL."""
    spec = str(study)
    if is_url(spec):
        return Path("."), open_store(spec)
    path = Path(spec)
    if path.is_file():
        return path.parent, open_store(path)
    study_dir, db_spec = resolve_study(path, db, None)
    if not is_url(db_spec) and not Path(db_spec).is_file():
        raise FileNotFoundError(f"{study_dir} holds no study ({DB_FILE} not found); run "
                                "`archlab compare` first, or give the study's --db")
    return study_dir, open_store(db_spec)


__all__ = ["DB_FILE", "STUDIES_DIR", "STUDY_FILE", "open_study", "remember_db",
           "resolve_study"]
