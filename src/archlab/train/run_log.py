"""What a run reports: its summary before the first step, one line per epoch, the metrics
files (metrics.jsonl, metrics.csv, steps.jsonl) and, when asked, TensorBoard scalars (the
MLflow logger is train/mlflow_log.py)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from archlab._io import write_atomic
from archlab._text import fmt_time
from archlab.train.plugin import Plugin


def summary_lines(t) -> list[str]:
    """The first lines of a run's log: model, data, sizes, schedule, device, the stem."""
    r = t.recipe
    lines = [f"training {t.model_name or type(t.model).__name__} on {t.train_data.describe()}",
             f"  {len(t.train_data):,} train / {len(t.val_data) if t.val_data else 0:,} val "
             f"images, {t.image_size} px, batch {r.batch_size}, {length(t)}, "
             f"{r.optimizer} lr {r.peak_lr:g} ({r.schedule}), "
             f"augment {r.augment}, device {t.device}"
             + "".join(f", {name}" for name in t.settings.names()),
             f"  {t.stem}", f"  speed: {t.speed.describe()}"]
    lines += [f"  data: {line}" for line in t.data.issues.summary()]
    if t.dist is not None:
        lines.append(f"  {t.dist.describe()}: each takes {r.batch_size // t.dist.world_size} "
                     f"of every batch of {r.batch_size}"
                     + (", batch norm synchronised" if r.sync_bn else ""))
    return lines


def length(t) -> str:
    """How long the run trains: its epochs, or its time budget (train/budget.py)."""
    r = t.recipe
    if t.budget is not None:
        return (f"{r.budget_minutes:g} minutes ({t.steps_per_epoch} steps an epoch; the "
                f"schedule's {r.epochs} epochs stretched over the minutes)")
    return f"{r.total_epochs} epochs of {t.steps_per_epoch} steps"


def epoch_line(row: dict[str, Any], epochs_label: str) -> str:
    """One epoch's line; `epochs_label` follows its number ('/10', ' (312 of 600 s)')."""
    parts = [f"epoch {row['epoch']}{epochs_label}",
             f"train loss {row['train_loss']:.4f} acc {row['train_top1']:.2%}"]
    if "val_top1" in row:
        parts.append(f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2%}"
                     + (f" top-5 {row['val_top5']:.2%}" if "val_top5" in row else ""))
    parts.append(f"{fmt_time(row['epoch_time'])} ({row['images_per_s']:,.0f} img/s, "
                 f"data {row['data_frac']:.0%})")
    if row.get("skipped"):
        parts.append(f"{row['skipped']} files skipped")
    return "  ".join(parts)


def held_out_line(test) -> str:
    return (f"test: loss {test.loss:.4f}  top-1 {test.top1:.2%}"
            + (f"  top-5 {test.top5:.2%}" if test.top5 is not None else "")
            + f"  ({test.n:,} images)")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def write_steps(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """steps.jsonl: the learning curve per step (train/step_curve.py)."""
    _write_jsonl(run_dir / "steps.jsonl", rows)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    _write_jsonl(run_dir / "metrics.jsonl", history)
    if history:
        keys = list(dict.fromkeys(k for row in history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in keys})
        write_atomic(run_dir / "metrics.csv", buf.getvalue())


class TensorBoard(Plugin):
    """The epoch rows as TensorBoard scalars in <run>/tensorboard, when the recipe asks
    (`log: [tensorboard]` or `tensorboard: true`) and TensorBoard is installed."""

    def __init__(self) -> None:
        self.writer = None

    def on_fit_start(self, trainer) -> None:
        if trainer.run_dir is None:      # an in-memory run, or not the first process
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            trainer.log("note: tensorboard is not installed (pip install tensorboard); "
                        "metrics are in metrics.jsonl and metrics.csv")
            return
        self.writer = SummaryWriter(str(trainer.run_dir / "tensorboard"))

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                self.writer.add_scalar(k, v, row["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer, test, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
