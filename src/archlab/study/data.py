"""The train and test sets of a protocol, loaded once per process for all its runs."""
from __future__ import annotations

from archlab.data import load_splits
from archlab.study.protocol import Protocol


class DataCache:
    """The (train, test) sets of each dataset a process's protocols use, loaded once.

    A dataset with one split only (a plain folder, a CSV) gives a fixed stratified share
    (`holdout`, default 0.2) as the test set of every run, whatever its seed."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root
        self._cache: dict[tuple, tuple] = {}

    def get(self, protocol: Protocol):
        d = protocol.data
        root = d.get("root") or self.root
        key = (d.get("dataset"), root, d.get("image_size"), d.get("in_chans"),
               d.get("test_fraction"), d.get("holdout"), d.get("subsample"))
        if key not in self._cache:
            self._cache[key] = load_splits(
                d.get("dataset"), root=root, image_size=d.get("image_size"),
                in_chans=d.get("in_chans"), holdout=d.get("holdout") or 0.2,
                test_fraction=d.get("test_fraction"), subsample=d.get("subsample"))
        return self._cache[key]


__all__ = ["DataCache"]
