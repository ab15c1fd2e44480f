"""Atomic writes: a reader sees the old file or the new one, never half of one.

Used by every layer that writes what a long job must not lose (checkpoints, weights, metrics,
study files, reports), so it sits at the bottom of the house and imports nothing of archlab.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(tmp) on a temporary file beside `path`, fsync it and rename it over
    `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to `path` through a temporary file, fsync and rename."""
    return write_atomically(path, lambda tmp: Path(tmp).write_text(text))
