"""Inference weights stored in bf16 once, against autocast casting them for every batch.

Under bf16, archlab's inference stores the weights of every plain convolution and linear
layer in bf16 (analysis/cpu_layers.py, `weights_in`): the same numbers autocast would make
of them at every call, so the same logits. This script times the same network, prepared in
the same settings (bf16, batch norm folded, channels_last unless told otherwise), with its
weights stored in bf16 and left in fp32 for autocast, interleaved in one process, and
prints each ratio with its 95% interval over the paired rounds. Rows go to
benchmarks/results/inference_weights.json.

    python benchmarks/inference_weights.py
    python benchmarks/inference_weights.py --only alexnet,vit_small_patch16_224 --contiguous
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

import archlab
from archlab.analysis.speed import Settings, cpu_name, infer_step
from archlab.analysis.timing import interleaved, ratio_interval

MODELS = ["alexnet", "vgg16_bn", "resnet50", "efficientnet_b0", "vit_small_patch16_224",
          "deit_small_patch16_224", "convnext_tiny"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="models, comma-separated (default: MODELS)")
    p.add_argument("--contiguous", action="store_true", help="not channels_last")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-s", type=float, default=1.0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"
                                        / "inference_weights.json"))
    args = p.parse_args()
    s = Settings("bf16", channels_last=not args.contiguous, fuse_bn=True)
    print(f"{cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {s.label()}, load average "
          f"{os.getloadavg()[0]:.1f}")
    rows = []
    for name in args.only.split(",") if args.only else MODELS:
        torch.manual_seed(0)
        model = archlab.create_model(name).eval()
        x = s.layout(torch.randn(args.batch, 3, args.img_size, args.img_size))
        stored = s.prepare(model, "infer", x[:2])
        autocast_only = s.prepare(model, "infer", x[:2], store_weights=False)
        fast, slow = interleaved([lambda: infer_step(stored, s, x),
                                  lambda: infer_step(autocast_only, s, x)],
                                 torch.device("cpu"), rounds=args.rounds, round_s=args.round_s)
        ratio, low, high = ratio_interval(fast, slow)
        rows.append({"model": name, "img_size": args.img_size, "batch": args.batch,
                     "settings": s.label(), "stored_ms": fast.median_s * 1e3,
                     "autocast_ms": slow.median_s * 1e3, "speedup": ratio,
                     "speedup_low": low, "speedup_high": high})
        print(f"{name:24s} stored in bf16 {fast.median_s * 1e3:7.1f} ms, cast by autocast "
              f"{slow.median_s * 1e3:7.1f} ms: {ratio:.2f}x [{low:.2f}, {high:.2f}]",
              flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(),
                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "rows": rows}, indent=1))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()
