"""What goes wrong with data: the errors that name the file and the fix, and `Issues`, the
problems that are counted and reported instead of stopping a run."""
from __future__ import annotations

import os
from collections import defaultdict


class DataError(ValueError):
    """Data that cannot be used as given; the message names the file and the fix."""


class ImageFileError(DataError):
    """One image file that cannot be decoded."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class Issues:
    """Problems found while reading data, grouped by kind ('skipped', 'converted', ...)."""

    SHOW = 5  # files named per kind in a summary

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, message: str) -> None:
        self.items[kind].append(message)

    def extend(self, other: "Issues") -> None:
        for kind, messages in other.items.items():
            self.items[kind].extend(messages)

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(v) for v in self.items.values())
        return len(self.items.get(kind, ()))

    def __bool__(self) -> bool:
        return any(self.items.values())

    def summary(self) -> list[str]:
        lines = []
        for kind, messages in self.items.items():
            lines.append(f"{len(messages)} {kind}:")
            lines += [f"  {m}" for m in messages[:self.SHOW]]
            if len(messages) > self.SHOW:
                lines.append(f"  ... and {len(messages) - self.SHOW} more")
        return lines

    def as_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.items.items()}
