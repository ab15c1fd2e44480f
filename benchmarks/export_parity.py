"""Does an exported model compute what the PyTorch model computes? One network per family,
exported to ONNX with a dynamic batch by `archlab export`'s code, run by onnxruntime on
scikit-image's photographs against PyTorch: the largest |logit difference| per family.

    PYTHONPATH=src python benchmarks/export_parity.py [--families resnet,vit] [--size 32]

The networks are the registered ones in their small-input form (every block, 32 px images,
10 classes) with random weights whose batch norms carry statistics measured on the
photographs (random statistics would let the signal die and hide a wrong layer). Next to
each difference: the logits' scale, and how far PyTorch's own float32 is from float64 on the
same images (rounding alone: an export cannot be expected to do better). The figures go to
the README's "Export" section and to benchmarks/results/export_parity.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch
from torch import nn

import archlab
from archlab.analysis.speed import cpu_name
from archlab.train.export import Logits, check_images, export_model, load_exportable
from archlab.train.exported import OnnxModel

FAMILIES = {
    "lenet": ("lenet5", dict(in_chans=1)),
    "alexnet": ("alexnet", dict(small_input=True)),
    "vgg": ("vgg11_bn", dict(small_input=True)),
    "googlenet": ("googlenet", dict(small_input=True)),
    "inception_v3": ("inception_v3", dict(small_input=True)),
    "resnet": ("resnet50", dict(small_input=True)),
    "xception": ("xception", dict(small_input=True)),
    "mobilenet_v2": ("mobilenet_v2_100", dict(small_input=True)),
    "efficientnet": ("efficientnet_b0", dict(small_input=True)),
    "vit": ("vit_tiny_patch4_32", {}),
    "deit": ("deit_tiny_distilled_patch4_32", {}),
    "convnext": ("convnext_tiny", dict(small_input=True)),
    "bn_inception": ("bn_inception", dict(small_input=True)),
    "inception_v4": ("inception_v4", dict(small_input=True)),
    "inception_resnet_v2": ("inception_resnet_v2", dict(small_input=True)),
    "regnet": ("regnety_004", dict(small_input=True)),
}


@torch.no_grad()
def live_norms(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Batch norms whose running statistics are those of the batch `x`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None      # a cumulative average: after one batch, its statistics
        m.train()
    model(x)
    for m in norms:
        m.eval()
    return model


def measure(family: str, name: str, kwargs: dict, out: Path) -> dict:
    torch.manual_seed(0)
    model = archlab.create_model(name, num_classes=10, **kwargs).eval()
    _, info = load_exportable(model)
    x, described = check_images(info, 6)
    live_norms(model, x)
    start = time.perf_counter()
    result = export_model(model, "onnx", out / f"{family}.onnx", dynamic_batch=True,
                          images=6, tolerance=float("inf"))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        reference = Logits(model)(x)
        exact = Logits(copy.deepcopy(model)).double()(x.double())
    onnx = OnnxModel(result.path)
    single = float((onnx(x[:1]) - reference[:1]).abs().max())
    return {"family": family, "model": name, "input": list(x.shape[1:]),
            "export_s": round(seconds, 1), "max_abs_logit_diff": result.max_abs_diff,
            "batch_1_diff": single, "logit_scale": float(reference.abs().max()),
            "fp32_vs_fp64": float((reference.double() - exact).abs().max()),
            "images": described, "opset": result.opset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help=f"comma-separated, of {', '.join(FAMILIES)}")
    parser.add_argument("--out", default="benchmarks/results/export_parity.json")
    args = parser.parse_args()
    chosen = args.families.split(",") if args.families else list(FAMILIES)
    rows = []
    print(f"{'family':13s} {'model':30s} {'export':>7s} {'max |Δlogit|':>13s} "
          f"{'|logit|':>8s} {'fp32-fp64':>10s}")
    with TemporaryDirectory() as tmp:
        for family in chosen:
            name, kwargs = FAMILIES[family]
            row = measure(family, name, kwargs, Path(tmp))
            rows.append(row)
            flag = "" if row["max_abs_logit_diff"] <= 1e-4 else "  > 1e-4: refused by default"
            print(f"{family:13s} {name:30s} {row['export_s']:6.1f}s "
                  f"{row['max_abs_logit_diff']:13.1e} {row['logit_scale']:8.2f} "
                  f"{row['fp32_vs_fp64']:10.1e}{flag}", flush=True)
    record = {"machine": cpu_name(), "torch": torch.__version__,
              "onnxruntime": __import__("onnxruntime").__version__,
              "threads": torch.get_num_threads(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
