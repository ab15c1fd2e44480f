"""ResNet and its descendants: residual learning, pre-activation, the Bag of Tricks, SE,
ResNeXt and wide ResNets, all as one network with flags.

Deep Residual Learning (He, Zhang, Ren & Sun, 1512.03385) starts from a puzzle: a 56-layer
plain network has *higher training error* than a 20-layer one. The deeper net could copy the
shallow one and set its extra layers to the identity, so this is an optimisation problem, not
overfitting (the "degradation" of Fig. 1). The fix: let a stack of layers learn a residual
F(x) and output F(x) + x, so that the identity is the easy default (zero weights) and the
signal and its gradient pass through the shortcut unchanged. ResNet-152 won ImageNet 2015;
ResNet-1202 still trains on CIFAR-10. Blocks come in two shapes: the *basic* block (two 3×3
convolutions, ResNet-18/34 and the CIFAR nets) and the *bottleneck* (1×1 reduce, 3×3, 1×1
expand by 4; ResNet-50/101/152), which makes depth cheap. Where a block changes the shape,
the shortcut either pads the new channels with zeros (option A, no parameters: the CIFAR
nets) or projects with a 1×1 convolution (option B: the ImageNet nets). The `plain` twins
(`shortcut="none"`) are the same networks without shortcuts, for the degradation experiment.

Identity Mappings (1603.05027) moves batch norm and ReLU *before* each convolution
(`preact=True`) so that nothing at all sits on the shortcut path, not even the ReLU after the
addition: a signal goes from any block to any later one unchanged, and a 1001-layer network
trains better than a 164-layer one. Its Fig. 4 tries five places for the same layers, each a
`unit` here: (a) "original"; (b) "bn_after_add", BN on the shortcut's path; (c)
"relu_before_add", a branch that can only add; (d) "relu_preact"; (e) "full_preact", which
is `preact=True`. Every convolution keeps its own BN and ReLU; only their order changes.

Bag of Tricks (1812.01187) found three cheap repairs, each a flag here: B (`stride_3x3`)
moves the bottleneck's stride from the first 1×1 convolution, which reads only a quarter of
its input, to the 3×3; C (`deep_stem`) replaces the 7×7 stem by three 3×3 convolutions;
D (`avg_down`) average-pools before the 1×1 projection shortcut, which would otherwise also
skip three quarters of its input. `zero_init_last` starts every block as the identity.
fastai's XResNet is ResNet-B+C+D with that initialisation, and its optional simple
self-attention (`sa`, `sym`).

Squeeze-and-Excitation (1709.01507) is `attn="se"`: each block reweighs its channels by
global context. ResNeXt (1611.05431) is `groups` and `base_width`: the 3×3 convolution of the
bottleneck split into 32 parallel paths, wider for the same cost. Wide ResNet (1605.07146)
doubles the bottleneck's inner width (`base_width=128`). The only ImageNet weights of
SE-ResNet-101/152 are the SENet authors' Caffe release (ported by pretrainedmodels, timm's
`legacy_` nets): stride on the first 1×1, and a stem pool that rounds up instead of padding
(`stem_pool="ceil"`), as Caffe's pooling does; the `legacy_` variants are that network.

Our module names are torchvision's (conv1, bn1, layer1..4, downsample), so torchvision's and
timm's ResNet checkpoints load by renaming only the classifier (ours sits in `head`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.layers import (ClassifierHead, DropPath, ImageClassifier, SqueezeExcite,
                                   get_act, init_conv_bn)
from archlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, Paper, register_model

RESNET = Paper(
    "Deep Residual Learning for Image Recognition", 2015, "1512.03385", "resnet",
    "Blocks learn a residual F(x) and add their input back, F(x) + x: the identity becomes "
    "the easy default, so 152-layer networks train where deeper plain networks got worse.")
PREACT = Paper(
    "Identity Mappings in Deep Residual Networks", 2016, "1603.05027", "resnet",
    "Batch norm and ReLU move before each convolution (pre-activation), leaving the shortcut "
    "a pure identity from block to block; a 1001-layer ResNet then trains and beats the "
    "164-layer one.")
TRICKS = Paper(
    "Bag of Tricks for Image Classification with Convolutional Neural Networks", 2018,
    "1812.01187", "resnet",
    "Three cheap repairs to ResNet: stride on the 3x3 instead of the 1x1 (B), a stem of three "
    "3x3 convolutions (C) and average pooling before the projection shortcut (D); ResNet-50 "
    "top-1 goes from 76.21 to 77.16.")
SENET = Paper(
    "Squeeze-and-Excitation Networks", 2017, "1709.01507", "resnet",
    "Each block pools its channels to a vector, passes it through a small bottleneck MLP and "
    "rescales the channels by the result: channel attention from global context for less "
    "than 1% more computation and about 10% more parameters.")
RESNEXT = Paper(
    "Aggregated Residual Transformations for Deep Neural Networks", 2016, "1611.05431",
    "resnet",
    "The bottleneck's 3x3 convolution split into 32 parallel groups (cardinality): at the "
    "same cost the block can be wider, and cardinality helps more than depth or width.")
WIDE = Paper(
    "Wide Residual Networks", 2016, "1605.07146", "resnet",
    "Wider and shallower residual networks: doubling the inner width of the bottleneck gains "
    "more than adding depth, and trains faster on GPUs.")

# CIFAR-10's per-channel mean and standard deviation (the paper subtracts the per-pixel mean).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # No bias: batch norm's shift follows (or, pre-activated, precedes the next conv).
    return nn.Conv2d(in_chs, out_chs, 3, stride, 1, groups=groups, bias=False)


def _conv1x1(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)


# --------------------------------------------------------------------------------------
# The shortcut when a block changes shape, and fastai's self-attention
# --------------------------------------------------------------------------------------


class ZeroPadShortcut(nn.Module):
    """Option A of 1512.03385 (section 3.3): the identity, subsampled by the stride, with
    zeros for the new channels; no parameters, so a ResNet costs exactly its plain twin."""

    def __init__(self, out_chs: int, stride: int) -> None:
        super().__init__()
        self.out_chs, self.stride = out_chs, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # x[:, :, ::s, ::s] selects the same pixels, but its backward scatters into a
            # new contiguous tensor: a channels_last network then adds a contiguous gradient
            # to a channels_last one and every ReLU backward after it takes PyTorch's slow
            # mixed-layout path (1.5 ms against 0.3 ms a call on Fashion-MNIST's 28 px
            # ResNet, a fifth of its training step on 2 Xeon cores). A 1x1 average pool with
            # the stride picks the same pixels, exactly, and its backward keeps the layout.
            x = F.avg_pool2d(x, 1, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.out_chs - x.shape[1]))

    def extra_repr(self) -> str:
        return f"out_chs={self.out_chs}, stride={self.stride}"


class SimpleSelfAttention(nn.Module):
    """fastai's simple self-attention (XResNet's `sa`): o = γ·(x xᵀ)(W x) + x, with x the
    feature map flattened to (channels, positions). x xᵀ is a channels×channels Gram matrix,
    so the cost grows with the positions only linearly; W is a spectrally normalised 1×1
    convolution; γ starts at zero, so the block starts as the identity. `sym` makes W
    symmetric, (W + Wᵀ)/2. (fastai assigns the symmetric W to the convolution, where its
    spectral-norm hook overwrites it before use; here it is used.)"""

    def __init__(self, channels: int, sym: bool = False) -> None:
        super().__init__()
        self.sym = sym
        self.conv = nn.utils.parametrizations.spectral_norm(
            nn.Conv1d(channels, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(1))

    def weight_matrix(self) -> torch.Tensor:
        w = self.conv.weight.squeeze(-1)
        return (w + w.t()) / 2 if self.sym else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        gram = flat @ flat.transpose(1, 2)
        out = self.gamma * (gram @ (self.weight_matrix() @ flat)) + flat
        return out.reshape(n, c, h, w)


# --------------------------------------------------------------------------------------
# The blocks, and the five orderings of a residual unit (Fig. 4 of 1603.05027)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """Where a residual unit puts its batch norms and activations around its convolutions.

    Every convolution i of a block owns one batch norm `bn{i}` and one activation `act{i}`;
    the orderings of 1603.05027's Fig. 4 only move them. `before`: what precedes every
    convolution (pre-activation); `between`: what follows every convolution but the last;
    `last`: what follows the last one, before the addition; `after_add`: what follows the
    addition, on the path of the shortcut too.
    """

    before: tuple[str, ...]
    between: tuple[str, ...]
    last: tuple[str, ...]
    after_add: tuple[str, ...]


UNITS = {
    # (a) 1512.03385: conv-BN-ReLU, conv-BN, the addition, ReLU.
    "original": Unit((), ("bn", "act"), ("bn",), ("act",)),
    # (b) the last BN moves after the addition, where it rescales the shortcut's signal too.
    "bn_after_add": Unit((), ("bn", "act"), (), ("bn", "act")),
    # (c) the ReLU moves before the addition: the branch can only add, never subtract.
    "relu_before_add": Unit((), ("bn", "act"), ("bn", "act"), ()),
    # (d) ReLU-only pre-activation: ReLU-conv-BN, twice, then the addition.
    "relu_preact": Unit(("act",), ("bn",), ("bn",), ()),
    # (e) full pre-activation: BN-ReLU-conv, twice, then the addition and nothing else.
    "full_preact": Unit(("bn", "act"), (), (), ()),
}


def resolve_unit(unit: str | None, preact: bool) -> str:
    """The unit's name: `preact=True` is the full pre-activation (e), the default the
    original (a)."""
    if unit is None:
        return "full_preact" if preact else "original"
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if preact and unit != "full_preact":
        raise ValueError(f"preact=True is unit='full_preact'; it contradicts unit={unit!r}: "
                         "pass only one of them")
    return unit


@dataclass(frozen=True)
class BlockOptions:
    """What a residual block takes besides its size: the ResNet flags that reach every block.

    residual: False builds the plain twin (no shortcut). unit: the ordering of norms and
    activations, a name in UNITS. groups / base_width: ResNeXt's cardinality and the
    channels per group at the first stage (a wide ResNet doubles it); bottleneck only.
    stride_3x3: ResNet-B, the bottleneck's stride on its 3×3. attn ("se"), sa / sym and
    drop_path end the residual branch (see `_Block`). act: the activation.
    """

    residual: bool = True
    unit: str = "original"
    groups: int = 1
    base_width: int = 64
    stride_3x3: bool = True
    attn: str | None = None
    sa: bool = False
    sym: bool = False
    drop_path: float = 0.0
    act: str | type[nn.Module] = "relu"

    def __post_init__(self) -> None:
        if self.attn not in (None, "se"):
            raise ValueError(f"attn must be None or 'se', got {self.attn!r}")
        resolve_unit(self.unit, False)

    def refuse_groups(self) -> None:
        """A basic block has no 3×3 to group or widen."""
        if self.groups != 1 or self.base_width != 64:
            raise ValueError("groups and base_width (ResNeXt, wide ResNets) need "
                             "block='bottleneck'")

    def new_act(self, inplace: bool = True) -> nn.Module:
        """A fresh activation (a module per layer, so that hooks see each one)."""
        return get_act(self.act, inplace=inplace)


class _Block(nn.Module):
    """What every block shares: its convolutions with their norms and activations in the
    unit's order; the residual branch ends with optional SE and self-attention, stochastic
    depth, and then meets the shortcut (or, in a plain net, doesn't)."""

    expansion = 1

    def _build(self, convs: list[nn.Conv2d], downsample: nn.Module | None,
               opts: BlockOptions) -> None:
        """Register `convs` as conv1, conv2... with bn{i} and act{i} where `opts.unit` puts
        them, in the order they run (so that state dicts read like the paper's figure)."""
        unit = UNITS[opts.unit]
        self.unit = opts.unit
        # lead: what runs before the first convolution; a reshaping shortcut reads its output
        # too (the paper's code pre-activates once for both paths).
        self._lead: list[str] = []
        self._branch: list[str] = []
        for i, conv in enumerate(convs, 1):
            for op in unit.before:
                # The block's very first op reads the input, which the shortcut still needs:
                # an activation there must not overwrite it.
                first = i == 1 and not self._lead
                self._add(op, i, conv.in_channels, opts, self._lead if i == 1 else self._branch,
                          inplace=not first)
            self._add(f"conv{i}", i, 0, opts, self._branch, module=conv)
            for op in unit.last if i == len(convs) else unit.between:
                self._add(op, i, conv.out_channels, opts, self._branch)
        self._tail(convs[-1].out_channels, downsample, opts)
        self._after_add: list[str] = []
        for op in unit.after_add:
            self._add(op, len(convs), convs[-1].out_channels, opts, self._after_add)

    def _add(self, op: str, i: int, chs: int, opts: BlockOptions, names: list[str],
             inplace: bool = True, module: nn.Module | None = None) -> None:
        if module is None:
            module = nn.BatchNorm2d(chs) if op == "bn" else opts.new_act(inplace)
            op = f"{op}{i}"
        self.add_module(op, module)
        names.append(op)

    def _tail(self, out_chs: int, downsample: nn.Module | None, opts: BlockOptions) -> None:
        # SE on the residual branch before the addition (Fig. 3 of 1709.01507).
        self.se = (SqueezeExcite(out_chs, rd_ratio=1 / 16) if opts.attn == "se"
                   else nn.Identity())
        self.sa = SimpleSelfAttention(out_chs, opts.sym) if opts.sa else nn.Identity()
        self.drop_path = DropPath(opts.drop_path) if opts.drop_path else nn.Identity()
        self.downsample = downsample
        self.residual = opts.residual

    def zero_init_last(self) -> None:
        """Zero the residual branch's last layer, so that the branch starts at zero: its
        last norm, or where none follows the last convolution, that convolution."""
        last = [n for n in self._branch if n.startswith(("conv", "bn"))][-1]
        nn.init.zeros_(getattr(self, last).weight)

    def _run(self, names: list[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self._run(self._lead, x)
        out = self.drop_path(self.sa(self.se(self._run(self._branch, pre))))
        if self.residual:
            # Where the shape changes, the shortcut reads the pre-activated input; the
            # identity adds the raw one, so that nothing sits on its path.
            out = out + (x if self.downsample is None else self.downsample(pre))
        return self._run(self._after_add, out)


_DEFAULTS = BlockOptions()


class BasicBlock(_Block):
    """Two 3×3 convolutions and the shortcut (ResNet-18/34, the CIFAR nets); in the
    original unit, Fig. 2 (left): conv-BN-ReLU, conv-BN, the addition, ReLU."""

    def __init__(self, in_chs: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, opts: BlockOptions = _DEFAULTS) -> None:
        super().__init__()
        opts.refuse_groups()
        self._build([_conv3x3(in_chs, planes, stride), _conv3x3(planes, planes)],
                    downsample, opts)


class Bottleneck(_Block):
    """1×1 reduce, 3×3, 1×1 expand by 4 (ResNet-50/101/152): deep at little cost; in the
    original unit, Fig. 5 (right), each convolution followed by BN and (but the last) ReLU.

    The 3×3 convolution is `groups`-way grouped with `base_width` channels per group at
    the first stage (ResNeXt's 32x4d); a wide ResNet doubles base_width. `stride_3x3`
    puts the stride on the 3×3 (ResNet-B, torchvision's "v1.5") rather than on the first
    1×1, which would read only a quarter of its input."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, opts: BlockOptions = _DEFAULTS) -> None:
        super().__init__()
        width = int(planes * opts.base_width / 64) * opts.groups
        s1x1, s3x3 = (1, stride) if opts.stride_3x3 else (stride, 1)
        self._build([_conv1x1(in_chs, width, s1x1),
                     _conv3x3(width, width, s3x3, opts.groups),
                     _conv1x1(width, planes * self.expansion)], downsample, opts)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}
_SHORTCUTS = ("projection", "zero_pad", "none")


def _stem_maxpool(kind: str) -> nn.MaxPool2d:
    # "ceil": Caffe rounds a pooled size up instead of padding; the SENet authors' release
    # was trained so, and pretrainedmodels (timm's legacy_ SENets) keeps it for its weights.
    return nn.MaxPool2d(3, 2, ceil_mode=True) if kind == "ceil" else nn.MaxPool2d(3, 2, 1)


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


class ResNet(ImageClassifier):
    """A stem, stages of residual blocks (each stage after the first halves the map and
    doubles the width), global average pooling and a linear classifier.

    block: "basic" or "bottleneck"; layers: blocks per stage; widths: each stage's `planes`
    (a bottleneck outputs 4× that). unit: the order of norms, activations and the addition
    in a block, one of the five of 1603.05027's Fig. 4 (UNITS; default "original");
    preact=True is unit="full_preact". The stem gives the first block what its unit
    expects (conv-BN-ReLU, or less of it where the unit pre-activates), and a unit that
    pre-activates ends the network with its norm and ReLU. shortcut: "projection"
    (a 1×1 conv where the shape changes), "zero_pad" (option A) or "none" (the plain twin).
    stride_3x3 / deep_stem / avg_down: Bag of Tricks' B / C / D. stem_width: the stem's
    output channels (the deep stem's first two convolutions have half). cifar_stem: the
    CIFAR layout of section 4.2, a 3×3 stride-1 stem and no pooling, which `small_input`
    also gives the ImageNet nets. groups / base_width: ResNeXt and wide ResNets. attn: "se"
    for squeeze-excitation. sa / sym: fastai's self-attention in the last block of the first
    stage (stage len(layers)-4 of fastai's deeper nets). zero_init_last: each block's last
    norm (or, pre-activated, its last conv) starts at zero. act: the activation of the stem
    and the blocks, a name in layers.ACTIVATIONS (the SE gate keeps its own). stem_pool:
    "pad" (3×3/2, padding 1) or "ceil" (no padding, the last window rounded up: Caffe's).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512), preact: bool = False,
                 unit: str | None = None, shortcut: str = "projection", stride_3x3: bool = True,
                 deep_stem: bool = False, avg_down: bool = False, stem_width: int = 64,
                 cifar_stem: bool = False, groups: int = 1, base_width: int = 64,
                 attn: str | None = None, sa: bool = False, sym: bool = False,
                 zero_init_last: bool = False, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, act: str | type[nn.Module] = "relu",
                 stem_pool: str = "pad") -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"shortcut must be one of {', '.join(_SHORTCUTS)}, got {shortcut!r}")
        if stem_pool not in ("pad", "ceil"):
            raise ValueError(f"stem_pool must be 'pad' or 'ceil', got {stem_pool!r}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have one "
                             "entry per stage")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.unit = unit = resolve_unit(unit, preact)
        self.preact = unit == "full_preact"
        self.avg_down, self.shortcut = avg_down, shortcut
        block_cls = _BLOCKS[block]
        pre_ops = UNITS[unit].before       # what each block does before its first conv

        # The stem: 7×7/2 and a 3×3/2 max pool cut 224 px to 56 before any block.
        tiny = small_input or cifar_stem
        if deep_stem:
            mid = stem_width // 2
            self.conv1: nn.Module = nn.Sequential(
                _conv3x3(in_chans, mid, 1 if tiny else 2), nn.BatchNorm2d(mid),
                get_act(act, inplace=True), _conv3x3(mid, mid), nn.BatchNorm2d(mid),
                get_act(act, inplace=True), _conv3x3(mid, stem_width))
        elif tiny:
            self.conv1 = _conv3x3(in_chans, stem_width)
        else:
            self.conv1 = nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)
        # Pre-activated, the first block's norm and ReLU follow the stem's convolution.
        self.bn1 = nn.Identity() if "bn" in pre_ops else nn.BatchNorm2d(stem_width)
        self.act1 = nn.Identity() if "act" in pre_ops else get_act(act, inplace=True)
        self.stem_pool = stem_pool
        self.maxpool = nn.Identity() if tiny else _stem_maxpool(stem_pool)

        opts = BlockOptions(residual=shortcut != "none", unit=unit, groups=groups,
                            base_width=base_width,
                            stride_3x3=stride_3x3, attn=attn, sym=sym, act=act)
        chs, reduction = stem_width, 1 if tiny else 4
        sa_stage = max(len(layers) - 4, 0)
        n_blocks, b = sum(layers), 0
        self.stage_names: list[str] = []
        for i, (planes, depth) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            out_chs = planes * block_cls.expansion
            blocks = []
            for j in range(depth):
                s = stride if j == 0 else 1
                downsample = self._make_shortcut(chs, out_chs, s)
                block_opts = replace(opts, sa=sa and i == sa_stage and j == depth - 1,
                                     drop_path=drop_path_rate * b / max(n_blocks - 1, 1))
                blocks.append(block_cls(chs, planes, s, downsample, block_opts))
                chs, b = out_chs, b + 1
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=name))

        # Pre-activated, the last block's sum still needs its norm and ReLU (section 4).
        self.bn_final = nn.BatchNorm2d(chs) if "bn" in pre_ops else nn.Identity()
        self.act_final = get_act(act, inplace=True) if "act" in pre_ops else nn.Identity()
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        # Every layer is padded and keeps ceil(size / stride) pixels, so no map ever empties
        # (as in torchvision, a 32 px image through an ImageNet ResNet ends at 1×1).
        self.min_input_size = 1
        if stem_pool == "ceil" and not tiny:
            self.min_input_size = 3  # the unpadded pool needs a 2 px map: 3 px in
        self._init_weights(zero_init_last)

    def _make_shortcut(self, in_chs: int, out_chs: int, stride: int) -> nn.Module | None:
        if self.shortcut == "none" or (stride == 1 and in_chs == out_chs):
            return None
        if self.shortcut == "zero_pad":
            return ZeroPadShortcut(out_chs, stride)
        parts: list[nn.Module] = []
        if self.avg_down:
            # ResNet-D: pool 2×2 first, so that the 1×1 projection sees every pixel.
            parts += [nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                      if stride > 1 else nn.Identity(), _conv1x1(in_chs, out_chs)]
        else:
            parts.append(_conv1x1(in_chs, out_chs, stride))
        if not self.preact:
            parts.append(nn.BatchNorm2d(out_chs))
        return nn.Sequential(*parts)

    def _init_weights(self, zero_init_last: bool) -> None:
        # He initialisation (1502.01852), which the paper uses to train from scratch.
        init_conv_bn(self)
        if zero_init_last:
            # Bag of Tricks 3.1: every block starts as the identity, so the network starts
            # shallow and the gradient reaches the stem undamped.
            for m in self.modules():
                if isinstance(m, _Block):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.act_final(self.bn_final(x))

    # -- checkpoints -------------------------------------------------------------------
    @property
    def checkpoint_key_maps(self) -> dict[str, list[tuple[str, str]]]:  # type: ignore[override]
        if self.preact:
            return {"timm": _TIMM_V2_KEYS}
        if self.stem_pool == "ceil":
            # timm's only ResNet with Caffe's stem is its legacy SENet, in pretrainedmodels'
            # names (and torchvision has none).
            return {"timm": _TIMM_LEGACY_KEYS}
        # torchvision and timm name a v1 ResNet's tensors identically, so a checkpoint alone
        # cannot tell them apart; the peer this variant was registered against goes first.
        peers = getattr(getattr(self, "card", None), "peers", {})
        order = sorted(("torchvision", "timm"), key=lambda source: source not in peers)
        return {source: _V1_KEYS for source in order}

    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        out = super().convert_checkpoint(state_dict, source)
        if self.preact and source == "timm":
            # timm's ResNetV2 classifies with a 1×1 convolution; ours is the same linear map.
            w = out.get("head.fc.weight")
            if w is not None and w.ndim == 4:
                out["head.fc.weight"] = w.flatten(1)
        return out


_V1_KEYS = [(r"^fc\.", "head.fc.")]
_TIMM_V2_KEYS = [
    (r"^stem\.conv\.", "conv1."),
    *[(rf"^stages\.{i}\.blocks\.", f"layer{i + 1}.") for i in range(4)],
    (r"\.norm(\d)\.", r".bn\1."),
    (r"\.downsample\.conv\.", ".downsample.0."),
    (r"^norm\.", "bn_final."),
]
_TIMM_LEGACY_KEYS = [(r"^layer0\.conv1\.", "conv1."), (r"^layer0\.bn1\.", "bn1."),
                     (r"\.se_module\.", ".se."), (r"^last_linear\.", "head.fc.")]


# --------------------------------------------------------------------------------------
# The variants
# --------------------------------------------------------------------------------------


def _register(name: str, paper: Paper, **kw: Any) -> None:
    # Weights only timm has are evaluated as timm evaluates them: bicubic resizing.
    if "timm" in (kw.get("peers") or {}) and "torchvision" not in kw["peers"]:
        kw.setdefault("interpolation", "bicubic")
    register_model(name, ResNet, paper=paper, **kw)


_R18, _R34 = dict(block="basic", layers=(2, 2, 2, 2)), dict(block="basic", layers=(3, 4, 6, 3))
_R50, _R101 = dict(layers=(3, 4, 6, 3)), dict(layers=(3, 4, 23, 3))
_R152 = dict(layers=(3, 8, 36, 3))
_D = dict(deep_stem=True, avg_down=True, stem_width=64)
_TV = "tv"

# ImageNet ResNets (1512.03385 Table 1), torchvision's form: stride on the 3×3 ("v1.5").
_register("resnet18", RESNET, params=11_689_512, params_source=_TV,
          peers={"torchvision": "resnet18"}, **_R18)
_register("resnet34", RESNET, params=21_797_672, params_source=_TV,
          peers={"torchvision": "resnet34"}, **_R34)
_register("resnet50", RESNET, params=25_557_032, params_source=_TV,
          peers={"torchvision": "resnet50"}, **_R50)
_register("resnet101", RESNET, params=44_549_160, params_source=_TV,
          peers={"torchvision": "resnet101"}, **_R101)
_register("resnet152", RESNET, params=60_192_808, params_source=_TV,
          peers={"torchvision": "resnet152"}, **_R152)
# Their plain twins of section 3.4 (Table 2, Fig. 4): the same layers and no shortcuts, so
# the stage transitions lose their projections; plain-34 trains worse than plain-18.
for _depth, _cfg, _count in ((18, _R18, 11_515_688), (34, _R34, 21_623_848)):
    _register(f"plain{_depth}", RESNET, params=_count,
              params_source=f"resnet{_depth} without its three projection shortcuts",
              shortcut="none",
              idea=f"The plain {_depth}-layer ImageNet network of section 3.4: ResNet-{_depth}'s "
                   "layers without shortcuts. The 34-layer one has higher training error than "
                   "the 18-layer one (Fig. 4): depth alone degrades, residuals cure it.",
              **_cfg)

# Bag of Tricks Table 5, cumulative: the original, then + B, + C, + D.
_register("resnet50_v1", TRICKS, params=25_557_032, params_source=_TV, stride_3x3=False,
          idea="ResNet-50 as 1512.03385 built it, with the bottleneck's stride on the first 1x1 "
               "convolution (NVIDIA's 'v1'): the baseline of Bag of Tricks, 76.21 top-1.",
          **_R50)
_register("resnet50b", TRICKS, params=25_557_032, params_source=_TV,
          peers={"torchvision": "resnet50"},
          idea="ResNet-B: the stride moves to the 3x3 convolution so that no layer skips "
               "three quarters of its input; the same network as torchvision's resnet50.",
          **_R50)
_register("resnet50c", TRICKS, params=25_576_264, params_source="timm",
          peers={"timm": "resnet50c"}, deep_stem=True, stem_width=64,
          idea="ResNet-C: ResNet-B with three 3x3 convolutions (32, 32, 64 channels) in the "
               "stem instead of one 7x7, the same view for much less computation.",
          **_R50)
for _n, _depth, _cfg, _count in (("18", 18, _R18, 11_708_744), ("34", 34, _R34, 21_816_904),
                                 ("50", 50, _R50, 25_576_264), ("101", 101, _R101, 44_568_392),
                                 ("152", 152, _R152, 60_212_040)):
    _register(f"resnet{_n}d", TRICKS, params=_count, params_source="timm",
              peers={"timm": f"resnet{_n}d"},
              idea=f"ResNet-{_depth}-D: stride on the 3x3, a deep 3x3 stem, and average pooling "
                   "before the projection shortcut so that it reads every pixel (B + C + D).",
              **_D, **_cfg)
    # fastai's XResNet: the same B + C + D network, each block starting as the identity.
    # fastai ships no ImageNet weights for it; XResNet-50 takes ResNet-50-D's (the comparison
    # article's ladder), whose layout it shares.
    _register(f"xresnet{_n}", TRICKS, params=_count, params_source=f"timm resnet{_n}d",
              peers={"timm": "resnet50d"} if _n == "50" else None, zero_init_last=True,
              idea=f"fastai's XResNet-{_depth}: ResNet-D with every block's last batch norm "
                   "initialised to zero, so each block starts as the identity; sa=True adds "
                   "fastai's simple self-attention.",
              **_D, **_cfg)

# Pre-activation ResNets (1603.05027).
_register("resnetv2_50", PREACT, params=25_549_352, params_source="timm",
          peers={"timm": "resnetv2_50"}, preact=True, crop_pct=0.95, mean=INCEPTION_MEAN,
          std=INCEPTION_STD, **_R50)

# Squeeze-and-excitation, ResNeXt and wide ResNets.
_register("seresnet50", SENET, params=28_088_024, params_source="timm",
          peers={"timm": "seresnet50"}, attn="se", crop_pct=0.95, **_R50)
_register("seresnet101", SENET, params=49_326_872, params_source="timm",
          peers={"timm": "seresnet101"}, attn="se", **_R101)
_register("seresnet152", SENET, params=66_821_848, params_source="timm",
          peers={"timm": "seresnet152"}, attn="se", **_R152)
_register("resnext50_32x4d", RESNEXT, params=25_028_904, params_source=_TV,
          peers={"torchvision": "resnext50_32x4d"}, groups=32, base_width=4, **_R50)
_register("resnext101_32x4d", RESNEXT, params=44_177_704, params_source="timm",
          peers={"timm": "resnext101_32x4d"}, groups=32, base_width=4, interpolation="bilinear",
          **_R101)
_register("resnext101_32x8d", RESNEXT, params=88_791_336, params_source=_TV,
          peers={"torchvision": "resnext101_32x8d"}, groups=32, base_width=8, **_R101)
_register("seresnext50_32x4d", SENET, params=27_559_896, params_source="timm",
          peers={"timm": "seresnext50_32x4d"}, attn="se", groups=32, base_width=4,
          idea="SE-ResNeXt-50 (32x4d): ResNeXt's grouped bottleneck with squeeze-and-"
               "excitation reweighing each block's channels before the addition.",
          **_R50)
_register("seresnext101_32x4d", SENET, params=48_955_416, params_source="timm",
          peers={"timm": "seresnext101_32x4d"}, attn="se", groups=32, base_width=4,
          idea="SE-ResNeXt-101 (32x4d): the 101-layer grouped bottleneck network with "
               "squeeze-and-excitation on every block; the largest SE-ResNeXt of the "
               "comparison article.",
          **_R101)
_register("wide_resnet50_2", WIDE, params=68_883_240, params_source=_TV,
          peers={"torchvision": "wide_resnet50_2"}, base_width=128, **_R50)

# The SENet authors' Caffe release (pretrainedmodels' port, timm's legacy_): the only ImageNet
# weights of SE-ResNet-101/152. Its SE-ResNets stride the first 1×1, its SE-ResNeXts the 3×3
# (as ResNeXt's own release does); both pool the stem Caffe's way. Same counts as timm's
# seresnet/seresnext. (timm's port adds dropout 0.2 before the classifier; the release and
# pretrainedmodels have none.)
# The Caffe release is evaluated as pretrainedmodels (and timm's legacy_) do: bilinear.
_LEGACY = dict(attn="se", stem_pool="ceil", params_source="timm", interpolation="bilinear")
for _depth, _cfg, _count in ((50, _R50, 28_088_024), (101, _R101, 49_326_872),
                             (152, _R152, 66_821_848)):
    _register(f"legacy_seresnet{_depth}", SENET, params=_count,
              peers={"timm": f"legacy_seresnet{_depth}"}, stride_3x3=False,
              idea=f"SE-ResNet-{_depth} as the SENet authors released it in Caffe (ported by "
                   "pretrainedmodels, timm's legacy_): stride on the bottleneck's first 1x1 "
                   "and a stem pool that rounds up instead of padding: the network its "
                   "released ImageNet weights need.",
              **_LEGACY, **_cfg)
for _depth, _cfg, _count in ((50, _R50, 27_559_896), (101, _R101, 48_955_416)):
    _register(f"legacy_seresnext{_depth}_32x4d", SENET, params=_count,
              peers={"timm": f"legacy_seresnext{_depth}_32x4d"}, groups=32, base_width=4,
              idea=f"SE-ResNeXt-{_depth} (32x4d) as the SENet authors released it in Caffe "
                   "(ported by pretrainedmodels, timm's legacy_): the grouped 3x3 keeps the "
                   "stride, the stem pool rounds up instead of padding; the network its "
                   "released ImageNet weights need.",
              **_LEGACY, **_cfg)

# CIFAR-10 (1512.03385 section 4.2): 6n+2 layers in three stages of 16, 32, 64 channels,
# option-A shortcuts; their plain twins for the degradation experiment (Fig. 6). The counts
# of Table 6 are for 10 classes, so the cards (1000 classes) carry none; the tests check them.
_CIFAR = dict(block="basic", widths=(16, 32, 64), stem_width=16, cifar_stem=True,
              shortcut="zero_pad", input_size=32, small_input_size=32, mean=CIFAR_MEAN,
              std=CIFAR_STD)
for _n in (3, 5, 7, 9, 18, 200):
    _register(f"resnet{6 * _n + 2}", RESNET, layers=(_n, _n, _n),
              idea=f"The CIFAR-10 ResNet-{6 * _n + 2} of section 4.2: a 3x3 stem, three stages "
                   f"of {_n} basic blocks with 16, 32 and 64 channels, and parameter-free "
                   "zero-padding shortcuts.",
              **_CIFAR)
for _n in (3, 5, 7, 9, 18):
    _register(f"plain{6 * _n + 2}", RESNET, layers=(_n, _n, _n),
              **{**_CIFAR, "shortcut": "none"},
              idea=f"The plain twin of ResNet-{6 * _n + 2}: the same layers without shortcuts. "
                   "Deeper plain nets train worse (Fig. 6): the degradation problem.")
# 9n+2 layers of pre-activation bottlenecks (64, 128, 256 channels out), projection
# shortcuts where the shape changes and, as in the paper's code, the stride on the first 1×1.
for _depth in (164, 1001):
    _n = (_depth - 2) // 9
    _register(f"preact_resnet{_depth}", PREACT, layers=(_n, _n, _n), preact=True,
              stride_3x3=False, **{**_CIFAR, "block": "bottleneck", "shortcut": "projection"},
              idea=f"The CIFAR pre-activation ResNet-{_depth}: {_n} bottleneck blocks per stage, "
                   "BN-ReLU before every convolution and nothing on the shortcut; ResNet-1001 "
                   "reaches 4.92% CIFAR-10 error.")
