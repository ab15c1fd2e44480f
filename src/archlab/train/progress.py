"""A one-line progress bar with rate and ETA, redrawn at most five times a second.

On a terminal it redraws in place; into a file or a pipe it writes a plain line every
`log_every` seconds, so that a log stays readable.
"""
from __future__ import annotations

import sys
import time

from archlab._text import fmt_time


class ProgressBar:
    def __init__(self, total: int, desc: str = "", unit: str = "img", enabled: bool = True,
                 file=None, width: int = 24, log_every: float = 30.0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file or sys.stderr
        self.enabled, self.width, self.log_every = enabled, width, log_every
        self.tty = enabled and hasattr(self.file, "isatty") and self.file.isatty()
        self.start = time.perf_counter()
        # A terminal shows the bar at once; a log gets its first line after log_every.
        self.last_draw = 0.0 if self.tty else self.start
        self.count = 0          # steps
        self.items = 0          # images
        self.postfix = ""

    def update(self, steps: int = 1, items: int = 0, postfix=None) -> None:
        """Count `steps` and `items`; `postfix` is a string, or a callable called only when
        the bar is redrawn (so that reading a GPU loss does not synchronise every step)."""
        self.count += steps
        self.items += items
        if not self.enabled:
            return
        now = time.perf_counter()
        interval = 0.2 if self.tty else self.log_every
        if now - self.last_draw >= interval or self.count >= self.total:
            if postfix is not None:
                self.postfix = postfix() if callable(postfix) else postfix
            self.last_draw = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.start
        frac = self.count / self.total if self.total else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        rate = self.items / elapsed if elapsed > 0 else 0.0
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        return (f"{self.desc} [{bar}] {self.count}/{self.total} {rate:,.0f} {self.unit}/s "
                f"{fmt_time(elapsed)}<{fmt_time(eta)} {self.postfix}").rstrip()

    def _draw(self, now: float) -> None:
        text = self.line(now)
        if self.tty:
            self.file.write("\r\033[K" + text)
        else:
            self.file.write(text + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.file.write("\r\033[K")
            self.file.flush()
