"""`archlab explain`: pictures of what a network has learnt, and an index.html of them."""
from __future__ import annotations

import sys
from pathlib import Path

from archlab.classical import is_classical
from archlab.cli.options import add_command, add_options
from archlab.explain import ExplainError, explain, explain_keypoints, parse_channels


def add_commands(sub) -> None:
    _parser_explain(sub)


def _parser_explain(sub) -> None:
    p = add_command(sub, "explain", cmd_explain)
    p.add_argument("model", help="run directory or .safetensors left by `archlab train` or "
                                 "`archlab convert`, a registered model name, or sift-bovw "
                                 "(the SIFT keypoints of the images, no trained run)")
    p.add_argument("images", nargs="*",
                   help="image files, folders, or scikit-image photos such as skimage:coffee "
                        "(default: a few images of the dataset)")
    p.add_argument("--method", action="append", default=[],
                   help="comma-separated: filters, patches, deconv, saliency, "
                        "guided-backprop, smoothgrad, integrated_gradients, gradcam, "
                        "occlusion, attention, rollout, attention-distance, pos-embedding, "
                        "class-model, errors, or all (default: all that apply but deconv "
                        "and class-model; a named one that does not apply is skipped "
                        "with a note); keypoints for sift-bovw")
    p.add_argument("--out", help="output folder (default: explain/<model>)")
    p.add_argument("--data", help="dataset for patches, errors and example images "
                                  "(default: the one a checkpoint was trained on)")
    add_options(p, "--split")
    p.add_argument("--limit", type=int, default=2000,
                   help="images searched for max-activating patches (default 2000)")
    p.add_argument("--layers", nargs="+",
                   help="layers for patches and deconv (default: the stages)")
    p.add_argument("--channels", help="channels for patches and deconv: N (the first N), a "
                                      "list 0,5,9, or LAYER:IDX,... (layer2:3,layer3:0)")
    add_options(p, "--top-k", top_k=dict(default=9, help="patches per channel"))
    p.add_argument("--target", help="class (name or index) to explain (default: predicted)")
    p.add_argument("--layer", help="Grad-CAM's layer (default: the last convolutional stage)")
    p.add_argument("--classes", help="classes for class-model images, indices or names "
                                     "0,3,Sneaker (default: --target, else the first 4)")
    p.add_argument("--ascent", help="class-model gradient ascent, KEY=VALUE,...: steps (200), "
                                    "lr (0.1), l2 (0.01), jitter (2 px), blur_every (4), "
                                    "blur_sigma (0.5 px), init_std (0.1), seed (0)")
    p.add_argument("--num-images", type=int, default=4,
                   help="dataset images to explain when none are given")
    p.add_argument("--pretrained", help="weights for a model name")
    add_options(p, "--num-classes", "--in-chans", "--small-input", "--img-size", "--device",
                num_classes=dict(default=None, help="for a model name (default 1000)"),
                in_chans=dict(default=None, help="for a model name (default 3)"),
                img_size=dict(help="side images are resized to"),
                device=dict(default="cpu"))


def cmd_explain(args) -> int:
    """what a network looks at: filters, top patches, saliency, Grad-CAM, attention, errors

    Write pictures of what a model has learnt, and an index.html gathering them: first-layer
    filters, max-activating dataset patches and their deconvnet projections, attribution
    maps of images (saliency, guided backprop, smoothgrad, integrated_gradients, gradcam,
    occlusion; attention and rollout for ViT/DeiT), ViT's position-embedding similarity
    and mean attention distance, class-model images, and the error analysis (confusion,
    most-confused pairs, top losses). A checkpoint brings its dataset; a model name has
    random weights unless --pretrained is given. `archlab explain sift-bovw IMAGE...` draws
    the SIFT keypoints that the classical baseline's difference-of-Gaussians detector finds,
    with their scales and orientations (--data DATASET: a few of its images; --img-size N:
    resized to N px)."""
    if is_classical(args.model) and not Path(args.model).exists():
        return _explain_keypoints(args)
    channels = parse_channels(args.channels)
    classes = [c for c in (args.classes or "").split(",") if c.strip()] or None
    stem = Path(args.model.rstrip("/")).name if Path(args.model).exists() else args.model
    out = Path(args.out) if args.out else Path("explain") / stem
    result = explain(
        args.model, args.images, methods=",".join(args.method) or None, out_dir=out,
        data=args.data, split=args.split, layers=args.layers, channels=channels,
        top_k=args.top_k, limit=args.limit, num_images=args.num_images, target=args.target,
        cam_layer=args.layer, classes=classes, ascent=args.ascent,
        log=lambda msg: print(f"  {msg}", file=sys.stderr),
        pretrained=args.pretrained, num_classes=args.num_classes, in_chans=args.in_chans,
        small_input=args.small_input, img_size=args.img_size, device=args.device)
    for picture in result.pictures:
        print(out / picture.file)
    if result.errors is not None:
        e = result.errors
        print(f"accuracy {e.accuracy:.2%} on {e.count:,} images of {e.data}; most confused: "
              + ", ".join(f"{a} -> {p} ({n})" for a, p, n in e.most_confused(3)))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(result.html)
    return 0


def _explain_keypoints(args) -> int:
    methods = {m.strip() for m in ",".join(args.method).split(",") if m.strip()}
    bad = methods - {"keypoints", "all"}
    if bad:
        raise ExplainError(f"{args.model} is not a network: {', '.join(sorted(bad))} does "
                           "not apply; it has one picture, --method keypoints")
    out = Path(args.out) if args.out else Path("explain") / args.model
    result = explain_keypoints(args.images, out_dir=out, data=args.data, split=args.split,
                               num_images=args.num_images, img_size=args.img_size,
                               log=lambda msg: print(f"  {msg}", file=sys.stderr))
    for picture in result.pictures:
        print(out / picture.file)
    print(", ".join(f"{k.name}: {k.count} keypoints" for k in result.images))
    print(result.html)
    return 0
