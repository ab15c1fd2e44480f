"""One architecture of a protocol (with its overrides) and one (architecture, seed) run,
each named by a digest of what makes it train differently."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any


def canonical(value: Any) -> str:
    """The JSON text that hashes the same on every machine (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any, n: int = 16) -> str:
    """The first `n` hex digits of the SHA-256 of `value`'s canonical JSON."""
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:n]


def card_of(name: str):
    """The card (paper, year, family, key idea) of an architecture or classical baseline."""
    from archlab.classical import classical_card, is_classical
    from archlab.models import model_card

    return classical_card(name) if is_classical(name) else model_card(name)


@dataclass
class ModelEntry:
    """One architecture of a protocol, with its overrides."""

    name: str
    label: str
    recipe: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    path: tuple = field(default=(), repr=False, compare=False)   # where it is in the file

    @property
    def classical(self) -> bool:
        from archlab.classical import is_classical

        return is_classical(self.name)

    @property
    def hash(self) -> str:
        """What makes two entries train differently (the label is only a name)."""
        return digest({"name": self.name, "recipe": self.recipe,
                        "model_kwargs": self.model_kwargs}, 12)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "label": self.label}
        if self.recipe:
            out["recipe"] = self.recipe
        if self.model_kwargs:
            out["model_kwargs"] = self.model_kwargs
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RunSpec:
    """One (architecture, seed) pair of a protocol: a row of the study."""

    key: str
    protocol_hash: str
    entry: ModelEntry
    seed: int
    position: int

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def dir_name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.entry.label)
        return f"{safe}-s{self.seed}-{self.key[:8]}"


__all__ = ["ModelEntry", "RunSpec", "canonical", "card_of", "digest"]
