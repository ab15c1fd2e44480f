"""Watching a run while it trains: a heartbeat that keeps its lease in the study, the
per-epoch records, and the per-run time budget."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from archlab.study.store import Store


class LeaseLost(RuntimeError):
    """Another worker took this run over (our heartbeat was too old)."""


class Heartbeat(threading.Thread):
    """Refreshes the run's lease every `interval` seconds on its own connection; sets
    `lost` when the run is no longer this worker's."""

    def __init__(self, store: Store, key: str, worker: str, interval: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{key[:8]}")
        self.store, self.key, self.worker, self.interval = store, key, worker, interval
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            store = self.store.clone()
        except Exception:  # noqa: BLE001 - the main connection still records epochs
            return
        try:
            while not self._halt.wait(self.interval):
                try:
                    ok = store.heartbeat(self.key, self.worker)
                except Exception:  # noqa: BLE001 - a passing database hiccup
                    continue
                if not ok:
                    self.lost.set()
                    return
        finally:
            store.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


class RunWatch:
    """Trainer callback: records each epoch in the study, stops the run when its lease was
    lost or when one more epoch would overrun the protocol's per-run time budget."""

    def __init__(self, store: Store, key: str, worker: str, heartbeat: Heartbeat,
                 budget_s: float | None) -> None:
        self.store, self.key, self.worker = store, key, worker
        self.heartbeat, self.budget_s = heartbeat, budget_s
        self.lost = False
        self.over_budget = False
        self.history: list[dict[str, Any]] = []

    def on_step_end(self, trainer) -> None:
        if self.heartbeat.lost.is_set() and not self.lost:
            self.lost = True
            trainer.request_stop()

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        self.history = list(trainer.history)
        if not self.store.record_history(self.key, self.worker, self.history):
            self.lost = True
            trainer.request_stop()
            return
        if self.budget_s and trainer.epoch < trainer.recipe.epochs:
            per_epoch = trainer.train_time / max(trainer.epoch, 1)
            if trainer.train_time + per_epoch > self.budget_s:
                self.over_budget = True
                trainer.request_stop()


def budget_spent(run_dir: Path, budget_s: float | None) -> bool:
    """A run stopped by the budget whose result was never recorded: no more training."""
    if not budget_s:
        return False
    try:
        state = json.loads((run_dir / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return False
    epochs = state.get("epoch") or 0
    if not epochs or state.get("batch_in_epoch"):
        return False
    t = state.get("train_time") or 0.0
    return t + t / epochs > budget_s and epochs < state["recipe"]["epochs"]


__all__ = ["Heartbeat", "LeaseLost", "RunWatch", "budget_spent"]
