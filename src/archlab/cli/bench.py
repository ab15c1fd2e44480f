"""`archlab bench`: how fast archlab's models train and infer here, against their peers."""
from __future__ import annotations

import argparse
import sys

import torch

import archlab
from archlab.analysis.bench import PEER_SETTINGS, append_results, bench_model, machine_peaks
from archlab.analysis.speed import MODES, has_bf16_units, precisions_for
from archlab.cli.options import add_command, add_options
from archlab.models.peers import SOURCES, peer_of
from archlab.train import resolve_device


def add_commands(sub) -> None:
    p = add_command(sub, "bench", cmd_bench)
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="registered names or shell-style patterns ('resnet*')")
    p.add_argument("--vs", choices=SOURCES,
                   help="time the peer's same network too, interleaved, and print the ratio")
    p.add_argument("--peer-settings", choices=PEER_SETTINGS, default="same",
                   help="the peer in archlab's settings (same), in its own defaults: fp32, "
                        "contiguous, eager (default), or both (default: same)")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    p.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    add_options(p, "--img-size", "--small-input", "--device", "--precision")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="memory layout (default: measured)")
    p.add_argument("--fuse-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="fold batch norm into the convolutions for inference (default: on "
                        "where there is batch norm)")
    p.add_argument("--compile", action="store_true", help="torch.compile both")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved rounds after the warm-up (default 5)")
    p.add_argument("--round-seconds", type=float, default=0.5,
                   help="each contestant's share of a round (default 0.5)")
    p.add_argument("--out", help="append the rows to this CSV or JSON-lines file")


def _names(patterns: list[str]) -> list[str]:
    names: list[str] = []
    for pattern in patterns:
        found = archlab.list_models(pattern) if any(c in pattern for c in "*?[") else [pattern]
        if not found:
            raise ValueError(f"no registered model matches {pattern!r}; `archlab models` "
                             "lists them")
        for name in found:
            archlab.model_card(name)        # an unknown name fails here, with suggestions
            if name not in names:
                names.append(name)
    return names


def cmd_bench(args) -> int:
    """time models training and inferring, against their peers

    Images per second, step time (median and interquartile range over interleaved rounds
    after a warm-up), the memory a step takes, and achieved FLOP/s as a share of the
    machine's peak, measured in the same run with a large matrix product. Settings left
    open (precision auto, no --channels-last flag) are chosen by timing the candidates.
    With --vs the peer's same network is timed interleaved with archlab's (A, B, A, B,
    ...) and the ratio printed with a 95% interval. --out keeps the rows with timm's
    benchmark.py column names."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    names = _names(args.models)
    if args.vs:
        missing = [n for n in names if args.vs not in archlab.model_card(n).peers]
        if missing:
            for n in missing:
                peer_of(n, args.vs)         # raises, naming what the model has instead
    if args.precision == "bf16" and not has_bf16_units(device):
        print(f"note: {device} has no bf16 matrix units; bf16 will be emulated, slowly",
              file=sys.stderr)
    modes = MODES if args.mode == "both" else (args.mode,)
    peaks = machine_peaks(device, precisions_for(device) if args.precision == "auto"
                          else sorted({"fp32", args.precision}))
    rows = []
    for name in names:
        rows += bench_model(name, vs=args.vs, peer_settings=args.peer_settings, modes=modes,
                            batch=args.batch, img_size=args.img_size,
                            small_input=args.small_input, precision=args.precision,
                            channels_last=args.channels_last, fuse_bn=args.fuse_bn,
                            compile=args.compile, device=device, rounds=args.rounds,
                            round_s=args.round_seconds, peaks=peaks)
    if args.out:
        print(f"{len(rows)} rows added to {append_results(rows, args.out)}")
    return 0
