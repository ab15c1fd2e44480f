"""`archlab export`: a trained model as ONNX or a torch.export program, its preprocessing
recorded beside it, checked against PyTorch before it is kept."""
from __future__ import annotations

import json

from archlab.cli.options import add_command, add_options
from archlab.train.export import FORMATS, TOLERANCE, export_model


def add_commands(sub) -> None:
    _parser_export(sub)


def _parser_export(sub) -> None:
    p = add_command(sub, "export", cmd_export)
    p.add_argument("run", help="run directory, a model.safetensors `archlab train` wrote, or a "
                               ".safetensors `archlab convert` wrote")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx",
                   help="onnx (torch.onnx, checked with onnxruntime) or exported-program "
                        "(torch.export, a .pt2 file); default onnx")
    p.add_argument("--out", help="the file to write (default: model.onnx / model.pt2 in the "
                                 "run directory)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="any batch size (default: a batch of one)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: torch.onnx's)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest |logit difference| from PyTorch accepted (default "
                        f"{TOLERANCE:g})")
    p.add_argument("--images", type=int, default=16,
                   help="how many of the run's test images to check on (default 16)")
    add_options(p, "--data-root", "--json")


def cmd_export(args) -> int:
    """export a trained model to ONNX or a torch.export program

    Write the trained model (eval mode: normalised images in, logits out) as ONNX or a
    torch.export ExportedProgram, with its preprocessing (input size, mean/std,
    interpolation, crop, class names) in a JSON sidecar (model.preprocess.json) and, for
    ONNX, in the model's metadata. The file is loaded back and run on the run's test
    images (else scikit-image's photographs) against PyTorch; it is refused when a logit
    differs by more than --tolerance. `archlab predict model.onnx images...` uses it.
    ONNX needs the export extra: pip install 'archlab[export]'."""
    result = export_model(args.run, args.format, args.out, dynamic_batch=args.dynamic_batch,
                          opset=args.opset, tolerance=args.tolerance, images=args.images,
                          root=args.data_root)
    if args.json:
        print(json.dumps({"path": str(result.path), "sidecar": str(result.sidecar),
                          "format": result.format, "opset": result.opset,
                          "dynamic_batch": result.dynamic_batch,
                          "max_abs_logit_diff": result.max_abs_diff,
                          "checked_on": result.checked_on}, indent=1))
        return 0
    batch = "any batch" if result.dynamic_batch else "a batch of 1"
    opset = f", opset {result.opset}" if result.opset else ""
    print(f"{result.path} ({result.format}{opset}, {batch}); preprocessing: {result.sidecar}")
    print(f"checked: {result.describe()}")
    if result.format == "onnx":
        print(f"next: archlab predict {result.path} IMAGES")
    return 0
