"""`archlab calc`: the course's formulas for any numbers, each printed with its working."""
from __future__ import annotations

import json
import re

from archlab._text import fmt_bytes, human
from archlab.analysis import (
    attention_cost, conv_output, fc_on_image, receptive_field, reduction_saving,
    separable_cost, stacked_convs,
)
from archlab.cli.options import add_command, add_options


def add_commands(sub) -> None:
    p = add_command(sub, "calc", cmd_calc)
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
    r = s.add_parser("rf", help="receptive field of a chain of layers (dilation included)")
    r.add_argument("layers", nargs="+", metavar="KxS[dD]",
                   help="kernel x stride per layer, dD for a dilation: 7x2 3x2 3x1d2 3x1d4")
    a = s.add_parser("attention", help="the attention matrix against the number of tokens: "
                                       "pixels as tokens against patches (why ViT uses them)")
    a.add_argument("--size", type=int, default=512, help="image side in pixels")
    a.add_argument("--patch", type=int, default=16)
    a.add_argument("--dim", type=int, default=768, help="embedding width")
    a.add_argument("--heads", type=int, default=12)
    a.add_argument("--no-class-token", dest="class_token", action="store_false")
    f = s.add_parser("fc", help="a fully connected layer on a whole image against a conv")
    f.add_argument("--size", type=int, default=100, help="image side in pixels")
    f.add_argument("--channels", type=int, default=3)
    f.add_argument("--units", type=int, default=1000, help="units (or output channels)")
    f.add_argument("--kernel", type=int, default=3, help="the convolution compared with")
    e = s.add_parser("reduce", help="a 1x1 reduction before a large kernel (GoogLeNet)")
    e.add_argument("--in-chs", type=int, default=192)
    e.add_argument("--reduce", type=int, default=16, help="channels after the 1x1")
    e.add_argument("--out-chs", type=int, default=32)
    e.add_argument("--kernel", type=int, default=5)
    e.add_argument("--size", type=int, default=28, help="feature map side")
    for formula in (c, k, d, r, a, f, e):
        add_options(formula, "--json")


def cmd_calc(args) -> int:
    """the course's formulas for any numbers

    Convolution arithmetic: output size, stacked small kernels against one large one,
    depthwise-separable cost, receptive field of a chain of layers with dilations, the
    attention matrix against the number of tokens, a fully connected layer on a whole image,
    and the saving of a 1x1 reduction."""
    result, text = _FORMULAS[args.what](args)
    print(json.dumps(result, indent=1) if args.json else text)
    return 0


def _conv(args) -> tuple[dict, str]:
    result = conv_output(args.size, args.kernel, args.stride, args.padding, args.dilation)
    return result, (
        f"{args.size} px, {args.kernel}x{args.kernel} kernel, stride {args.stride}, padding "
        f"{args.padding}, dilation {args.dilation} -> {result['output']} px\n"
        f"  floor(({args.size} + 2*{args.padding} - {args.dilation}*({args.kernel} - 1) - 1) "
        f"/ {args.stride} + 1) = {result['output']}; 'same' padding at stride 1 would be "
        f"{result['same_padding']}")


def _stack(args) -> tuple[dict, str]:
    result = stacked_convs(args.kernel, args.layers, args.channels)
    c2 = "" if args.channels == 1 else f" x {args.channels}^2 channels"
    field = result["receptive_field"]
    return result, (
        f"{args.layers} stacked {args.kernel}x{args.kernel} convolutions see {field}x{field} "
        f"pixels\n  weights: {args.layers}*{args.kernel}^2 = {args.layers * args.kernel ** 2}"
        f"{c2} = {result['stack_weights']:,} against {field}^2 = {field ** 2}{c2} = "
        f"{result['single_weights']:,} for one {field}x{field} kernel "
        f"({result['saving']:.0%} fewer)\n  non-linearities: {args.layers} against 1")


def _separable(args) -> tuple[dict, str]:
    result = separable_cost(args.in_chs, args.out_chs, args.kernel, args.size)
    return result, (
        f"{args.kernel}x{args.kernel} convolution, {args.in_chs} -> {args.out_chs} channels on "
        f"{args.size}x{args.size}\n"
        f"  standard:  {result['standard_macs']:,} MACs, {result['standard_weights']:,} "
        f"weights\n  separable: {result['separable_macs']:,} MACs (depthwise "
        f"{result['depthwise_macs']:,} + pointwise {result['pointwise_macs']:,}), "
        f"{result['separable_weights']:,} weights\n"
        f"  ratio {result['ratio']:.4f} = 1/{args.out_chs} + 1/{args.kernel}^2 "
        f"-> {result['speedup']:.1f}x fewer multiply-adds")


def _rf(args) -> tuple[dict, str]:
    chain = []
    for spec in args.layers:
        m = re.fullmatch(r"(\d+)x(\d+)(?:d(\d+))?", spec.lower())
        if not m:
            raise ValueError(f"{spec!r} is not KxS or KxSdD (e.g. 3x2 for a 3x3 kernel at "
                             "stride 2, 3x1d2 for one dilated by 2)")
        chain.append(tuple(int(v) for v in m.groups(default="1")))
    result = receptive_field(chain)
    steps = [f"  {k}x{k}" + (f" dilated {d} (spans {d * (k - 1) + 1})" if d > 1 else "")
             + f", stride {s}: field {r}, stride {j}"
             for (k, s, d), r, j in zip(chain, result["fields"], result["strides"])]
    return result, (f"{len(chain)} layers -> receptive field {result['receptive_field']} px, "
                    f"cumulative stride {result['stride']}\n" + "\n".join(steps))


def _attention(args) -> tuple[dict, str]:
    res = attention_cost(args.size, args.patch, args.dim, args.heads, args.class_token)
    plus = " + 1 class token" if args.class_token else ""

    def line(kind: str, side: int) -> str:
        return (f"  {kind}: {side}x{side}{plus} = {res[f'{kind}_tokens']:,} tokens -> "
                f"{res[f'{kind}_tokens']:,}^2 x {args.heads} heads = "
                f"{res[f'{kind}_entries']:,} attention weights "
                f"({fmt_bytes(res[f'{kind}_bytes'])} in fp32) and "
                f"{human(res[f'{kind}_macs'])} multiply-adds per layer")
    return res, (
        f"A {args.size}x{args.size} image, self-attention of width {args.dim}:\n"
        + line("pixel", args.size).replace("pixel:", "every pixel a token:") + "\n"
        + line("patch", args.size // args.patch).replace(
            "patch:", f"{args.patch}x{args.patch} patches:") + "\n"
        f"  the matrix grows with the square of the tokens: patches make it "
        f"{res['ratio']:,.0f}x smaller")


def _fc(args) -> tuple[dict, str]:
    res = fc_on_image(args.size, args.size, args.channels, args.units, args.kernel)
    return res, (
        f"A fully connected layer of {args.units:,} units on a {args.size}x{args.size}x"
        f"{args.channels} image: {res['inputs']:,} inputs x {args.units:,} + {args.units:,} "
        f"biases = {res['fc_params']:,} parameters\n"
        f"  a {args.kernel}x{args.kernel} convolution with {args.units:,} output channels: "
        f"{args.kernel}^2 x {args.channels} x {args.units:,} + {args.units:,} = "
        f"{res['conv_params']:,}, whatever the image size ({res['ratio']:,.0f}x fewer)")


def _reduce(args) -> tuple[dict, str]:
    res = reduction_saving(args.in_chs, args.reduce, args.out_chs, args.kernel, args.size)
    k, hw = f"{args.kernel}x{args.kernel}", f"{args.size}x{args.size}"
    return res, (
        f"A {k} convolution, {args.in_chs} -> {args.out_chs} channels on {hw}:\n"
        f"  direct: {hw} x {args.kernel}^2 x {args.in_chs} x {args.out_chs} = "
        f"{res['direct_macs']:,} MACs ({res['direct_weights']:,} weights)\n"
        f"  1x1 to {args.reduce} first: {hw} x ({args.in_chs} x {args.reduce} + "
        f"{args.kernel}^2 x {args.reduce} x {args.out_chs}) = {res['reduced_macs']:,} MACs "
        f"({res['reduced_weights']:,} weights)\n"
        f"  the reduction saves {res['saving']:.0%}")


_FORMULAS = {"conv": _conv, "stack": _stack, "separable": _separable, "rf": _rf,
             "attention": _attention, "fc": _fc, "reduce": _reduce}
