"""How fast a model computes, and the settings that make it faster: the precision (bf16 or
fp16 autocast), the memory layout (channels_last), batch norm folded into its convolution
for inference, and torch.compile. Each setting also carries what makes it pay on a CPU:
under channels_last, 1x1 and patchify convolutions run as matrix products; under bf16,
depthwise layers stay in fp32, and inference stores the other weights in bf16 once rather
than casting them for every batch (the layers swapped in: analysis/cpu_layers.py).

The fastest settings depend on the model and the machine: on 2 Xeon cores with AMX, at 64
px, bf16 autocast and channels_last made GoogLeNet's inference 3x faster and a VGG-16's
training 1.5x, while AlexNet's training got slower in bf16 and a depthwise EfficientNet
slower still (below); a CPU without bf16 units runs bf16 slower than fp32. So `choose`
does not guess: it times the candidates on the model itself, interleaved, and keeps the
fastest. bf16 is a candidate only where the device has the units for it, so a machine
without them never gets slower than fp32.

Timing and memory are measured by analysis/timing.py.
"""
from __future__ import annotations

import contextlib
import copy
import math
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from archlab.analysis.cpu_layers import convolutions_as_matmul, depthwise_in_fp32, weights_in
from archlab.analysis.fold import fold_batchnorm
from archlab.analysis.timing import interleaved, synchronize

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MODES = ("train", "infer")
# A run shorter than this many times the steps measuring its candidates takes keeps the
# device's defaults: the measurement could not pay for itself.
PAYBACK = 20
# Candidates whose first timings lie within this share of the fastest's are timed again.
CLOSE = 0.15
# torch.compile costs tens of seconds to minutes: it is tried only for runs this long.
COMPILE_MIN_RUN_S = 600.0


# -- the machine -----------------------------------------------------------------------
def _cpuinfo(key: str) -> str | None:
    """The first value of `key` in Linux's /proc/cpuinfo, None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform knows)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux), empty where the system does not say."""
    return set((_cpuinfo("flags") or "").split())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name() if device.type == "cpu" else device.type


def has_bf16_units(device: torch.device) -> bool:
    """Whether the device computes bf16 matrix products in hardware: a CUDA GPU from Ampere
    on, or a CPU with AMX-BF16 or AVX512-BF16. (torch emulates bf16 elsewhere, slowly.)"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    return False


def precisions_for(device: torch.device) -> list[str]:
    """The precisions worth trying on `device`: fp32, and bf16 where it has the units."""
    return ["fp32"] + (["bf16"] if has_bf16_units(device) else [])


def can_compile(device: torch.device) -> bool:
    """torch.compile's inductor needs a GPU it supports or, on a CPU, a C++ compiler."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and any(shutil.which(c) for c in ("c++", "g++", "clang++"))


# -- the settings ----------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """How a model is run: precision, memory layout, folded batch norm, compiled."""

    precision: str = "fp32"
    channels_last: bool = False
    fuse_bn: bool = False          # inference only: training needs the norms
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")

    def names(self) -> list[str]:
        """What is on, as a run log names it: ['bf16', 'channels_last', ...]."""
        return ([self.precision] if self.precision != "fp32" else []) + [
            name for name, on in (("channels_last", self.channels_last),
                                  ("fused_bn", self.fuse_bn), ("compiled", self.compile)) if on]

    def label(self) -> str:
        return "+".join(self.names()) or "fp32"

    def as_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "channels_last": self.channels_last,
                "fuse_bn": self.fuse_bn, "compile": self.compile}

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        return autocast(device_type, self.precision)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, model: nn.Module, mode: str, example: torch.Tensor | None = None,
                store_weights: bool = True) -> nn.Module:
        """`model` made ready to run in these settings: laid out channels_last (on a CPU
        with its 1x1 and patchify convolutions computed as matrix products), depthwise
        layers kept in fp32 under autocast on a CPU, batch norms folded (inference; checked
        on `example`), the convolutions' and linear layers' weights stored in the autocast
        precision (inference; `store_weights=False` leaves them for autocast to cast, to
        measure what that costs), compiled. Training changes the caller's module in place
        (the optimizer keeps its parameters); inference works on a copy."""
        if mode == "infer" and (self.channels_last or self.fuse_bn or self.precision != "fp32"):
            model = copy.deepcopy(model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.precision != "fp32" and _device_type(model) == "cpu":
            depthwise_in_fp32(model)
        if self.fuse_bn and mode == "infer":
            if example is None:
                raise ValueError("folding batch norm needs an example batch to trace and check")
            model = fold_batchnorm(model, self.layout(example), inplace=True)
            if self.channels_last:  # the folded weights are new tensors
                model.to(memory_format=torch.channels_last)
        if self.channels_last and _device_type(model) == "cpu":
            convolutions_as_matmul(model)
        if mode == "infer" and self.precision != "fp32" and store_weights:
            weights_in(model, DTYPES[self.precision])
        return torch.compile(model) if self.compile else model


@contextlib.contextmanager
def autocast(device_type: str, precision: str) -> Iterator[None]:
    """Autocast to `precision` (fp32: nothing) on `device_type`.

    On a CPU, attention also takes PyTorch's plain ("math") path: its fused flash kernel's
    bf16 backward took 37% of a ViT-S training step at 64 px (2 Xeon cores, AMX), 11 ms a
    call, where the plain path's batched products run on the matrix units (353 ms a step
    against 523)."""
    if precision == "fp32":
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type, dtype=DTYPES[precision]))
        if device_type == "cpu":
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield


def _device_type(model: nn.Module) -> str:
    p = next(model.parameters(), None)
    return p.device.type if p is not None else "cpu"


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def device_defaults(device: torch.device, precision: str = "auto",
                    channels_last: bool | None = None, compile: bool | None = None,
                    conv: bool = True) -> Settings:
    """The open choices filled without measuring: bf16, and channels_last for a network
    with convolutions (`conv`), on a GPU with bf16 units; fp32 and contiguous elsewhere;
    compiled only when asked."""
    cuda_bf16 = device.type == "cuda" and has_bf16_units(device)
    return Settings("bf16" if precision == "auto" and cuda_bf16 else
                    ("fp32" if precision == "auto" else precision),
                    (cuda_bf16 and conv) if channels_last is None else channels_last,
                    False, bool(compile))


# -- one step --------------------------------------------------------------------------
def fusable(params: Sequence[nn.Parameter]) -> bool:
    """Whether torch's fused optimizer kernels can update `params` (floating point, on a
    CPU or a CUDA GPU). They update every parameter in one pass over its memory, where
    torch's default goes tensor by tensor in several; torch leaves them off by default.
    On 2 Xeon cores AlexNet's whole training step (its SGD step over 61M weights is
    memory-bound) ran 1.09x [1.02, 1.18] faster fused (make_step below)."""
    params = list(params)
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                for p in params)


def _logits(out: Any) -> list[torch.Tensor]:
    """Every logits tensor of a model's output: a tensor, or a tuple with auxiliary heads
    (GoogLeNet, Inception v3, a distilled DeiT)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [o for o in out if isinstance(o, torch.Tensor)]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, settings: Settings,
               x: torch.Tensor, y: torch.Tensor) -> None:
    """One optimisation step as a run takes it: forward under autocast, cross-entropy on
    every head, backward, SGD step (fused, as archlab's trainer steps, or torch's
    default)."""
    with settings.autocast(x.device.type):
        out = model(x)
    loss = sum(F.cross_entropy(o.float(), y) for o in _logits(out))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def infer_step(model: nn.Module, settings: Settings, x: torch.Tensor) -> None:
    with torch.inference_mode(), settings.autocast(x.device.type):
        model(x)


def make_step(model: nn.Module, settings: Settings, mode: str, batch: int, img_size: int,
              device: torch.device, in_chans: int = 3, num_classes: int = 1000,
              seed: int = 0, fused_optimizer: bool = True) -> Callable[[], None]:
    """A closure that runs one step of `mode` on a fixed random batch, `model` prepared for
    `settings` (trained in place: pass a copy to keep the weights). Training steps SGD
    with torch's fused kernel where it has one, as archlab's trainer does
    (train/optim.py), or with torch's default (`fused_optimizer=False`, a peer's)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, img_size, img_size, generator=g).to(device)
    x = settings.layout(x)
    model.to(device)
    if mode == "infer":
        model.eval()
        run = settings.prepare(model, mode, x)
        return lambda: infer_step(run, settings, x)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    model.train()
    run = settings.prepare(model, mode)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = (fused_optimizer and fusable(params)) or None
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9, fused=fused)
    return lambda: train_step(run, optimizer, settings, x, y)


# -- the machine's peak ----------------------------------------------------------------
def peak_flops(device: torch.device, precision: str = "fp32", n: int = 2048,
               repeats: int = 3) -> float:
    """FLOP/s of the best of `repeats` n x n matrix products in `precision`: the peak the
    achieved FLOP/s of a model are read against, measured in the same run."""
    a = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    b = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# -- choosing --------------------------------------------------------------------------
@dataclass
class Choice:
    """The settings chosen for a model and why: each candidate's median step time."""

    settings: Settings
    step_s: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def describe(self) -> str:
        if not self.step_s:
            return f"{self.settings.label()} ({self.reason})"
        times = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in
                          sorted(self.step_s.items(), key=lambda kv: kv[1]))
        return f"{self.settings.label()} (measured per step: {times})"

    def as_dict(self) -> dict[str, Any]:
        return {**self.settings.as_dict(), "step_s": self.step_s, "reason": self.reason}


def candidates(model: nn.Module, device: torch.device, mode: str, precision: str = "auto",
               channels_last: bool | None = None, fuse_bn: bool | None = None
               ) -> list[Settings]:
    """The eager settings worth timing for `model`: every combination of the choices left
    open (None, or precision 'auto'). `choose` tries compiling apart, on the fastest."""
    precisions = precisions_for(device) if precision == "auto" else [precision]
    layouts = ([False, True] if has_conv(model) else [False]) if channels_last is None \
        else [channels_last]
    # Folding is exact (up to rounding) and removes a pass over memory: on whenever there
    # is a batch norm to fold and the mode is inference.
    fuse = (mode == "infer" and has_batchnorm(model)) if fuse_bn is None else fuse_bn
    return [Settings(p, cl, fuse and mode == "infer")
            for p in precisions for cl in layouts]


def choose(model: nn.Module, batch: int, img_size: int, device: torch.device, mode: str,
           precision: str = "auto", channels_last: bool | None = None,
           fuse_bn: bool | None = None, compile: bool | None = False,
           run_steps: int | None = None, in_chans: int = 3, rounds: int = 3,
           run_seconds: float | None = None) -> Choice:
    """The fastest settings for `model` on `device`, timed on copies of it (the model, its
    weights and the random number generators are left as they were).

    Choices given (not None, precision not 'auto') are kept; `compile=True` compiles the
    chosen eager settings. `run_steps`, the steps the run will take, lets a short run skip
    the measurement (it could not pay for itself: the run gets the device's defaults); a
    run of a fixed time gives `run_seconds` instead (its steps: those that fit in it).
    When other candidates come out within CLOSE of the fastest, all of those are timed
    again, together, over twice the rounds, and the second timing decides. torch.compile
    (`compile=None`) is tried last, on the fastest eager settings, for a run of at least
    COMPILE_MIN_RUN_S seconds, and kept if the time it saves over the run repays its
    compiling.
    """
    try_compile = compile is None and can_compile(device) and (
        run_steps is not None or run_seconds is not None)
    options = [replace(s, compile=bool(compile))
               for s in candidates(model, device, mode, precision, channels_last, fuse_bn)]
    if len(options) == 1 and not try_compile:
        return Choice(options[0], reason="nothing left to choose")
    short = replace(device_defaults(device, precision, channels_last, compile,
                                    conv=has_conv(model)), fuse_bn=options[0].fuse_bn)
    # Each candidate takes at least 2 warm-up steps and one per round, and may take
    # 1 + 2 * rounds more when timed again.
    cost = len(options) * (2 + rounds) + (len(options) * (1 + 2 * rounds)
                                          if len(options) > 1 else 0)
    if run_steps is not None and run_steps < PAYBACK * cost:
        return Choice(short, reason=f"a run of {run_steps} steps is too short to pay for "
                                    "measuring")
    num_classes = getattr(model, "num_classes", 1000) or 1000

    def step_for(s: Settings) -> Callable[[], None]:
        return make_step(copy.deepcopy(model), s, mode, batch, img_size, device, in_chans,
                         num_classes)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if len(options) > 1:
            timings = interleaved([step_for(s) for s in options], device, warmup=2,
                                  rounds=rounds, round_s=0.3)
        else:
            timings = interleaved([step_for(options[0])], device, warmup=1, rounds=1,
                                  steps_per_round=1)
        measured = {s.label(): t.median_s for s, t in zip(options, timings)}
        ranked = sorted(zip(options, timings), key=lambda st: st[1].median_s)
        best, timing = ranked[0]
        reason = "fastest measured" if len(options) > 1 else "nothing left to choose"
        close = [s for s, t in ranked if t.median_s < (1 + CLOSE) * timing.median_s]
        if len(close) > 1:
            # Too close to call in a few short rounds: all of them are timed again, longer
            # and together. On 2 Xeon cores, GoogLeNet's fp32 training step came out 9%
            # ahead of bf16 in three rounds, yet ran 1.40x the peer's defaults against
            # bf16's 1.74x; AlexNet's two fp32 steps, timed again alone, took 513 ms against
            # under 396 the first time: timings taken apart differ more than candidates do.
            again = interleaved([step_for(s) for s in close], device, warmup=1,
                                rounds=2 * rounds, round_s=0.3)
            measured.update((s.label(), t.median_s) for s, t in zip(close, again))
            best, timing = min(zip(close, again), key=lambda st: st[1].median_s)
            reason = "fastest measured, the closest timed again"
        if run_steps is None and try_compile:
            run_steps = int(run_seconds / timing.median_s)
        if try_compile and run_steps * timing.median_s >= COMPILE_MIN_RUN_S:
            compiled = replace(best, compile=True)
            eager_t, compiled_t = interleaved([step_for(best), step_for(compiled)], device,
                                              warmup=2, rounds=rounds, round_s=0.3)
            measured[compiled.label()] = compiled_t.median_s
            # The compiled step must beat the eager one as timed both before and beside it:
            # on 2 Xeon cores, beside it only, a compiled step timed at 60 ms was kept
            # against an eager one timed at 40 ms just before (a CPU's speed drifts, and
            # a few short rounds do not average it out).
            eager_s = min(timing.median_s, eager_t.median_s)
            saved = (eager_s - compiled_t.median_s) * run_steps
            if saved > compiled_t.warmup_s:
                best, reason = compiled, f"{reason}; compiling saves {saved:.0f} s"
    if len(measured) == 1 and not best.compile:
        return Choice(best, reason=reason)
    return Choice(best, measured, reason=reason)
