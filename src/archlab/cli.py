"""The `archlab` command. Each subcommand parses its arguments, calls the API and prints.

Adding a subcommand: write `cmd_NAME(args) -> int` and `_parser_NAME(sub)`, and list the
parser builder in `PARSERS`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Iterable, Sequence

from archlab._text import format_table, human


# --------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------


def print_table(rows: Iterable[Sequence[Any]], headers: Sequence[str],
                align: str | None = None, file=None) -> None:
    print(format_table(rows, headers, align), file=file or sys.stdout)


def _fmt_field(f) -> str:
    if f is None:
        return "global"
    return f"{f[0]:g}" if f[0] == f[1] else f"{f[0]:g}x{f[1]:g}"


# --------------------------------------------------------------------------------------
# archlab models
# --------------------------------------------------------------------------------------


def _parser_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered architectures with their cost",
                       description="List registered architectures: family, year, parameters "
                                   "and MACs at the default resolution (counted on the meta "
                                   "device, no memory used; the first run counts and caches "
                                   "them in ~/.cache/archlab).")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--family", help="only this family (see --families)")
    p.add_argument("--families", action="store_true", help="list the families and stop")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    import archlab
    from archlab.analysis.profile import model_costs

    if args.families:
        for fam in archlab.list_families():
            print(f"{fam:16s} {len(archlab.list_models(family=fam))} models")
        return 0
    names = archlab.list_models(args.pattern, args.family)
    if not names:
        print(f"no model matches {args.pattern or ''} {args.family or ''}; "
              f"families: {', '.join(archlab.list_families())}", file=sys.stderr)
        return 1
    rows, records = [], []
    for name in names:
        card = archlab.model_card(name)
        params, macs = model_costs(name)
        records.append(dict(name=name, family=card.family, year=card.year,
                            input_size=card.input_size[1], params=params, macs=macs))
        rows.append((name, card.family, card.year, card.input_size[1], f"{params:,}",
                     human(macs)))
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print_table(rows, ("model", "family", "year", "input", "params", "MACs"), "llrrrr")
    return 0


# --------------------------------------------------------------------------------------
# archlab info
# --------------------------------------------------------------------------------------


def _parser_info(sub) -> None:
    p = sub.add_parser("info", help="a model's card, cost and layer table",
                       description="Print a model's card (paper, year, key idea), its "
                                   "parameters, MACs/FLOPs and activation memory at a "
                                   "resolution, the receptive field of its last feature map, "
                                   "and with --layers a per-layer table.")
    p.add_argument("name")
    p.add_argument("--img-size", type=int, help="input side in pixels (default: the card's)")
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--small-input", action="store_true", help="the 28-64 px variant")
    p.add_argument("--batch-size", type=int, default=1, help="for activation memory")
    p.add_argument("--layers", action="store_true", help="print the per-layer table")
    p.add_argument("--depth", type=int, help="table rows at this module depth (default: leaves)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def _architecture_lines(model) -> list[str]:
    """Family-specific facts a model exposes (tokens and heads, compound scaling, ...)."""
    lines = []
    vit = [a for a in ("patch_size", "embed_dim", "depth", "num_heads", "num_prefix_tokens",
                       "num_tokens") if hasattr(model, a)]
    if vit:
        lines.append("transformer: " + ", ".join(f"{a}={getattr(model, a)}" for a in vit))
        if hasattr(model, "grid_size") and hasattr(model, "num_prefix_tokens"):
            gh, gw = model.grid_size
            prefix = ["class", "distillation"][:model.num_prefix_tokens]
            head = ("the mean of the patch tokens" if getattr(model, "global_pool", "") == "avg"
                    else " and ".join(f"the {t} token" for t in prefix))
            lines.append(f"tokens: {model.num_prefix_tokens} prefix "
                         f"({' + '.join(prefix) or 'none'}) + {gh}x{gw} patches, the head "
                         f"reads {head}; MACs include the attention matrices")
    scaling = getattr(model, "scaling", None)
    if scaling:
        lines.append("compound scaling: " + ", ".join(f"{k}={v}" for k, v in scaling.items()))
    stages = getattr(model, "stage_config", None)
    if stages:
        lines.append("stages:")
        keys = list(stages[0])
        width = {k: max(len(k), *(len(str(s[k])) for s in stages)) for k in keys}
        lines.append("  " + "  ".join(k.rjust(width[k]) for k in keys))
        for s in stages:
            lines.append("  " + "  ".join(str(s[k]).rjust(width[k]) for k in keys))
    if model.feature_info:
        lines.append("feature stages: " + ", ".join(
            f"{f['module']} ({f['num_chs']} ch, /{f['reduction']})" for f in model.feature_info))
    return lines


def cmd_info(args) -> int:
    import torch

    import archlab
    from archlab.analysis.profile import profile

    card = archlab.model_card(args.name)
    kw = {"img_size": args.img_size} if args.img_size and "vit" in card.family else {}
    with torch.device("meta"):
        model = archlab.create_model(args.name, num_classes=args.num_classes,
                                     in_chans=args.in_chans, small_input=args.small_input, **kw)
    size = args.img_size or model.card.input_size[1]
    prof = profile(model, size, batch_size=args.batch_size, table_depth=args.depth)
    if args.json:
        print(json.dumps({"card": card.as_dict(), "profile": prof.as_dict()}, indent=1,
                         default=str))
        return 0
    arxiv = f", arXiv {card.arxiv}" if card.arxiv else ""
    print(f"{card.name}  ({card.family})")
    print(f"  {card.paper} ({card.year}{arxiv})")
    print(f"  {card.key_idea}")
    print(f"  input {prof.input_size[0]}x{size}x{size}, mean {card.mean}, std {card.std}")
    print(f"  parameters    {prof.params:,} ({prof.trainable_params:,} trainable)"
          + (f"; reference {card.params:,} ({card.params_source})"
             if card.params and args.num_classes == 1000 and args.in_chans == 3 else ""))
    print(f"  MACs          {human(prof.macs)} ({human(prof.flops)} FLOPs) at {size} px")
    print(f"  activations   {prof.activation_bytes / 2**20:.1f} MiB for a batch of "
          f"{args.batch_size} (float32 outputs of every layer)")
    if prof.feature_stride:
        print(f"  features      {tuple(prof.feature_shape)}, receptive field "
              f"{_fmt_field(prof.receptive_field)} px, stride {_fmt_field(prof.feature_stride)}")
    else:
        print(f"  features      {tuple(prof.feature_shape)}: tokens, each of which attends "
              f"to the whole {size} px image")
    print(f"  smallest input {model.min_input_size} px")
    for line in _architecture_lines(model):
        print(f"  {line}")
    if args.layers:
        print()
        rows = [(r.name, r.type, "x".join(map(str, r.output_shape[1:])), f"{r.params:,}",
                 human(r.macs), _fmt_field(r.receptive_field) if r.receptive_field else "-",
                 _fmt_field(r.stride) if r.stride else "-") for r in prof.layers]
        print_table(rows, ("layer", "type", "output", "params", "MACs", "RF", "stride"),
                    "llrrrrr")
    return 0


# --------------------------------------------------------------------------------------
# archlab calc
# --------------------------------------------------------------------------------------


def _parser_calc(sub) -> None:
    p = sub.add_parser("calc", help="the course's formulas for any numbers",
                       description="Convolution arithmetic: output size, stacked small "
                                   "kernels against one large one, depthwise-separable cost, "
                                   "receptive field of a chain of layers.")
    s = p.add_subparsers(dest="what", required=True)
    c = s.add_parser("conv", help="output size of a convolution or pooling")
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--kernel", type=int, required=True)
    c.add_argument("--stride", type=int, default=1)
    c.add_argument("--padding", type=int, default=0)
    c.add_argument("--dilation", type=int, default=1)
    k = s.add_parser("stack", help="L stacked kxk convs vs one large kernel (VGG's argument)")
    k.add_argument("--kernel", type=int, default=3)
    k.add_argument("--layers", type=int, default=2)
    k.add_argument("--channels", type=int, default=1)
    d = s.add_parser("separable", help="depthwise-separable vs standard convolution cost")
    d.add_argument("--in-chs", type=int, required=True)
    d.add_argument("--out-chs", type=int, required=True)
    d.add_argument("--kernel", type=int, default=3)
    d.add_argument("--size", type=int, default=1, help="feature map side")
    r = s.add_parser("rf", help="receptive field of a chain of layers")
    r.add_argument("layers", nargs="+", metavar="KxS",
                   help="kernel x stride per layer, e.g. 7x2 3x2 3x1 3x1")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calc)


def cmd_calc(args) -> int:
    from archlab.analysis import calc

    if args.what == "conv":
        result = calc.conv_output(args.size, args.kernel, args.stride, args.padding,
                                  args.dilation)
        text = (f"{args.size} px, {args.kernel}x{args.kernel} kernel, stride {args.stride}, "
                f"padding {args.padding}, dilation {args.dilation} -> {result['output']} px\n"
                f"  floor(({args.size} + 2*{args.padding} - {args.dilation}*"
                f"({args.kernel} - 1) - 1) / {args.stride} + 1) = {result['output']}; "
                f"'same' padding at stride 1 would be {result['same_padding']}")
    elif args.what == "stack":
        result = calc.stacked_convs(args.kernel, args.layers, args.channels)
        c2 = "" if args.channels == 1 else f" x {args.channels}^2 channels"
        text = (f"{args.layers} stacked {args.kernel}x{args.kernel} convolutions see "
                f"{result['receptive_field']}x{result['receptive_field']} pixels\n"
                f"  weights: {args.layers}*{args.kernel}^2 = "
                f"{args.layers * args.kernel ** 2}{c2} = {result['stack_weights']:,} "
                f"against {result['receptive_field']}^2 = {result['receptive_field'] ** 2}"
                f"{c2} = {result['single_weights']:,} for one "
                f"{result['receptive_field']}x{result['receptive_field']} kernel "
                f"({result['saving']:.0%} fewer)\n"
                f"  non-linearities: {args.layers} against 1")
    elif args.what == "separable":
        result = calc.separable_cost(args.in_chs, args.out_chs, args.kernel, args.size)
        text = (f"{args.kernel}x{args.kernel} convolution, {args.in_chs} -> {args.out_chs} "
                f"channels on {args.size}x{args.size}\n"
                f"  standard:  {result['standard_macs']:,} MACs, "
                f"{result['standard_weights']:,} weights\n"
                f"  separable: {result['separable_macs']:,} MACs (depthwise "
                f"{result['depthwise_macs']:,} + pointwise {result['pointwise_macs']:,}), "
                f"{result['separable_weights']:,} weights\n"
                f"  ratio {result['ratio']:.4f} = 1/{args.out_chs} + 1/{args.kernel}^2 "
                f"-> {result['speedup']:.1f}x fewer multiply-adds")
    else:
        chain = []
        for spec in args.layers:
            try:
                k_, s_ = (int(v) for v in spec.lower().split("x"))
            except ValueError:
                raise SystemExit(f"archlab calc rf: {spec!r} is not KxS (e.g. 3x2 for a "
                                 "3x3 kernel at stride 2)") from None
            chain.append((k_, s_))
        result = calc.receptive_field(chain)
        text = (f"{len(chain)} layers -> receptive field {result['receptive_field']} px, "
                f"cumulative stride {result['stride']}")
    print(json.dumps(result, indent=1) if args.json else text)
    return 0


# --------------------------------------------------------------------------------------
# archlab convert
# --------------------------------------------------------------------------------------


def _parser_convert(sub) -> None:
    p = sub.add_parser("convert", help="a torchvision/timm/efficientnet-pytorch checkpoint "
                                       "into archlab's safetensors",
                       description="Convert a peer's state dict into an archlab checkpoint "
                                   "(safetensors). The source layout and the architecture are "
                                   "detected when not given.")
    p.add_argument("input", help=".pth/.pt/.bin/.safetensors state dict")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--from", dest="source",
                   help="torchvision, timm, efficientnet-pytorch or archlab (default: detect)")
    p.add_argument("--model", help="archlab model name (default: detect)")
    p.add_argument("--num-classes", type=int, help="default: the checkpoint's")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from archlab.models.convert import convert_file

    out, name, report = convert_file(args.input, args.output, args.model, args.source,
                                     args.num_classes)
    print(f"{args.input} -> {out} ({name}): {report}")
    return 0


# --------------------------------------------------------------------------------------
# archlab train / eval / predict
# --------------------------------------------------------------------------------------

# Recipe fields that get their own flag: (flag, field, type, help).
_RECIPE_FLAGS = [
    ("--epochs", "epochs", int, "passes over the training data"),
    ("--batch-size", "batch_size", int, "images per step"),
    ("--lr", "lr", float, "peak learning rate (default: SGD 0.1, AdamW 1e-3)"),
    ("--optimizer", "optimizer", str, "sgd (Nesterov momentum) or adamw"),
    ("--weight-decay", "weight_decay", float, "not applied to norms and biases"),
    ("--schedule", "schedule", str, "onecycle, cosine, step or constant"),
    ("--augment", "augment", str, "none, basic, alexnet, rrc or randaugment"),
    ("--mixup", "mixup", float, "mixup alpha (0: off)"),
    ("--cutmix", "cutmix", float, "cutmix alpha (0: off)"),
    ("--random-erasing", "random_erasing", float, "probability per image"),
    ("--label-smoothing", "label_smoothing", float, "e.g. 0.1"),
    ("--clip-grad", "clip_grad", float, "max gradient norm"),
    ("--ema", "ema", float, "EMA decay of the weights, e.g. 0.999 (0: off)"),
    ("--image-size", "image_size", int, "side in pixels (default: the data's, or the card's)"),
    ("--val-fraction", "val_fraction", float, "stratified hold-out (default 0.1)"),
    ("--train-fraction", "train_fraction", float, "stratified share of the rest to train on"),
    ("--seed", "seed", int, "the run's seed (split, init, order, augmentation)"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N or mps"),
    ("--workers", "workers", int, "DataLoader workers for image files"),
    ("--threads", "threads", int, "torch CPU threads"),
    ("--pretrained", "pretrained", str, "start from a checkpoint or 'tv:...' / 'timm:...'"),
    ("--init-from", "init_from", str, "a trained shallower run of the family (VGG's staged "
                                      "deepening: its layers initialise this deeper net)"),
    ("--freeze-epochs", "freeze_epochs", int, "--fine-tune: epochs with the body frozen "
                                              "(default 1)"),
    ("--head", "head", str, "--fine-tune: the new head, concat (fastai's) or linear"),
    ("--frozen-bn", "frozen_bn", str, "--fine-tune: norms of the frozen body: train "
                                      "(fastai), stats (BN statistics only) or frozen"),
    ("--teacher", "teacher", str, "distil from a run directory (or model file) archlab "
                                  "trained"),
    ("--distill", "distill", str, "none, soft (KL at --distill-tau) or hard (teacher's "
                                  "argmax; DeiT)"),
    ("--distill-alpha", "distill_alpha", float, "weight of the distillation loss (0.5)"),
    ("--distill-tau", "distill_tau", float, "soft distillation temperature"),
]
_RECIPE_SWITCHES = [("amp", "bf16 autocast"), ("compile", "torch.compile"),
                    ("channels-last", "channels_last memory format"),
                    ("small-input", "the 28-64 px (CIFAR-style) variant of the model"),
                    ("fine-tune", "transfer learning: new head, body frozen for "
                                  "--freeze-epochs, then unfrozen with learning rates spread "
                                  "over the layer groups (needs --pretrained)"),
                    ("sync-bn", "under torchrun: batch norm over the global batch")]


def _add_recipe_flags(p) -> None:
    """The recipe's fields as flags: `archlab train` and `archlab lr-find` take the same."""
    for flag, _field, typ, text in _RECIPE_FLAGS:
        p.add_argument(flag, type=typ, help=text)
    for name, text in _RECIPE_SWITCHES:
        p.add_argument(f"--{name}", dest=name.replace("-", "_"), default=None,
                       action=argparse.BooleanOptionalAction, help=text)


def _parser_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a dataset, with checkpoints",
                       description="Train a registered model on a dataset. Checkpoints "
                                   "(safetensors + JSON) are written after every epoch and on "
                                   "Ctrl-C; --resume continues a stopped or killed run. "
                                   "Metrics go to metrics.jsonl and metrics.csv in the run "
                                   "directory.")
    p.add_argument("--model", help="registered name (see `archlab models`); default: the "
                                   "recipe's")
    p.add_argument("--data", help="fashion-mnist, mnist, digits, cifar10, cifar100, a folder "
                                  "of class subfolders, or a CSV of path,label")
    p.add_argument("--data-root", help="folder holding the named dataset's files "
                                       "(default: $ARCHLAB_DATA, the cache, /usr/share/datasets)")
    p.add_argument("--recipe", help="a preset name (" + ", ".join(_recipe_presets())
                                    + ") or a YAML file")
    p.add_argument("--out", help="run directory (default: runs/<model>-<data>)")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last checkpoint")
    _add_recipe_flags(p)
    p.add_argument("--unfrozen-lr", type=float, nargs=2, metavar=("LO", "HI"),
                   help="--fine-tune: phase 2 learning rates, spread geometrically from the "
                        "stem (LO) to the head (HI); default lr/200 .. lr/2")
    p.add_argument("--progressive", metavar="START-END[xSTAGES]|EPOCH:SIZE,...",
                   help="progressive resizing (EfficientNetV2): 16-32x4 grows the image side "
                        "from 16 px to 32 px in 4 stages; 0:16,3:24 sets sizes by epoch")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other recipe field, e.g. --set moms=null --set warmup_epochs=1")
    p.add_argument("--strict", action="store_true", default=None,
                   help="stop at the first undecodable file instead of skipping it")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log to TensorBoard (needs `pip install tensorboard`)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _recipe_presets() -> list[str]:
    from archlab.train.recipe import presets

    return presets()


def _recipe_from_args(args):
    import yaml

    from archlab.train.recipe import Recipe

    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    changes: dict[str, Any] = {}
    for _flag, field, _typ, _text in _RECIPE_FLAGS:
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    for name, _text in _RECIPE_SWITCHES:
        value = getattr(args, name.replace("-", "_"))
        if value is not None:
            changes[name.replace("-", "_")] = value
    if getattr(args, "unfrozen_lr", None):
        changes["unfrozen_lr"] = list(args.unfrozen_lr)
    if getattr(args, "progressive", None):
        from archlab.train.progressive import parse_cli

        changes["progressive"] = parse_cli(args.progressive)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        changes[key.strip()] = yaml.safe_load(value)
    if args.strict:
        changes["strict"] = True
    if args.tensorboard:
        changes["tensorboard"] = True
    if args.no_progress:
        changes["progress"] = False
    return recipe.replace(**changes) if changes else recipe


def _default_run_dir(model: str, data: str):
    from pathlib import Path

    stem = f"{model}-{Path(data.rstrip('/')).stem or data}".replace("/", "_")
    path = Path("runs") / stem
    n = 2
    while path.exists():
        path, n = Path("runs") / f"{stem}-{n}", n + 1
    return path


def _rank() -> int:
    """This process's rank when torchrun started several (0 otherwise)."""
    import os

    return int(os.environ.get("RANK", "0") or 0)


def cmd_train(args) -> int:
    from pathlib import Path

    from archlab.train import fit

    if args.resume:
        run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
        if not str(run_dir) or str(run_dir) == ".":
            raise ValueError("--resume needs the run directory: --resume RUN_DIR")
        ignored = [f for f, fld, _t, _h in _RECIPE_FLAGS if getattr(args, fld) is not None]
        if args.recipe or args.set or ignored:
            print("archlab train: resuming with the run's own recipe; "
                  f"{', '.join(ignored + (['--recipe'] if args.recipe else []) + (['--set'] if args.set else []))} "
                  "ignored", file=sys.stderr)
        result = fit(args.model, args.data, None, run_dir=run_dir, resume=True,
                     root=args.data_root)
    else:
        recipe = _recipe_from_args(args)
        model = args.model or recipe.model
        if not model:
            raise ValueError("name a model: --model resnet20 (see `archlab models`)")
        if not args.data:
            raise ValueError("name the data: --data fashion-mnist, a folder or a CSV")
        run_dir = Path(args.out) if args.out else _default_run_dir(model, args.data)
        from archlab.train.checkpoint import has_checkpoint

        if has_checkpoint(run_dir):
            raise ValueError(f"{run_dir} already holds a run: continue it with --resume "
                             f"{run_dir}, or choose another --out")
        if _rank() == 0:
            print(f"run directory: {run_dir}")
        result = fit(model, args.data, recipe, run_dir=run_dir, root=args.data_root)
    if _rank() > 0:  # under torchrun the first process speaks for all
        return 0
    last = result.history[-1] if result.history else {}
    if "val_top1" in last:
        print(f"final validation top-1 {last['val_top1']:.2%}"
              + (f" (best {result.best['val_top1']:.2%} at epoch {result.best['epoch']})"
                 if result.best else ""))
    print(f"weights: {run_dir / 'model.safetensors'}; metrics: {run_dir / 'metrics.csv'}")
    print(f"next: archlab eval {run_dir} --data {args.data or result.info['dataset']}")
    return 0


def _parser_lr_find(sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test: loss against lr, a suggestion",
                       description="Train for up to --num-it steps with the learning rate "
                                   "growing exponentially from --start-lr to --end-lr, stop "
                                   "when the smoothed loss exceeds 4x its minimum, put the "
                                   "weights back, plot loss against lr and suggest a rate "
                                   "(fastai's 'valley': the middle of the longest descent).")
    p.add_argument("model", help="registered name (see `archlab models`)")
    p.add_argument("--data", required=True, help="a dataset spec, as for `archlab train`")
    p.add_argument("--data-root", help="folder holding the named dataset's files")
    p.add_argument("--recipe", help="a preset name or a YAML file (optimizer, batch size...)")
    _add_recipe_flags(p)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other recipe field")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--num-it", type=int, default=100, help="steps of the sweep (default 100)")
    p.add_argument("--suggest", default="valley", choices=("valley", "steep", "minimum"))
    p.add_argument("--plot", default="lr_find.png", help="PNG to write (default lr_find.png)")
    p.set_defaults(func=cmd_lr_find, strict=None, tensorboard=None, no_progress=True,
                   unfrozen_lr=None, progressive=None)


def cmd_lr_find(args) -> int:
    from archlab.train.lr_find import lr_find

    recipe = _recipe_from_args(args)
    result = lr_find(args.model, args.data, recipe, start_lr=args.start_lr,
                     end_lr=args.end_lr, num_it=args.num_it, suggest=args.suggest,
                     plot=args.plot, root=args.data_root)
    print(f"{len(result.lrs)} steps from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e}"
          + (" (stopped: the loss diverged)" if result.diverged else ""))
    for name, lr in result.suggestions.items():
        print(f"  {name:8s} {lr:.2e}" + ("  <- suggested" if name == result.method else ""))
    print(f"plot: {result.plot_path}")
    print(f"next: archlab train --model {args.model} --data {args.data} --lr "
          f"{result.suggestion:.2g}")
    return 0


def _parser_eval(sub) -> None:
    p = sub.add_parser("eval", help="accuracy, per-class table and confusion of a trained model",
                       description="Evaluate a model trained by `archlab train` (its run "
                                   "directory or a .safetensors it wrote) on a dataset: "
                                   "loss, top-1 and top-5 accuracy, per-class accuracy and "
                                   "the confusion matrix.")
    p.add_argument("checkpoint", help="run directory, model.safetensors or best.safetensors")
    p.add_argument("--data", help="dataset spec (default: the one it trained on)")
    p.add_argument("--data-root", help="folder holding the named dataset's files")
    p.add_argument("--split", help="train, test or all (default: test where there is one)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, help="DataLoader workers for image files")
    p.add_argument("--strict", action="store_true", help="stop at the first undecodable file")
    p.add_argument("--no-confusion", action="store_true", help="skip the confusion matrix")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tta", metavar="VIEWS",
                   help="test-time augmentation: average the softmax over views: flip, shift, "
                        "five_crop, ten_crop (AlexNet), aug:N, or a '+' of them")
    p.add_argument("--tta-beta", type=float, metavar="BETA",
                   help="weight of the plain view against the mean of the others (fastai: "
                        "0.25; default: every view alike)")
    p.add_argument("--tta-crop-from", choices=("resize", "pad"), default="resize",
                   help="crops of images held in memory come from the image upscaled by "
                        "1/0.875 (resize) or reflect-padded to that size (pad)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from archlab.train import evaluate
    from archlab.train.checkpoint import read_model

    data = args.data
    if data is None:
        _w, info = read_model(args.checkpoint)
        data = info.get("dataset")
        if not data:
            raise ValueError("name the data: --data SPEC")
    result = evaluate(args.checkpoint, data, split=args.split, batch_size=args.batch_size,
                      device=args.device, workers=args.workers, strict=args.strict,
                      root=args.data_root, progress=not args.json, tta=args.tta,
                      tta_beta=args.tta_beta, tta_crop_from=args.tta_crop_from)
    m = result.metrics
    if args.json:
        print(json.dumps({**m.as_dict(), "data": result.data, "tta": result.tta,
                          "views": result.views, "issues": result.issues.as_dict()},
                         indent=1))
        return 0
    tta = (f", TTA {result.tta}: mean of {result.views} views per image"
           + (f" (plain view weighted {args.tta_beta:g})" if args.tta_beta is not None else "")
           if result.tta else "")
    print(f"{args.checkpoint} on {result.data}: {m.n:,} images{tta}")
    print(f"  top-1 {m.top1:.2%}" + (f"  top-5 {m.top5:.2%}" if m.top5 is not None else "")
          + f"  loss {m.loss:.4f}")
    print()
    print_table(m.per_class_table(), ("class", "images", "correct", "accuracy"), "lrrr")
    if not args.no_confusion:
        print()
        print(m.confusion_text())
    for line in result.issues.summary():
        print(f"data: {line}", file=sys.stderr)
    return 0


def _parser_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes of image files with a trained model",
                       description="Classify image files (or every image in folders) with a "
                                   "model trained by `archlab train`; prints the top-k classes "
                                   "with their probabilities.")
    p.add_argument("checkpoint", help="run directory, model.safetensors or best.safetensors")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from archlab.train import predict

    results = predict(args.checkpoint, args.images, top_k=args.top_k,
                      batch_size=args.batch_size, device=args.device)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        rows = []
        for r in results:
            if "error" in r:
                rows.append((r["file"], "-", f"error: {r['error']}"))
                continue
            top = r["top"]
            rows.append((r["file"], f"{top[0]['class']} ({top[0]['prob']:.1%})",
                         ", ".join(f"{t['class']} {t['prob']:.1%}" for t in top[1:])))
        print_table(rows, ("image", "prediction", "next"), "lll")
    failed = sum("error" in r for r in results)
    if failed:
        print(f"archlab predict: {failed} of {len(results)} files could not be read",
              file=sys.stderr)
    return 1 if failed == len(results) else 0


# --------------------------------------------------------------------------------------
# archlab explain
# --------------------------------------------------------------------------------------


def _parser_explain(sub) -> None:
    p = sub.add_parser("explain", help="what a network looks at: filters, top patches, "
                                       "saliency, Grad-CAM, attention, errors",
                       description="Write pictures of what a model has learnt, and an "
                                   "index.html gathering them: first-layer filters, "
                                   "max-activating dataset patches, attribution maps of images "
                                   "(saliency, smoothgrad, integrated_gradients, gradcam, "
                                   "occlusion; attention and rollout for ViT/DeiT) and the "
                                   "error analysis (confusion, most-confused pairs, top "
                                   "losses). A checkpoint brings its dataset; a model name "
                                   "has random weights unless --pretrained is given.")
    p.add_argument("model", help="run directory or .safetensors left by `archlab train` or "
                                 "`archlab convert`, or a registered model name")
    p.add_argument("images", nargs="*",
                   help="image files, folders, or scikit-image photos such as skimage:coffee "
                        "(default: a few images of the dataset)")
    p.add_argument("--method", action="append", default=[],
                   help="comma-separated: filters, patches, saliency, smoothgrad, "
                        "integrated_gradients, gradcam, occlusion, attention, rollout, "
                        "errors, or all (default: all that apply)")
    p.add_argument("--out", help="output folder (default: explain/<model>)")
    p.add_argument("--data", help="dataset for patches, errors and example images "
                                  "(default: the one a checkpoint was trained on)")
    p.add_argument("--split", help="train, test or all (default: test where there is one)")
    p.add_argument("--limit", type=int, default=2000,
                   help="images searched for max-activating patches (default 2000)")
    p.add_argument("--layers", nargs="+", help="layers for patches (default: the stages)")
    p.add_argument("--channels", help="channels for patches: N (the first N) or a list 0,5,9")
    p.add_argument("--top-k", type=int, default=9, help="patches per channel")
    p.add_argument("--target", help="class (name or index) to explain (default: predicted)")
    p.add_argument("--layer", help="Grad-CAM's layer (default: the last convolutional stage)")
    p.add_argument("--num-images", type=int, default=4,
                   help="dataset images to explain when none are given")
    p.add_argument("--pretrained", help="weights for a model name")
    p.add_argument("--num-classes", type=int, help="for a model name (default 1000)")
    p.add_argument("--in-chans", type=int, help="for a model name (default 3)")
    p.add_argument("--small-input", action="store_true", help="the 28-64 px variant")
    p.add_argument("--img-size", type=int, help="side images are resized to")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_explain)


def cmd_explain(args) -> int:
    from pathlib import Path

    from archlab.analysis.explain import explain

    channels = None
    if args.channels:
        values = [int(c) for c in args.channels.replace(",", " ").split()]
        channels = values[0] if len(values) == 1 and "," not in args.channels else values
    stem = Path(args.model.rstrip("/")).name if Path(args.model).exists() else args.model
    out = Path(args.out) if args.out else Path("explain") / stem
    result = explain(
        args.model, args.images, methods=",".join(args.method) or None, out_dir=out,
        data=args.data, split=args.split, layers=args.layers, channels=channels,
        top_k=args.top_k, limit=args.limit, num_images=args.num_images, target=args.target,
        cam_layer=args.layer, log=lambda msg: print(f"  {msg}", file=sys.stderr),
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


# --------------------------------------------------------------------------------------
# archlab compare / report
# --------------------------------------------------------------------------------------


def _protocol_presets() -> list[str]:
    from archlab.study.protocol import presets

    return presets()


def _parser_compare(sub) -> None:
    p = sub.add_parser(
        "compare", help="train many architectures under one protocol; results in a study",
        description="Run every (architecture, seed) pair of a protocol, record each run in "
                    "the study database (SQLite beside the study, or PostgreSQL with --db), "
                    "then print the results table and write report.html. Running the same "
                    "command again resumes: finished runs are skipped, an interrupted one "
                    "continues from its checkpoint. `archlab compare --worker --study DIR` "
                    "(or --db URL) in more processes or on more machines shares the work.")
    p.add_argument("protocol", nargs="?",
                   help="a preset (" + ", ".join(_protocol_presets()) + "; default "
                        "quick-tour) or a protocol YAML file")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="run these instead of the protocol's list (its entries keep their "
                        "overrides; other registered names use the shared recipe)")
    p.add_argument("--data", help="the dataset instead of the protocol's: fashion-mnist, "
                                  "mnist, digits, cifar10, cifar100, a folder or a CSV")
    p.add_argument("--data-root", help="folder holding the named dataset's files")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="e.g. --seeds 0 1 2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the protocol, e.g. --set recipe.epochs=3 "
                        "--set data.train_fraction=0.5 --set budget.run=10m")
    p.add_argument("--study", help="the study directory (default: studies/<protocol name>)")
    p.add_argument("--db", help="the study database: a PostgreSQL URL "
                                "(postgresql://user@host/db) for workers on several machines, "
                                "or an SQLite file (default: <study>/study.db)")
    p.add_argument("--worker", action="store_true",
                   help="join an existing study (--study or --db) and take runs until none "
                        "is left; writes no report")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="train N runs side by side, each in a worker process with its share "
                        "of the CPU cores (default: the protocol's jobs, else 1)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the recipe's auto)")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--lease", type=float, default=120.0, metavar="SECONDS",
                   help="a running run whose worker has been silent this long is taken over "
                        "(default 120)")
    p.add_argument("--list", action="store_true",
                   help="list the shipped protocols and stop")
    p.add_argument("--dry-run", action="store_true",
                   help="show the runs and their state, train nothing")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    p.add_argument("--quiet", action="store_true",
                   help="only the study's lines, not the trainer's")
    p.set_defaults(func=cmd_compare)


def _parse_sets(items: Sequence[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE (e.g. recipe.epochs=3), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_compare(args) -> int:
    import archlab.study as runner
    from archlab.study.protocol import load_protocol, preset_path, presets

    if args.list:
        import yaml

        rows = []
        for name in presets():
            body = yaml.safe_load(preset_path(name).read_text()) or {}
            desc = " ".join(str(body.get("description") or "").split())
            rows.append((name, str(body.get("data", {}).get("dataset") or "(--data)"),
                         str(len(body.get("models") or [])), desc[:90]))
        print_table(rows, ("protocol", "data", "models", "description"), "llrl")
        return 0
    overrides = _parse_sets(args.set)
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs {args.jobs}: the number of runs trained side by side is 1 "
                         "or more")
    if args.jobs is not None and args.worker:
        raise ValueError("--worker is one worker process; start more `archlab compare "
                         "--worker` commands, or leave out --worker and let --jobs N start them")
    if args.dry_run:
        proto = load_protocol(args.protocol, models=args.models, data=args.data,
                              seeds=args.seeds, overrides=overrides)
        rows = runner.plan(proto, args.study, args.db)
        print(f"protocol {proto.name} [{proto.hash[:8]}] on {proto.dataset}: "
              f"{len(rows)} runs")
        print_table([(r["label"], r["model"], r["seed"], r["status"], r["key"][:8])
                     for r in rows], ("label", "model", "seed", "status", "run"), "llrll")
        return 0
    previous = runner.install_sigterm()
    try:
        result = runner.compare(
            args.protocol, models=args.models, data=args.data, seeds=args.seeds,
            overrides=overrides, study=args.study, db=args.db, worker=args.worker,
            device=args.device, root=args.data_root, retry_failed=args.retry_failed,
            lease_s=args.lease, verbose=not args.quiet, progress=not args.no_progress,
            jobs=args.jobs)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)
    failed = sum(r.status == "failed" for r in result.runs)
    return 1 if failed else 0


def _parser_report(sub) -> None:
    p = sub.add_parser("report", help="the results table, report.html and CSV of a study",
                       description="Print the results table of a study and write its "
                                   "self-contained report.html (plots of accuracy against "
                                   "training time, parameters and MACs, learning curves, "
                                   "spread over seeds, confusion matrix, model cards, the "
                                   "protocol) with results.csv and summary.csv beside it.")
    p.add_argument("study", help="a study directory, its study.db, or a PostgreSQL URL")
    p.add_argument("--out", help="where to write the HTML (default: <study>/report.html)")
    p.add_argument("--protocol", help="which protocol of the study, by name or hash prefix "
                                      "(default: the most recently active)")
    p.add_argument("--csv", help="also write every run to this CSV file")
    p.add_argument("--no-html", action="store_true", help="only the table (and --csv)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from archlab.study.report import report

    path = report(args.study, out=args.out, protocol=args.protocol, csv_path=args.csv,
                  html_report=not args.no_html)
    if path is not None:
        print(f"report: {path}")
    if args.csv:
        print(f"csv:    {args.csv}")
    return 0


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------

PARSERS: list[Callable] = [_parser_models, _parser_info, _parser_calc, _parser_convert,
                          _parser_train, _parser_lr_find, _parser_eval, _parser_predict,
                          _parser_explain,
                          _parser_compare, _parser_report]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archlab",
        description="A laboratory for image-classification architectures: list, measure, "
                    "train, compare and look inside them.")
    parser.add_argument("--version", action="version",
                        version=f"archlab {__import__('archlab').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"archlab {args.command}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"archlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archlab models | head`: the reader has all it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
