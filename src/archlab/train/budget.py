"""A wall-time budget: `budget_minutes` in the recipe trains for that long rather than for a
count of epochs, with the learning-rate schedule laid over the minutes.

Why: a run sized in epochs overruns its time when the machine slows down and leaves time
unused when it speeds up, and a one-cycle or cosine schedule reaches its low learning rate,
where most of the accuracy is won, only at its last step. On the 2-core CPU of
benchmarks/time_to_accuracy.py, a 10-minute Fashion-MNIST run sized at 22 epochs by a
calibration ran 671 s, and one sized at 14 used 490 s of its 600. Here the schedule's clock
is the wall clock: the run's place in its schedule is the share of the budget spent, so
the learning rate ends its schedule when the time ends, however fast the steps go.

What the clock counts: the wall time from the trainer's creation (choosing the speed
settings counts: the user waits for it), then the steps, the data pipeline, each epoch's
validation and checkpoint. The schedule starts at the first step and ends early by the
time of the latest validation and checkpoint, so that the last epoch's row is written inside
the budget. The final test evaluation is not counted. A resumed run goes on from the time
the killed one had spent (the time between the two is not counted). A callback can leave
its own work out of the clock (`with trainer.off_the_clock(): ...`), as the time-to-accuracy
benchmark does with its test evaluations.

The recipe's `epochs` still gives the schedule its shape (a warm-up or milestones in epochs
are those fractions of `epochs`); the run ends at the step where the budget ends, mid-epoch
if so, and that shorter epoch gets its row. A run with a budget is not repeatable step for
step: how far it gets depends on the machine's speed.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator


class TimeBudget:
    """The clock of a run with `minutes` of wall time; `fraction()` is the share of the
    schedule's span spent, from 0 at the first step to 1 when the run must stop."""

    clock = staticmethod(time.perf_counter)   # seconds; the tests give it a fake one

    def __init__(self, minutes: float, spent: float = 0.0, start: float | None = None,
                 reserve: float = 0.0, origin: float | None = None) -> None:
        self.seconds = minutes * 60.0
        self.spent_before = spent          # seconds spent before this process (a resume)
        self.origin = self.clock() if origin is None else origin
        self.start = start                 # the clock's reading at the first step
        self.reserve = reserve             # the latest validation and checkpoint's time
        self.excluded = 0.0                # seconds left out by off_the_clock

    def elapsed(self) -> float:
        """Seconds counted so far."""
        return self.spent_before + self.clock() - self.origin - self.excluded

    def begin(self) -> None:
        """The first step is about to run: the schedule starts now (kept on a resume)."""
        if self.start is None:
            self.start = self.elapsed()

    def fraction(self) -> float:
        start = self.start if self.start is not None else self.elapsed()
        span = self.seconds - self.reserve - start
        if span <= 0:
            return 1.0
        return min(1.0, max(0.0, (self.elapsed() - start) / span))

    def spent(self) -> bool:
        return self.fraction() >= 1.0

    @contextmanager
    def paused(self) -> Iterator[None]:
        t0 = self.clock()
        try:
            yield
        finally:
            self.excluded += self.clock() - t0

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed run goes on with the time it had."""
        return {"minutes": self.seconds / 60.0, "spent": self.elapsed(), "start": self.start,
                "reserve": self.reserve}

    @classmethod
    def resumed(cls, state: dict[str, Any], minutes: float,
                origin: float | None = None) -> "TimeBudget":
        return cls(minutes, state["spent"], state["start"], state["reserve"], origin)

    def describe(self) -> str:
        return (f"{self.seconds / 60:g} min of wall time, {self.elapsed():.0f} s spent "
                f"({self.fraction():.0%} of the schedule)")
