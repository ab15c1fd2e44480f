"""MobileNet v1 (Howard et al., 2017) and MobileNet v2 (Sandler et al., 2018).

MobileNet v1 builds a whole network from depthwise separable convolutions: a 3×3 depthwise
convolution filters each channel on its own, a 1×1 pointwise convolution combines them,
each followed by batch norm and ReLU. For a k×k convolution with N output channels this
costs 1/N + 1/k² of a standard one, 8-9 times fewer multiply-adds for k = 3, at a small
loss of accuracy. 95% of the computation then sits in the 1×1 convolutions, which are
plain matrix multiplications (Table 2). Two knobs trade accuracy for cost: the width
multiplier α thins every layer to αM channels, cutting computation and parameters by
about α²; the resolution multiplier ρ shrinks the input image, cutting computation by ρ²
and leaving the parameters unchanged. The 1.0 MobileNet-224 reaches 70.6% top-1 with
4.2 M parameters and 569 M multiply-adds, against VGG-16's 71.5% with 138 M and 15.3 G.

MobileNet v2 keeps the depthwise convolution but turns the residual block inside out.
A ResNet bottleneck is wide-thin-wide with the shortcut between the wide ends; the
inverted residual is thin-wide-thin: a 1×1 convolution expands the thin input six times, a
3×3 depthwise convolution filters the wide tensor cheaply, and a 1×1 convolution projects
back to a thin output, with the shortcut between the thin ends. The projection is linear:
the paper argues that the information of interest lies on a low-dimensional manifold, and
that a ReLU applied in a low-dimensional space destroys part of it (Figure 1), so the
bottleneck keeps no activation; the ReLU6 elsewhere is chosen for low-precision inference.
The network is the paper's Table 2, rows (t, c, n, s): expansion factor, output channels,
repeats, stride of the first repeat. The width multiplier rounds every layer to a multiple
of 8 but, below 1.0, spares the last 1×1 convolution (1280 channels), as the paper does.
It reaches 72.0% top-1 with 3.4 M parameters and 300 M multiply-adds.

Both networks are ImageNet classifiers at 224 px. `small_input=True` drops the stride of
the stem and of the first strided stage, so a 32 px image ends at 4×4.
"""
from __future__ import annotations

import torch
from torch import nn

from archlab.models.layers import (
    ClassifierHead, ConvNormAct, DepthwiseSeparableConv, ImageClassifier, InvertedResidual,
    make_divisible,
)
from archlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, Paper, register_model

MOBILENET_V1 = Paper(
    "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
    2017, "1704.04861", "mobilenet",
    "Build the whole network from depthwise separable convolutions (a per-channel 3×3 "
    "filter, then a 1×1 that mixes channels), 8-9× cheaper than standard ones; a width "
    "multiplier α and a resolution multiplier ρ trade accuracy for cost by α² and ρ².")
MOBILENET_V2 = Paper(
    "MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018, "1801.04381", "mobilenet",
    "Inverted residuals with linear bottlenecks: expand a thin tensor 6×, filter it with a "
    "cheap depthwise 3×3, project back to thin with no activation (a ReLU in low dimension "
    "destroys information), and join the thin ends with a shortcut.")

# MobileNet v1, Table 1, grouped into stages that share a resolution:
# (output channels, repeats, stride of the first repeat), after a 32-channel stride-2 stem.
# (Table 1 prints the second 1024-channel layer with stride 2; its 7×7 output shows it is 1.)
V1_LAYOUT = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
# MobileNet v2, Table 2: (expansion t, output channels c, repeats n, stride s).
V2_TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def _small_input_strides(strides: list[int], small_input: bool) -> list[int]:
    """The stem's and the first strided stage's strides become 1 for 28-64 px images."""
    strides = list(strides)
    if small_input:
        strides[0] = 1
        first = next(i for i, s in enumerate(strides[1:], start=1) if s > 1)
        strides[first] = 1
    return strides


def _stage_info(stage_chs: list[int], strides: list[int], stem_stride: int) -> list[dict]:
    """One feature_info entry per resolution: the last stage before the next stride."""
    info, reduction = [], stem_stride
    for i, (chs, s) in enumerate(zip(stage_chs, strides)):
        reduction *= s
        if i + 1 == len(stage_chs) or strides[i + 1] > 1:
            info.append(dict(num_chs=chs, reduction=reduction, module=f"blocks.{i}"))
    return info


def _init_weights(model: nn.Module) -> None:
    # He initialisation (fan-out) for the ReLU convolutions, a small normal for the classifier.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------
# MobileNet v1
# --------------------------------------------------------------------------------------


class MobileNetV1(ImageClassifier):
    """A 3×3 stem, then 13 depthwise separable convolutions (BN and activation after both
    halves), global average pooling and a linear classifier.

    `width_mult` is the width multiplier α; channels are rounded to multiples of
    `ch_divisor` (8, as timm does; exact for α = 1, 0.75, 0.5, 0.25). `img_size` is the
    resolution multiplier ρ as a default input size: no layer depends on it. The paper uses
    ReLU; TF-slim's released models and timm's `mobilenetv1_100` use ReLU6 (`act='relu6'`).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 width_mult: float = 1.0, img_size: int = 224, act: str | type[nn.Module] = "relu",
                 drop_rate: float = 0.0, layout: tuple = V1_LAYOUT, stem_chs: int = 32,
                 ch_divisor: int = 8) -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.width_mult, self.default_img_size = width_mult, img_size

        def width(c: int) -> int:
            return make_divisible(c * width_mult, ch_divisor)

        stem_stride, *strides = _small_input_strides([2] + [s for _, _, s in layout],
                                                     small_input)
        self.stem = ConvNormAct(in_chans, width(stem_chs), 3, stem_stride, act=act)
        stages, chs = [], width(stem_chs)
        for (c, n, _), stride in zip(layout, strides):
            blocks = []
            for i in range(n):
                blocks.append(DepthwiseSeparableConv(chs, width(c), 3, stride if i == 0 else 1,
                                                     act=act))
                chs = width(c)
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = chs
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        self.feature_info = _stage_info([width(c) for c, _, _ in layout], strides, stem_stride)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    # timm builds it with its EfficientNet builder: conv_stem, bn1, blocks.s.i.{conv_dw, bn1,
    # conv_pw, bn2}, classifier (no head convolution in mobilenetv1_100, as in the paper).
    checkpoint_key_maps = {
        "timm": [
            (r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn."),
            (r"^(blocks\.\d+\.\d+)\.conv_dw\.", r"\1.conv_dw.conv."),
            (r"^(blocks\.\d+\.\d+)\.bn1\.", r"\1.conv_dw.bn."),
            (r"^(blocks\.\d+\.\d+)\.conv_pw\.", r"\1.conv_pw.conv."),
            (r"^(blocks\.\d+\.\d+)\.bn2\.", r"\1.conv_pw.bn."),
            (r"^classifier\.", "head.fc."),
        ],
    }


# --------------------------------------------------------------------------------------
# MobileNet v2
# --------------------------------------------------------------------------------------


def _escape(name: str) -> str:
    return name.replace(".", r"\.")


def _v2_timm_rules(table: tuple) -> list[tuple[str, str]]:
    """timm builds a t = 1 row as its DepthwiseSeparableConv (conv_dw, bn1, conv_pw, bn2) and
    the others as InvertedResidual (conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3)."""
    rules = [(r"^conv_stem\.", "stem.conv."), (r"^bn1\.", "stem.bn.")]
    for s, (t, _, n, _) in enumerate(table):
        if t == 1:
            names = {"conv_dw": "conv_dw.conv", "bn1": "conv_dw.bn",
                     "conv_pw": "conv_pwl.conv", "bn2": "conv_pwl.bn"}
        else:
            names = {"conv_pw": "conv_pw.conv", "bn1": "conv_pw.bn", "conv_dw": "conv_dw.conv",
                     "bn2": "conv_dw.bn", "conv_pwl": "conv_pwl.conv", "bn3": "conv_pwl.bn"}
        rules += [(fr"^blocks\.{s}\.(\d+)\.{theirs}\.", fr"blocks.{s}.\1.{ours}.")
                  for theirs, ours in names.items()]
    return rules + [(r"^conv_head\.", "head_conv.conv."), (r"^bn2\.", "head_conv.bn."),
                    (r"^classifier\.", "head.fc.")]


def _v2_torchvision_rules(table: tuple) -> list[tuple[str, str]]:
    """torchvision numbers every block in one flat `features` Sequential (0 is the stem, the
    last is the 1×1 head convolution); inside a block, `conv` is a Sequential of
    [expand ConvBNReLU,] depthwise ConvBNReLU, projection conv, projection BN."""
    rules = [(r"^features\.0\.0\.", "stem.conv."), (r"^features\.0\.1\.", "stem.bn.")]
    f = 1
    for s, (t, _, n, _) in enumerate(table):
        theirs = (["conv.0.0", "conv.0.1", "conv.1", "conv.2"] if t == 1 else
                  ["conv.0.0", "conv.0.1", "conv.1.0", "conv.1.1", "conv.2", "conv.3"])
        ours = (["conv_dw.conv", "conv_dw.bn"] if t == 1 else
                ["conv_pw.conv", "conv_pw.bn", "conv_dw.conv", "conv_dw.bn"])
        ours += ["conv_pwl.conv", "conv_pwl.bn"]
        for i in range(n):
            rules += [(fr"^features\.{f}\.{_escape(a)}\.", f"blocks.{s}.{i}.{b}.")
                      for a, b in zip(theirs, ours)]
            f += 1
    return rules + [(fr"^features\.{f}\.0\.", "head_conv.conv."),
                    (fr"^features\.{f}\.1\.", "head_conv.bn."),
                    (r"^classifier\.1\.", "head.fc.")]


class MobileNetV2(ImageClassifier):
    """A 3×3 stem, the inverted residual stages of `table` (Table 2), a 1×1 convolution to
    1280 channels, global average pooling, dropout and a linear classifier.

    `width_mult` scales every layer, rounded to multiples of `ch_divisor`, except that the
    1280-channel head convolution only grows (α > 1), never shrinks. `img_size` is the input
    resolution the paper varies from 96 to 224; no layer depends on it.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 width_mult: float = 1.0, img_size: int = 224, act: str | type[nn.Module] = "relu6",
                 drop_rate: float = 0.2, table: tuple = V2_TABLE, stem_chs: int = 32,
                 head_chs: int = 1280, ch_divisor: int = 8) -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        self.width_mult, self.default_img_size = width_mult, img_size

        def width(c: float) -> int:
            return make_divisible(c * width_mult, ch_divisor)

        stem_stride, *strides = _small_input_strides([2] + [s for *_, s in table], small_input)
        self.stem = ConvNormAct(in_chans, width(stem_chs), 3, stem_stride, act=act)
        stages, chs = [], width(stem_chs)
        for (t, c, n, _), stride in zip(table, strides):
            blocks = []
            for i in range(n):
                # The shortcut is used wherever stride 1 keeps the shape: every repeat but
                # the first of a row.
                blocks.append(InvertedResidual(chs, width(c), 3, stride if i == 0 else 1,
                                               expand_ratio=t, act=act))
                chs = width(c)
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = make_divisible(head_chs * max(1.0, width_mult), ch_divisor)
        self.head_conv = ConvNormAct(chs, self.num_features, 1, act=act)
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)
        self.feature_info = _stage_info([width(c) for _, c, _, _ in table], strides,
                                        stem_stride)
        # The last resolution's map is the head convolution's, the one Grad-CAM looks at.
        self.feature_info[-1] = dict(num_chs=self.num_features,
                                     reduction=self.feature_info[-1]["reduction"],
                                     module="head_conv")
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_conv(self.blocks(self.stem(x)))

    checkpoint_key_maps = {"timm": _v2_timm_rules(V2_TABLE),
                           "torchvision": _v2_torchvision_rules(V2_TABLE)}


# --------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------

# timm's weights are the ones to load: evaluated with bicubic resizing (v1's on [-1, 1] too).
_TIMM = dict(interpolation="bicubic")
register_model("mobilenet_v1_100", MobileNetV1, paper=MOBILENET_V1, params=4_231_976,
               params_source="timm", peers={"timm": "mobilenetv1_100"}, mean=INCEPTION_MEAN,
               std=INCEPTION_STD, **_TIMM)
register_model("mobilenet_v1_075", MobileNetV1, paper=MOBILENET_V1, width_mult=0.75)
register_model("mobilenet_v1_050", MobileNetV1, paper=MOBILENET_V1, width_mult=0.5)
register_model("mobilenet_v1_025", MobileNetV1, paper=MOBILENET_V1, width_mult=0.25)
# The resolution multiplier ρ = 160/224: the same 4.2 M parameters, half the multiply-adds.
register_model("mobilenet_v1_100_160", MobileNetV1, paper=MOBILENET_V1, params=4_231_976,
               params_source="timm", input_size=160, img_size=160)

register_model("mobilenet_v2_100", MobileNetV2, paper=MOBILENET_V2, params=3_504_872,
               params_source="tv", peers={"torchvision": "mobilenet_v2", "timm": "mobilenetv2_100"})
register_model("mobilenet_v2_035", MobileNetV2, paper=MOBILENET_V2, params=1_677_128,
               params_source="timm", peers={"timm": "mobilenetv2_035"}, width_mult=0.35,
               **_TIMM)
register_model("mobilenet_v2_050", MobileNetV2, paper=MOBILENET_V2, params=1_968_680,
               params_source="timm", peers={"timm": "mobilenetv2_050"}, width_mult=0.5,
               **_TIMM)
register_model("mobilenet_v2_075", MobileNetV2, paper=MOBILENET_V2, params=2_636_424,
               params_source="timm", peers={"timm": "mobilenetv2_075"}, width_mult=0.75,
               **_TIMM)
register_model("mobilenet_v2_140", MobileNetV2, paper=MOBILENET_V2, params=6_108_776,
               params_source="timm", peers={"timm": "mobilenetv2_140"}, width_mult=1.4,
               **_TIMM)
