"""What a run measures: one dataclass, from which everything that lists the measures is
derived (the database's result columns, the Run row's attributes, results.csv and
summary.csv, the results table of the terminal and of report.html).

Each field carries, in its metadata, its SQL type and, when the results table shows it,
how the seeds of one model are summarised ('first', 'mean', 'mean_sd' or 'max'), the
column's header, its summary.csv name and how its cell is written ('count', 'number',
'time', 'percent' or 'bytes'). The table's columns follow the fields' order.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


def _measure(sql: str, summary: str | None = None, header: str | None = None,
             csv_name: str | None = None, shown_as: str | None = None) -> Any:
    return dataclasses.field(default=None, metadata={
        "sql": sql, "summary": summary, "header": header, "csv": csv_name,
        "shown_as": shown_as})


@dataclass
class RunMeasures:
    """The final measurements of one run (`Store.finish` records them)."""

    params: int | None = _measure("BIGINT", "first", "params", "params", "count")
    macs: int | None = _measure("BIGINT", "first", "MACs", "macs", "count")
    epochs_done: int | None = _measure("INTEGER", "mean", "epochs", "epochs", "number")
    train_time: float | None = _measure("DOUBLE PRECISION", "mean", "train time",
                                        "train_time_mean", "time")
    wall_time: float | None = _measure("DOUBLE PRECISION")
    top1: float | None = _measure("DOUBLE PRECISION", "mean_sd", "top-1 %", "top1", "percent")
    top5: float | None = _measure("DOUBLE PRECISION", "mean", "top-5 %", "top5_mean", "percent")
    top1_tta: float | None = _measure("DOUBLE PRECISION", "mean_sd", "TTA top-1 %",
                                      "top1_tta", "percent")
    top5_tta: float | None = _measure("DOUBLE PRECISION")
    val_top1: float | None = _measure("DOUBLE PRECISION")
    test_loss: float | None = _measure("DOUBLE PRECISION")
    throughput: float | None = _measure("DOUBLE PRECISION", "mean", "img/s", "throughput_mean",
                                        "count")
    peak_mem: int | None = _measure("BIGINT", "max", "peak mem", "peak_mem_max", "bytes")
    device: str | None = _measure("TEXT")
    note: str | None = _measure("TEXT")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MEASURES: tuple[dataclasses.Field, ...] = dataclasses.fields(RunMeasures)
# Per-run columns holding the final measurements (`Store.finish` fills them).
RESULT_COLUMNS: tuple[str, ...] = tuple(f.name for f in MEASURES)
# The measures the results table shows, one column each, in the dataclass's order.
TABLE_MEASURES: tuple[dataclasses.Field, ...] = tuple(
    f for f in MEASURES if f.metadata["summary"])


def summary_csv_names(f: dataclasses.Field) -> list[str]:
    """The summary.csv columns of one measure: its mean (or first, or max), and its
    standard deviation over seeds where the table shows one."""
    name = f.metadata["csv"]
    if f.metadata["summary"] == "mean_sd":
        return [f"{name}_mean", f"{name}_std"]
    return [name]


__all__ = ["MEASURES", "RESULT_COLUMNS", "RunMeasures", "TABLE_MEASURES", "summary_csv_names"]
