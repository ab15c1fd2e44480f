"""1x1 and patchify convolutions as matrix products against oneDNN's convolutions.

On a CPU, archlab's channels_last setting computes every plain 1x1 convolution, and every
patchify one (kernel equal to stride: a ViT's patch embedding, ConvNeXt's stem and
downsampling), as a matrix product over the channels (analysis/cpu_layers.py,
`MatmulConv2d`).
This script times the same network, prepared in the same settings (channels_last, the
precision given, batch norm folded for inference), with those layers as matrix products
and as the convolutions they are, interleaved in one process (A, B, A, B, ...), and prints
each ratio with its 95% interval over the paired rounds: the figures behind the choice,
reproducible on another machine. Rows go to benchmarks/results/conv_matmul.json.

    python benchmarks/conv_matmul.py                       # the default models, bf16
    python benchmarks/conv_matmul.py --precision fp32 --only resnet50,efficientnet_b0
"""
from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import archlab
from archlab.analysis.cpu_layers import MatmulConv2d, convolutions_as_matmul
from archlab.analysis.speed import Settings, cpu_name, infer_step, train_step
from archlab.analysis.timing import interleaved, ratio_interval

# (model, image side): the families whose networks have 1x1 or patchify convolutions.
MODELS = [("resnet50", 64), ("resnext50_32x4d", 64), ("seresnet50", 64), ("xception", 64),
          ("mobilenet_v1_100", 64), ("mobilenet_v2_100", 64), ("efficientnet_b0", 64),
          ("efficientnet_v2_s", 64), ("googlenet", 64), ("inception_v3_noaux", 96),
          ("vit_small_patch16_224", 64), ("deit_small_patch16_224", 64),
          ("convnext_tiny", 64)]


def as_convolutions(model: nn.Module) -> nn.Module:
    """Undo the swap: every such layer computes as nn.Conv2d again (in place)."""
    for m in model.modules():
        if type(m) is MatmulConv2d:
            m.__class__ = nn.Conv2d
    return model


def step(model: nn.Module, settings: Settings, mode: str, batch: int, size: int,
         matmul: bool) -> Callable[[], None]:
    """One training or inference step of `model` in `settings` on a fixed random batch,
    those layers as matrix products or (not `matmul`) as convolutions."""
    g = torch.Generator().manual_seed(0)
    x = settings.layout(torch.randn(batch, 3, size, size, generator=g))
    if mode == "infer":
        run = settings.prepare(model.eval(), "infer", x)
        run = run if matmul else as_convolutions(run)
        return lambda: infer_step(run, settings, x)
    y = torch.randint(0, 1000, (batch,), generator=g)
    run = settings.prepare(model.train(), "train")
    run = run if matmul else as_convolutions(run)
    optimizer = torch.optim.SGD(run.parameters(), lr=1e-4, momentum=0.9)
    return lambda: train_step(run, optimizer, settings, x, y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="models, comma-separated (default: all of MODELS)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--modes", default="train,infer")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-s", type=float, default=1.0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "conv_matmul.json"))
    args = p.parse_args()
    sizes = dict(MODELS)
    names = args.only.split(",") if args.only else [m for m, _ in MODELS]
    settings_for = {"train": Settings(args.precision, channels_last=True),
                    "infer": Settings(args.precision, channels_last=True, fuse_bn=True)}
    print(f"{cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for name in names:
        size = sizes.get(name, 64)
        torch.manual_seed(0)
        model = archlab.create_model(name)
        layers = sum(isinstance(m, MatmulConv2d)
                     for m in convolutions_as_matmul(copy.deepcopy(model)).modules())
        for mode in args.modes.split(","):
            s = settings_for[mode]
            steps = [step(copy.deepcopy(model), s, mode, args.batch, size, matmul)
                     for matmul in (True, False)]
            fast, conv = interleaved(steps, torch.device("cpu"), rounds=args.rounds,
                                     round_s=args.round_s)
            ratio, low, high = ratio_interval(fast, conv)
            row = {"model": name, "img_size": size, "batch": args.batch, "mode": mode,
                   "settings": s.label(), "matmul_layers": layers,
                   "matmul_step_ms": fast.median_s * 1e3, "conv_step_ms": conv.median_s * 1e3,
                   "speedup": ratio, "speedup_low": low, "speedup_high": high}
            rows.append(row)
            print(f"{name:20s} {mode:5s} {s.label():28s} matmul {row['matmul_step_ms']:7.1f} ms"
                  f"  conv {row['conv_step_ms']:7.1f} ms  {ratio:.2f}x [{low:.2f}, {high:.2f}]",
                  flush=True)
    print("\n| model | mode | layers | as convolutions | as matrix products | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mode']} | {r['matmul_layers']} | "
              f"{r['conv_step_ms']:.1f} ms | {r['matmul_step_ms']:.1f} ms | "
              f"{r['speedup']:.2f}x [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}] |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(),
                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "precision": args.precision, "rows": rows}, indent=1))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()
