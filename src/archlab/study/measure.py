"""Two measurements taken the same way for every run: its peak memory and its inference
throughput at a fixed batch."""
from __future__ import annotations

import sys
import time

import torch

from archlab.analysis.speed import autocast
from archlab.analysis.timing import synchronize


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; on a CPU the process's
    peak resident set (VmHWM), which Linux lets us reset for every run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda-allocated" if device.type == "cuda" else "rss"
        self.per_run = True
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.per_run = False   # the process's peak so far, not this run's

    def read(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)


@torch.no_grad()
def measure_throughput(model: torch.nn.Module, input_shape: tuple[int, ...],
                       device: torch.device, batch_size: int = 256, seconds: float = 2.0,
                       precision: str = "fp32") -> float:
    """Inference images per second at `batch_size` (after one warm-up batch)."""
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)

    try:
        with autocast(device.type, precision):
            model(x)
            synchronize(device)
            n, t0 = 0, time.perf_counter()
            while True:
                model(x)
                n += 1
                synchronize(device)
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds or (n >= 2 and elapsed >= seconds / 4 and n >= 10):
                    break
                if n >= 2 and elapsed * (n + 1) / n > 4 * seconds:
                    break
    finally:
        model.train(was_training)
    return n * batch_size / elapsed


__all__ = ["PeakMemory", "measure_throughput"]
