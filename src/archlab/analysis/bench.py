"""`archlab bench`: images per second of archlab's models, and of the peer's same network,
timed interleaved in one process.

For each model and mode (train, infer) the contestants are archlab's network in the chosen
settings and, with a peer, the peer's network, either in the same settings or in its
defaults (fp32, contiguous, eager: what a user of timm or torchvision gets without asking).
They are timed in turn, A, B, A, B, ... (timing.interleaved), and the ratio of their step
times comes with a 95% interval over the paired rounds.

A row has timm's benchmark.py column names where they exist (infer_samples_per_sec,
infer_step_time in ms, infer_batch_size, infer_img_size, infer_gmacs, param_count in
millions, and the train_ ones), so that a results file joins timm's published tables, and
says what ran it: library, settings, device, its name, torch's version.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from archlab._io import write_atomic
from archlab.analysis.profile import costs_of
from archlab.analysis.speed import MODES, Settings, choose, device_name, make_step, peak_flops
from archlab.analysis.timing import interleaved, ratio_interval, step_memory
from archlab.models.peers import OURS_KWARGS, build_peer, peer_of
from archlab.models.registry import create_model, model_card

PEER_SETTINGS = ("same", "default", "both")


@dataclass
class Contestant:
    """One network in one set of settings: what a row of the results describes."""

    library: str                  # archlab, timm, torchvision, efficientnet-pytorch
    name: str                     # the library's name for it
    model: nn.Module
    settings: Settings
    choice: str = ""              # how the settings were chosen, when they were
    # Training: SGD with torch's fused kernel, as archlab's trainer steps (and a peer in
    # archlab's settings), or torch's default, as a peer's user gets it.
    fused_optimizer: bool = True


def _img_size(name: str, img_size: int | None, small_input: bool) -> int:
    card = model_card(name)
    if img_size:
        return img_size
    return card.small_input_size if small_input else card.input_size[-1]


def archlab_model(name: str, img_size: int, small_input: bool = False) -> nn.Module:
    """archlab's network `name` for `img_size` px (a ViT is built for that grid)."""
    kwargs = dict(OURS_KWARGS.get(name, {}))
    if small_input:
        kwargs["small_input"] = True
    if model_card(name).family in ("vit", "deit"):
        kwargs["img_size"] = img_size
    return create_model(name, **kwargs)


def peer_model(name: str, source: str, img_size: int) -> tuple[str, nn.Module]:
    """The peer's network for archlab's `name` at `img_size` px (a ViT for that grid)."""
    peer_name = peer_of(name, source)
    kwargs: dict[str, Any] = {}
    if model_card(name).family in ("vit", "deit"):
        kwargs = {"img_size": img_size} if source == "timm" else {"image_size": img_size}
    return peer_name, build_peer(source, peer_name, **kwargs)


def bench_model(name: str, *, vs: str | None = None, peer_settings: str = "same",
                modes: Sequence[str] = MODES, batch: int = 32, img_size: int | None = None,
                small_input: bool = False, precision: str = "auto",
                channels_last: bool | None = None, fuse_bn: bool | None = None,
                compile: bool = False, device: torch.device = torch.device("cpu"),
                rounds: int = 5, round_s: float = 0.5, peaks: dict[str, float] | None = None,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows for archlab's `name` (and the peer's, with `vs`) in each mode, timed
    interleaved: the peer in archlab's settings ('same'), in its defaults ('default') or
    both. `peaks` ({precision: FLOP/s}) gives the achieved share of the machine."""
    if peer_settings not in PEER_SETTINGS:
        raise ValueError(f"peer settings are {' or '.join(PEER_SETTINGS)}, got {peer_settings!r}")
    size = _img_size(name, img_size, small_input)
    ours = archlab_model(name, size, small_input)
    params, macs = costs_of(copy.deepcopy(ours), (ours.in_chans, size, size))
    peer = peer_model(name, vs, size) if vs else None
    rows = []
    for mode in modes:
        # The settings asked for, those left open chosen by measurement.
        choice = choose(ours, batch, size, device, mode, precision, channels_last, fuse_bn,
                        compile)
        settings, how = choice.settings, choice.describe()
        contestants = [Contestant("archlab", name, ours, settings, how)]
        if peer is not None:
            kinds = {"same": [settings], "default": [Settings()],
                     "both": [Settings(), settings]}[peer_settings]
            for s in dict.fromkeys(kinds):      # once when archlab's are the defaults
                default = peer_settings != "same" and s == Settings()
                contestants.append(Contestant(vs, peer[0], peer[1], s,
                                              fused_optimizer=not default))
        log(f"{name} {mode} {size} px batch {batch}: {how}")
        steps = [make_step(copy.deepcopy(c.model), c.settings, mode, batch, size, device,
                           ours.in_chans, ours.num_classes,
                           fused_optimizer=c.fused_optimizer) for c in contestants]
        memory = [step_memory(step, device) for step in steps]
        timings = interleaved(steps, device, rounds=rounds, round_s=round_s)
        base = timings[0]
        for c, timing, mem in zip(contestants, timings, memory):
            row = _row(c, mode, batch, size, params, macs, timing, mem, device, peaks)
            if c is not contestants[0]:
                ratio, low, high = ratio_interval(base, timing)
                row.update(archlab_speedup=ratio, archlab_speedup_low=low,
                           archlab_speedup_high=high)
            rows.append(row)
        for row in rows[-len(contestants):]:
            log("  " + describe_row(row))
        del steps
    return rows


def _row(c: Contestant, mode: str, batch: int, size: int, params: int, macs: int, timing,
         mem: int | None, device: torch.device, peaks: dict[str, float] | None
         ) -> dict[str, Any]:
    step_s = timing.median_s
    # A training step is a forward and a backward pass of twice its cost.
    flops = 2 * macs * batch * (3 if mode == "train" else 1)
    peak = (peaks or {}).get(c.settings.precision)
    return {
        "model": c.name, "library": c.library, "mode": mode,
        f"{mode}_samples_per_sec": round(batch / step_s, 2),
        f"{mode}_step_time": round(step_s * 1e3, 3),
        f"{mode}_step_time_iqr": round(timing.spread_s * 1e3, 3),
        f"{mode}_batch_size": batch, f"{mode}_img_size": size,
        f"{mode}_gmacs": round(macs / 1e9, 4),
        f"{mode}_step_mem_mb": None if mem is None else round(mem / 2**20, 1),
        f"{mode}_warmup_s": round(timing.warmup_s, 2),
        "param_count": round(params / 1e6, 3),
        "tflops": round(flops / step_s / 1e12, 4),
        "peak_fraction": None if not peak else round(flops / step_s / peak, 4),
        "settings": c.settings.label(), **c.settings.as_dict(), "choice": c.choice,
        "optimizer": ("sgd fused" if c.fused_optimizer else "sgd") if mode == "train" else None,
        "device": device.type, "device_name": device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "rounds": len(timing.step_s),
    }


def describe_row(row: dict[str, Any]) -> str:
    mode = row["mode"]
    settings = row["settings"] + ("+fused_sgd" if row.get("optimizer") == "sgd fused" else "")
    text = (f"{row['library']:>12} {settings:<28} {row[f'{mode}_samples_per_sec']:9,.1f}"
            f" img/s  {row[f'{mode}_step_time']:8.1f} ms ± {row[f'{mode}_step_time_iqr']:.1f}")
    if row.get("peak_fraction") is not None:
        text += f"  {row['peak_fraction']:.1%} of peak"
    if row.get(f"{mode}_step_mem_mb") is not None:
        text += f"  {row[f'{mode}_step_mem_mb']:,.0f} MiB"
    if "archlab_speedup" in row:
        text += (f"  archlab {row['archlab_speedup']:.2f}x "
                 f"[{row['archlab_speedup_low']:.2f}, {row['archlab_speedup_high']:.2f}]")
    return text


def machine_peaks(device: torch.device, precisions: Sequence[str] = ("fp32", "bf16"),
                  log: Callable[[str], None] = print) -> dict[str, float]:
    """The peak FLOP/s of a large matrix product per precision, measured now."""
    peaks = {p: peak_flops(device, p) for p in precisions}
    log(f"{device_name(device)}, {torch.get_num_threads()} threads: peak "
        + ", ".join(f"{p} {v / 1e12:.2f} TFLOP/s" for p, v in peaks.items()))
    return peaks


def append_results(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Add `rows` to a results file: JSON lines (.json, .jsonl) or CSV, whose columns grow
    to the union of the old and new rows'."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        old: list[dict[str, Any]] = []
        if path.exists():
            with open(path, newline="") as f:
                old = list(csv.DictReader(f))
        columns = list(dict.fromkeys(k for r in [*old, *rows] for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, restval="")
        writer.writeheader()
        writer.writerows([*old, *rows])
        write_atomic(path, out.getvalue())
    else:
        old_text = path.read_text() if path.exists() else ""
        write_atomic(path, old_text + "".join(json.dumps(r) + "\n" for r in rows))
    return path
