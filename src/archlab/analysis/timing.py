"""Timing and memory of a step, measured fairly: contestants timed in turn, the ratio of
their speeds with its interval, and the memory a step takes beyond what was there.

Timing follows timm's benchmark.py: warm-up steps first (they include compiling), then
rounds in which every contestant runs its steps in turn (A, B, A, B, ...), so that a change
in the machine's speed (another job, the clock) hits all of them alike.
"""
from __future__ import annotations

import ctypes
import gc
import math
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Timing:
    """One contestant's timing: the warm-up (with compiling) and the step time of each
    round, seconds."""

    warmup_s: float
    step_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)

    @property
    def spread_s(self) -> float:
        """The interquartile range of the rounds' step times."""
        if len(self.step_s) < 2:
            return 0.0
        q = statistics.quantiles(self.step_s, n=4, method="inclusive")
        return q[2] - q[0]


def interleaved(steps: Sequence[Callable[[], None]], device: torch.device, warmup: int = 3,
                rounds: int = 5, round_s: float = 0.5, steps_per_round: int | None = None
                ) -> list[Timing]:
    """Time `steps` (closures of one step each) A, B, A, B, ...: `warmup` steps each first,
    then `rounds` rounds in which each runs `steps_per_round` steps (default: as many as
    fill `round_s` seconds by its warm-up's pace, at least one)."""
    timings, counts = [], []
    for step in steps:
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        synchronize(device)
        warm = time.perf_counter() - t0
        # The last warm-up step alone gives the pace (the first ones compile and allocate).
        t0 = time.perf_counter()
        step()
        synchronize(device)
        pace = time.perf_counter() - t0
        timings.append(Timing(warm + pace))
        counts.append(steps_per_round or max(1, math.ceil(round_s / max(pace, 1e-6))))
    for _ in range(rounds):
        for step, timing, n in zip(steps, timings, counts):
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            synchronize(device)
            timing.step_s.append((time.perf_counter() - t0) / n)
    return timings


def ratio_interval(faster: Timing, slower: Timing, confidence: float = 0.95
                   ) -> tuple[float, float, float]:
    """(ratio, low, high): how many times faster `faster` ran than `slower`: the geometric
    mean of the paired rounds' ratios and its t interval (rounds were interleaved, so each
    pair saw the same machine)."""
    from scipy import stats

    logs = [math.log(s / f) for f, s in zip(faster.step_s, slower.step_s)]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), math.exp(mean), math.exp(mean)
    sd = statistics.stdev(logs)
    half = stats.t.ppf(0.5 + confidence / 2, len(logs) - 1) * sd / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


# -- memory ----------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        m = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def step_memory(step: Callable[[], None], device: torch.device) -> int | None:
    """Bytes a step takes beyond what was allocated before it (activations, gradients,
    workspaces): CUDA's allocator peak, or on Linux the process's resident high-water mark
    after handing freed memory back to the system; None where neither can be read."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu" or _status_kib("VmHWM") is None:
        return None
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark
    except OSError:
        return None
    before = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - before) * 1024
