"""Where archlab keeps files on this machine: its cache, and the folder downloads go to."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """archlab's cache: $XDG_CACHE_HOME/archlab or ~/.cache/archlab."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "archlab"


def data_dir() -> Path:
    """Where downloads go: $ARCHLAB_DATA, else the cache."""
    env = os.environ.get("ARCHLAB_DATA")
    return Path(env) if env else cache_dir() / "data"
