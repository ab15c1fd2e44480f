"""A progress bar with rate and ETA (tqdm draws it).

On a terminal tqdm redraws it in place, at most five times a second; into a file or a pipe,
where carriage returns would pile up, a plain line is written every `log_every` seconds (in
tqdm's format), so that a log stays readable. Disabled, it only counts.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

REDRAW = 0.2          # seconds between two redraws on a terminal


class ProgressBar:
    def __init__(self, total: int, desc: str = "", unit: str = "img", enabled: bool = True,
                 file=None, log_every: float = 30.0, start: int = 0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.enabled, self.log_every = enabled, log_every
        self.tty = enabled and hasattr(self.file, "isatty") and self.file.isatty()
        self.start = time.perf_counter()
        self.last_draw = self.start
        self.count = start      # steps
        self.items = 0          # images
        self.postfix = ""
        self._bar = (tqdm(total=total, desc=desc, initial=start, unit="step", file=self.file,
                          mininterval=REDRAW, leave=False, dynamic_ncols=True)
                     if self.tty else None)

    def update(self, steps: int = 1, items: int = 0, postfix=None) -> None:
        """Count `steps` and `items`; `postfix` is a string, or a callable called only when
        the bar is redrawn (so that reading a GPU loss does not synchronise every step)."""
        self.count += steps
        self.items += items
        if not self.enabled:
            return
        now = time.perf_counter()
        due = now - self.last_draw >= (REDRAW if self.tty else self.log_every)
        if due or self.count >= self.total:
            self.last_draw = now
            if postfix is not None:
                self.postfix = postfix() if callable(postfix) else postfix
            if self._bar is None:
                self.file.write(self.line(now) + "\n")
                self.file.flush()
            else:
                self._bar.set_postfix_str(self._postfix(now), refresh=False)
        if self._bar is not None:
            self._bar.update(steps)

    def _postfix(self, now: float) -> str:
        elapsed = now - self.start
        rate = self.items / elapsed if elapsed > 0 else 0.0
        return f"{rate:,.0f} {self.unit}/s {self.postfix}".rstrip()

    def line(self, now: float | None = None) -> str:
        """The bar as one plain line: count, elapsed<remaining, rates, postfix."""
        now = now or time.perf_counter()
        return tqdm.format_meter(self.count, self.total, now - self.start, ascii=True,
                                 ncols=100, prefix=self.desc, unit="step",
                                 postfix=self._postfix(now))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
