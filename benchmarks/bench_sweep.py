"""Every family that timm or torchvision has, archlab against its peer, train and inference.

For each family's representative: archlab in the settings `archlab bench` chooses by
measurement (precision auto, layout measured, batch norm folded for inference), the peer's
same network in its defaults (fp32, contiguous, eager: what its users get without asking),
and the peer in archlab's settings, all timed interleaved in one process. CPU-sized input:
batch 32 at 64 px (96 px for Inception v3, whose stem needs 75; without the auxiliary
head, as timm builds it: the head's 5x5 convolution needs the 17x17 map of 299 px). The rows go to
benchmarks/results/bench_sweep.csv, a model at a time, and the Markdown table of the whole
file (the README's) is printed.

    python benchmarks/bench_sweep.py                    # all, ~40 min on 2 Xeon cores
    python benchmarks/bench_sweep.py --only resnet50,efficientnet_b0   # add or redo these
    python benchmarks/bench_sweep.py --table            # the table of what was measured
    python benchmarks/bench_sweep.py --device cuda --img-size 224 --batch 128 \
        --precision bf16 --channels-last --compile --out gpu.csv    # a GPU's sweep

`--img-size` sets every model's side (Inception v3 keeps at least 96 px); the settings
flags fix what `archlab bench` would otherwise choose by measurement.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch

from archlab.analysis.bench import append_results, bench_model, machine_peaks
from archlab.analysis.speed import precisions_for

# (archlab name, peer library, image side): one per family and variant the peers have.
SWEEP = [
    ("alexnet", "torchvision", 64),
    ("vgg16_bn", "torchvision", 64),
    ("googlenet", "torchvision", 64),
    ("inception_v3_noaux", "timm", 96),
    ("resnet50", "torchvision", 64),
    ("resnetv2_50", "timm", 64),
    ("resnet50d", "timm", 64),
    ("seresnet50", "timm", 64),
    ("resnext50_32x4d", "torchvision", 64),
    ("seresnext50_32x4d", "timm", 64),
    ("xception", "timm", 64),
    ("mobilenet_v1_100", "timm", 64),
    ("mobilenet_v2_100", "torchvision", 64),
    ("efficientnet_b0", "timm", 64),
    ("efficientnet_lite0", "timm", 64),
    ("efficientnet_v2_s", "torchvision", 64),
    ("vit_small_patch16_224", "timm", 64),
    ("deit_small_patch16_224", "timm", 64),
    ("convnext_tiny", "timm", 64),
]


def table(rows: list[dict]) -> str:
    """One line per model and mode: archlab's img/s and settings, the ratios with their
    95% intervals against the peer's defaults and against the peer in archlab's settings."""
    lines = ["| model (peer) | mode | archlab img/s | archlab settings | vs peer defaults |"
             " vs peer, same settings |", "|---|---|---|---|---|---|"]
    i = 0
    while i < len(rows):
        ours = rows[i]
        group = [ours]
        i += 1
        while i < len(rows) and rows[i]["library"] != "archlab":
            group.append(rows[i])
            i += 1
        mode = ours["mode"]

        def cell(settings_are_defaults: bool) -> str:
            for r in group[1:]:
                if (r["settings"] == "fp32") == settings_are_defaults:
                    return (f"{r['archlab_speedup']:.2f}x [{r['archlab_speedup_low']:.2f}, "
                            f"{r['archlab_speedup_high']:.2f}]")
            return "(same as defaults)"

        peer = group[1]["library"] if len(group) > 1 else "-"
        lines.append(f"| {ours['model']} ({peer}) | {mode} | "
                     f"{ours[f'{mode}_samples_per_sec']:,.0f} | {ours['settings']} | "
                     f"{cell(True)} | {cell(False)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated archlab names")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float, default=0.4)
    p.add_argument("--out", default="benchmarks/results/bench_sweep.csv")
    p.add_argument("--device", default="cpu")
    p.add_argument("--img-size", type=int, help="every model's side instead of the sweep's")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="channels_last for every network (default: measured)")
    p.add_argument("--compile", action="store_true", help="torch.compile archlab's network "
                                                          "and the peer's in archlab's settings")
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--table", action="store_true", help="print the table of --out and stop")
    args = p.parse_args()
    out = Path(args.out)
    if args.table:
        print(table(read_rows(out)))
        return
    device = torch.device(args.device)
    chosen = [s for s in SWEEP if not args.only or s[0] in args.only.split(",")]
    if out.exists():
        # A whole sweep replaces the last one; --only replaces those models' rows.
        keep = [r for r in read_rows(out) if args.only and r["model_key"] not in
                args.only.split(",")]
        out.unlink()
        if keep:
            append_results(keep, out)
    load_before = os.getloadavg()[0]
    peaks = machine_peaks(device, precisions_for(device))
    rows, t0 = [], time.perf_counter()
    for name, peer, size in chosen:
        if args.img_size:
            size = max(args.img_size, size if name.startswith("inception") else 0)
        try:
            new = bench_model(name, vs=peer, peer_settings="both", batch=args.batch,
                              modes=args.modes.split(","), img_size=size, device=device,
                              precision=args.precision, channels_last=args.channels_last,
                              compile=args.compile, rounds=args.rounds,
                              round_s=args.round_seconds, peaks=peaks)
        except Exception as e:          # one model's failure must not lose the others
            print(f"{name}: {type(e).__name__}: {e}", flush=True)
            continue
        for r in new:
            r["model_key"] = name       # archlab's name, also on the peer's rows
        append_results(new, out)        # a sweep cut short keeps what it measured
        rows += new
    print(f"\n{len(chosen)} models in {(time.perf_counter() - t0) / 60:.0f} min; load average "
          f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; rows in {out}\n")
    print(table(read_rows(out)))


def read_rows(path: Path) -> list[dict]:
    """The rows of a results CSV, numbers as numbers."""
    def value(v: str):
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(f)]


if __name__ == "__main__":
    main()
