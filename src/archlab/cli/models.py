"""`archlab models`, `info` and `convert`: the architectures, what they cost, and
checkpoints from their peers."""
from __future__ import annotations

import json
import sys
import textwrap

import torch

import archlab
from archlab._text import format_table, human
from archlab.analysis import model_costs, profile
from archlab.classical import classical_card, classical_config, is_classical
from archlab.cli.options import add_command, add_options


def add_commands(sub) -> None:
    for add in (_parser_models, _parser_info, _parser_convert):
        add(sub)


def _fmt_field(f) -> str:
    if f is None:
        return "global"
    return f"{f[0]:g}" if f[0] == f[1] else f"{f[0]:g}x{f[1]:g}"


# --------------------------------------------------------------------------------------
# archlab models
# --------------------------------------------------------------------------------------


def _parser_models(sub) -> None:
    p = add_command(sub, "models", cmd_models)
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--family", help="only this family (see --families)")
    p.add_argument("--families", action="store_true", help="list the families and stop")
    add_options(p, "--json")


def cmd_models(args) -> int:
    """list the registered architectures with their cost

    List registered architectures: family, year, parameters and MACs at the default
    resolution (counted on the meta device, no memory used; the first run counts and
    caches them in ~/.cache/archlab)."""
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
        print(format_table(rows, ("model", "family", "year", "input", "params", "MACs"), "llrrrr"))
    return 0


# --------------------------------------------------------------------------------------
# archlab info
# --------------------------------------------------------------------------------------


def _parser_info(sub) -> None:
    p = add_command(sub, "info", cmd_info)
    p.add_argument("name")
    add_options(p, "--img-size", "--in-chans", "--num-classes", "--small-input", "--batch-size",
                "--json", batch_size=dict(default=1, help="for activation memory"))
    p.add_argument("--layers", action="store_true", help="print the per-layer table")
    p.add_argument("--depth", type=int, help="table rows at this module depth (default: leaves)")


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
        table = format_table([[s[k] for k in keys] for s in stages], keys, "r" * len(keys))
        lines += ["  " + line for line in table.splitlines()]
    if model.feature_info:
        lines.append("feature stages: " + ", ".join(
            f"{f['module']} ({f['num_chs']} ch, /{f['reduction']})" for f in model.feature_info))
    return lines


def cmd_info(args) -> int:
    """a model's card, cost and layer table

    Print a model's card (paper, year, key idea), its parameters, MACs/FLOPs and activation
    memory at a resolution, the receptive field of its last feature map, and with
    --layers a per-layer table. For the classical baseline (sift-bovw): what it is, its
    settings and their defaults, and how to run it."""
    if is_classical(args.name):
        return _classical_info(args)
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
        print(format_table(rows, ("layer", "type", "output", "params", "MACs", "RF", "stride"),
                           "llrrrrr"))
    return 0


def _classical_info(args) -> int:
    """The classical baseline: no layers, no MACs; its stages, settings and use."""
    card, config = classical_card(args.name), classical_config(args.name)
    defaults = config()
    classes = 10          # Fashion-MNIST's and CIFAR-10's, where the protocols run it
    learned = defaults.learned_numbers(classes)
    if args.json:
        print(json.dumps({"card": card.as_dict(), "options": [
            {"name": n, "default": d, "help": h} for n, d, h in config.options()],
            "learned_numbers": {"classes": classes, **learned}}, indent=1, default=str))
        return 0
    cells = sum(side * side for side in defaults.pyramid)

    def say(label: str | None, text: str) -> None:
        first = "  " if label is None else f"  {label:<14}"
        print(textwrap.fill(text, 100, initial_indent=first, break_on_hyphens=False,
                            subsequent_indent=" " * len(first)))

    print(f"{card.name}  ({card.family}: not a network)")
    say(None, card.paper)
    say(None, card.key_idea)
    say("stages", "SIFT descriptors (hand-designed, RootSIFT) -> k-means vocabulary -> VLAD "
                  "or histogram codes over a spatial pyramid -> linear SVM (one-vs-rest)")
    say("parameters", "none in the deep sense: no layers, no MACs, nothing trained by "
                      f"gradient descent; fitting learns {sum(learned.values()):,} numbers "
                      f"for {classes} classes with the defaults ("
                      + ", ".join(f"{k} {v:,}" for k, v in learned.items())
                      + "), in one pass on the CPU")
    say("code", f"{defaults.code_size():,} numbers per image ({cells} pyramid cells x "
                f"{defaults.vocab_size} words x {defaults.pca_dims} dims)")
    say("settings", "(model_kwargs of a protocol entry, keywords of create_classical) "
                    "name, default, what it sets:")
    for name, default, text in config.options():
        print(textwrap.fill(text, 100, initial_indent=f"    {name:<13} {str(default):<8} ",
                            subsequent_indent=" " * 27))
    say("use", f"archlab compare, with {card.name} among a protocol's models (- name: "
               f"{card.name}, model_kwargs: {{detector: dog}}), or `archlab compare quick-tour "
               f"--models {card.name} lenet5`; `archlab explain {card.name} IMAGE` draws its "
               "SIFT keypoints")
    return 0


# --------------------------------------------------------------------------------------
# archlab convert
# --------------------------------------------------------------------------------------


def _parser_convert(sub) -> None:
    p = add_command(sub, "convert", cmd_convert)
    p.add_argument("input", help=".pth/.pt/.bin/.safetensors state dict")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--from", dest="source",
                   help="torchvision, timm, efficientnet-pytorch, pretrainedmodels or archlab "
                        "(default: detect)")
    p.add_argument("--model", help="archlab model name (default: detect)")
    p.add_argument("--num-classes", type=int, help="default: the checkpoint's")


def cmd_convert(args) -> int:
    """a torchvision/timm/efficientnet-pytorch checkpoint into archlab's safetensors

    Convert a peer's state dict into an archlab checkpoint (safetensors). The source layout
    and the architecture are detected when not given."""
    out, name, report = archlab.convert_file(args.input, args.output, args.model, args.source,
                                     args.num_classes)
    print(f"{args.input} -> {out} ({name}): {report}")
    return 0
