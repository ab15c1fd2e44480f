"""RegNet (Radosavovic, Kosaraju, Girshick, He & Dollár, "Designing Network Design Spaces",
CVPR 2020, 2003.13678).

Instead of searching for one good network, the paper searches for a good *design space*, a
population of networks, and judges a space by the error distribution (EDF) of ~500 models
sampled from it and trained briefly. It starts from AnyNet: a stem (3×3/2 convolution, 32
channels), a body of four stages and a head (pool, linear). Stage i repeats d_i blocks of
width w_i, bottleneck ratio b_i and group width g_i, 16 free numbers in all (AnyNetX). Each
simplification that leaves the EDF no worse is kept: one bottleneck ratio and one group
width for all stages, widths and depths that never shrink from stage to stage. The good
networks that remain share a striking regularity: their block widths grow roughly
*linearly* with the block index j. RegNet makes that the rule, with six numbers:

    u_j = w0 + wa·j             (0 <= j < d)   a linear ramp of widths,
    s_j = round(log(u_j / w0) / log(wm))       its position on a geometric grid of step wm,
    w_j = w0 · wm^s_j, rounded to a multiple of 8,

so the ramp is quantised into a few widths, and the blocks of equal width form a stage
(four, for the published models). Each stage's width is then adjusted to a multiple of its
group width so that the grouped 3×3 convolution divides evenly. The best spaces keep the
bottleneck ratio at 1 (no bottleneck: the 3×3 runs at the block's full width), use
wm ≈ 2.5 and about 20 blocks whatever the budget: a bigger budget buys width, not depth.

The block is ResNeXt's X block: 1×1 conv, 3×3 group conv (the stage's stride here, on the
first block), 1×1 conv, each with batch norm, ReLU after the first two and after the
addition; the shortcut is a strided 1×1 projection where the shape changes. RegNetY adds
squeeze-excitation after the 3×3 convolution, its squeeze width a quarter of the *block's
input* width (pycls, torchvision and timm all size it so), not of the width it reweighs.
The named variants are the paper's models at seven budgets of multiply-adds, 200MF to 16GF
(pycls's model zoo); RegNetY-16GF is DeiT's teacher.

`small_input=True` makes the stem's 3×3 convolution stride 1, as CIFAR networks do, so a
32 px image reaches the four stages at 16, 8, 4 and 2 px.

Our tensors are named stem / stages.i.j / head; timm's (s1.b1, pycls's names) and
torchvision's (trunk_output.block1.block1-0) checkpoints load by the maps at the end.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
import torch
from torch import nn

from archlab.models.layers import (ClassifierHead, ConvNormAct, DropPath, ImageClassifier,
                                   SqueezeExcite, get_act, init_conv_bn)
from archlab.models.registry import Paper, register_model

REGNET = Paper(
    "Designing Network Design Spaces", 2020, "2003.13678", "regnet",
    "Design a space of networks, not one network: the good ones in a huge space have block "
    "widths that grow linearly with depth, so RegNet generates every network from six "
    "numbers (depth, initial width, slope, width multiplier, group width, bottleneck ratio) "
    "and quantises the linear widths into four stages; RegNetY adds squeeze-excitation.")

# Widths are multiples of 8, as the paper's quantisation (and the hardware) want.
QUANT = 8


# --------------------------------------------------------------------------------------
# The generator: six numbers -> the stages
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of a RegNet: `depth` blocks of `width` channels, grouped by `group_width`."""

    width: int
    depth: int
    group_width: int


def block_widths(w0: int, wa: float, wm: float, depth: int, quant: int = QUANT) -> list[int]:
    """Every block's width by the quantised linear rule (section 3.3, eqs. 2-4)."""
    if not (wa >= 0 and w0 > 0 and wm > 1 and w0 % quant == 0 and depth >= 1):
        raise ValueError(f"RegNet needs wa >= 0, wm > 1, depth >= 1 and w0 a positive multiple "
                         f"of {quant}; got w0={w0}, wa={wa}, wm={wm}, depth={depth}")
    widths = []
    for j in range(depth):
        u = w0 + wa * j
        s = round(math.log(u / w0) / math.log(wm))
        widths.append(int(round(w0 * wm ** s / quant)) * quant)
    return widths


def regnet_stages(w0: int, wa: float, wm: float, depth: int, group_width: int,
                  bottleneck_ratio: float = 1.0) -> list[Stage]:
    """The stages of the RegNet (w0, wa, wm, depth, group width, bottleneck ratio): blocks of
    equal width form a stage; each stage's bottleneck width is then rounded to the nearest
    multiple of its group width (a group never wider than the bottleneck), so the 3×3
    convolution splits into whole groups (pycls's `adjust_block_compatibility`)."""
    if group_width < 1 or bottleneck_ratio <= 0:
        raise ValueError(f"group_width must be >= 1 and bottleneck_ratio > 0; got "
                         f"{group_width} and {bottleneck_ratio}")
    # The widths never decrease (wa >= 0): sorted, the distinct widths are the stages in order.
    counts = Counter(block_widths(w0, wa, wm, depth))
    stages = []
    for width, n in sorted(counts.items()):
        w_b = int(width * bottleneck_ratio)
        g = min(group_width, w_b)
        w_b = max(g, int(round(w_b / g)) * g)
        stages.append(Stage(int(w_b / bottleneck_ratio), n, g))
    return stages


# --------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------


class RegNetBlock(nn.Module):
    """The X block (Fig. 4): 1×1 -> 3×3 group conv (stride) -> 1×1, plus the input; the Y
    block puts squeeze-excitation between the 3×3 and the last 1×1."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, group_width: int,
                 bottleneck_ratio: float = 1.0, se_ratio: float = 0.0, drop_path: float = 0.0,
                 act: str | type[nn.Module] = "relu") -> None:
        super().__init__()
        w_b = int(round(out_chs * bottleneck_ratio))
        self.conv1 = ConvNormAct(in_chs, w_b, 1, act=act)
        # The stride sits on the 3×3, which reads every pixel (ResNet-B's lesson).
        self.conv2 = ConvNormAct(w_b, w_b, 3, stride, groups=w_b // group_width, act=act)
        # The squeeze width follows the block's input, not the bottleneck it reweighs.
        self.se = (SqueezeExcite(w_b, rd_channels=int(round(in_chs * se_ratio)), act=act)
                   if se_ratio else nn.Identity())
        self.conv3 = ConvNormAct(w_b, out_chs, 1, act=None)
        self.shortcut = (ConvNormAct(in_chs, out_chs, 1, stride, act=None)
                         if stride != 1 or in_chs != out_chs else nn.Identity())
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        self.act = get_act(act, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act(self.drop_path(out) + self.shortcut(x))


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


class RegNet(ImageClassifier):
    """Stem, four stages generated by `regnet_stages`, head. `se_ratio=0.25` is RegNetY.

    `zero_init_last` starts every block's residual branch at zero (its last batch norm's
    scale), as timm does; the paper (pycls) leaves it off. `drop_path_rate` is stochastic
    depth, rising linearly over the blocks (not used by the paper).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 *, w0: int, wa: float, wm: float, depth: int, group_width: int,
                 bottleneck_ratio: float = 1.0, se_ratio: float = 0.0, stem_width: int = 32,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 zero_init_last: bool = False, act: str | type[nn.Module] = "relu") -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.stage_params = regnet_stages(w0, wa, wm, depth, group_width, bottleneck_ratio)
        stride = 1 if small_input else 2
        self.stem = ConvNormAct(in_chans, stem_width, 3, stride, act=act)
        n_blocks, b = sum(s.depth for s in self.stage_params), 0
        chs, stages = stem_width, []
        for i, stage in enumerate(self.stage_params):
            stride *= 2
            blocks = []
            for j in range(stage.depth):
                blocks.append(RegNetBlock(
                    chs, stage.width, 2 if j == 0 else 1, stage.group_width, bottleneck_ratio,
                    se_ratio, drop_path_rate * b / max(n_blocks - 1, 1), act))
                chs, b = stage.width, b + 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        # Every convolution is padded: a map shrinks to ceil(size / 2), never to nothing.
        self.min_input_size = 1
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        # pycls's initialisation: He (fan-out) convolutions, identity batch norms, and a
        # small normal classifier.
        init_conv_bn(self)
        if isinstance(self.head.fc, nn.Linear):
            nn.init.normal_(self.head.fc.weight, std=0.01)
            nn.init.zeros_(self.head.fc.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, RegNetBlock):
                    nn.init.zeros_(m.conv3.bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    # -- checkpoints -------------------------------------------------------------------
    checkpoint_key_maps = {
        "timm": [(r"\.downsample\.", ".shortcut.")],
        "torchvision": [
            (r"^stem\.0\.", "stem.conv."), (r"^stem\.1\.", "stem.bn."),
            (r"\.proj\.0\.", ".shortcut.conv."), (r"\.proj\.1\.", ".shortcut.bn."),
            *[(rf"\.f\.{letter}\.0\.", f".conv{i}.conv.") for i, letter in enumerate("abc", 1)],
            *[(rf"\.f\.{letter}\.1\.", f".conv{i}.bn.") for i, letter in enumerate("abc", 1)],
            (r"\.f\.se\.", ".se."), (r"^fc\.", "head.fc."),
        ],
    }

    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        out = super().convert_checkpoint(state_dict, source)
        if source not in _BLOCK_ADDRESS:
            return out
        # A block's address needs arithmetic, which a renaming rule cannot do: the peers count
        # from 1 where our modules count from 0.
        pattern, (stage_from, block_from) = _BLOCK_ADDRESS[source]

        def address(m: re.Match) -> str:
            return f"stages.{int(m[1]) - stage_from}.{int(m[2]) - block_from}."

        return {pattern.sub(address, k): v for k, v in out.items()}


# The peers' block addresses: the pattern, and where their (stage, block) counts start.
_BLOCK_ADDRESS = {
    "timm": (re.compile(r"^s(\d+)\.b(\d+)\."), (1, 1)),
    "torchvision": (re.compile(r"^trunk_output\.block(\d+)\.block\d+-(\d+)\."), (1, 0)),
}


# --------------------------------------------------------------------------------------
# The variants: the paper's models at seven budgets of multiply-adds (pycls's model zoo)
# --------------------------------------------------------------------------------------

# timm name -> (label, w0, wa, wm, depth, group width, parameters (timm), torchvision name
# when torchvision's network is the same one). torchvision rounds the width to its group
# width with make_divisible for RegNetX-400MF, RegNetY-800MF and RegNetY-8GF, which changes
# their widths; those keep timm (pycls's rounding) as their only peer.
_X = {
    "regnetx_002": ("200MF", 24, 36.44, 2.49, 13, 8, 2_684_792, None),
    "regnetx_004": ("400MF", 24, 24.48, 2.54, 22, 16, 5_157_512, None),
    "regnetx_008": ("800MF", 56, 35.73, 2.28, 16, 16, 7_259_656, "regnet_x_800mf"),
    "regnetx_016": ("1.6GF", 80, 34.01, 2.25, 18, 24, 9_190_136, "regnet_x_1_6gf"),
    "regnetx_032": ("3.2GF", 88, 26.31, 2.25, 25, 48, 15_296_552, "regnet_x_3_2gf"),
    "regnetx_080": ("8.0GF", 80, 49.56, 2.88, 23, 120, 39_572_648, "regnet_x_8gf"),
    "regnetx_160": ("16GF", 216, 55.59, 2.1, 22, 128, 54_278_536, "regnet_x_16gf"),
}
_Y = {
    "regnety_002": ("200MF", 24, 36.44, 2.49, 13, 8, 3_162_996, None),
    "regnety_004": ("400MF", 48, 27.89, 2.09, 16, 8, 4_344_144, "regnet_y_400mf"),
    "regnety_008": ("800MF", 56, 38.84, 2.4, 14, 16, 6_263_168, None),
    "regnety_016": ("1.6GF", 48, 20.71, 2.65, 27, 24, 11_202_430, "regnet_y_1_6gf"),
    "regnety_032": ("3.2GF", 80, 42.63, 2.66, 21, 24, 19_436_338, "regnet_y_3_2gf"),
    "regnety_080": ("8.0GF", 192, 76.82, 2.19, 17, 56, 39_180_068, None),
    "regnety_160": ("16GF", 200, 106.23, 2.48, 18, 112, 83_590_140, "regnet_y_16gf"),
}


# Weights only timm has are evaluated as timm evaluates them: bicubic, and for these a
# larger centre crop than 0.875.
_TIMM_CROP = {"regnety_080": 0.95}


def _register(name: str, row: tuple, se_ratio: float) -> None:
    label, w0, wa, wm, depth, group_width, params, tv_name = row
    kind = "Y" if se_ratio else "X"
    peers = {"timm": name, **({"torchvision": tv_name} if tv_name else {})}
    view = {} if tv_name else dict(interpolation="bicubic",
                                   crop_pct=_TIMM_CROP.get(name, 0.875))
    teacher = " DeiT's teacher (82.9% top-1 in 2012.12877)." if name == "regnety_160" else ""
    se = ", with squeeze-excitation (1/4 of each block's input width)" if se_ratio else ""
    register_model(
        name, RegNet, paper=REGNET, params=params, params_source="timm", peers=peers,
        idea=f"RegNet{kind}-{label}: the paper's {kind} network for {label} of "
             f"multiply-adds at 224 px, generated from depth {depth}, w0={w0}, wa={wa}, "
             f"wm={wm} and group width {group_width}{se}.{teacher}",
        w0=w0, wa=wa, wm=wm, depth=depth, group_width=group_width, se_ratio=se_ratio, **view)


for _name, _row in _X.items():
    _register(_name, _row, se_ratio=0.0)
for _name, _row in _Y.items():
    _register(_name, _row, se_ratio=0.25)
