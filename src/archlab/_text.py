"""How numbers and tables are written for a person: sizes, times, percentages, aligned
tables. One place, so that the terminal, the CSV-adjacent report and the CLI agree."""
from __future__ import annotations

from typing import Any, Iterable, Sequence


def human(n: float | int | None, unit: str = "") -> str:
    """1234567 -> '1.23M'; below a thousand the number as it is ('512', '0.5')."""
    if n is None:
        return "-"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}" if float(n).is_integer() or abs(n) >= 10 else f"{n:.3g}{unit}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.0f} MiB"


def fmt_time(seconds: float | None) -> str:
    """Seconds as M:SS, or H:MM:SS from an hour on."""
    if seconds is None:
        return "-"
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


def pct(v: float | None, digits: int = 2) -> str:
    """0.8821 -> '88.21' (the unit goes in the column's header)."""
    return "-" if v is None else f"{100 * v:.{digits}f}"


def format_table(rows: Iterable[Sequence[Any]], headers: Sequence[str],
                 align: str | None = None) -> str:
    """A plain aligned table; `align` has one 'l' or 'r' per column (default: the first
    left, the rest right). None prints as '-'."""
    rows = [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *map(fmt, rows)])
