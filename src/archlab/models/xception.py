"""Xception (Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions", 2017).

An Inception module splits a convolution's work in two: 1×1 convolutions look for
correlations across channels, then 3×3 convolutions look for spatial correlations within a
few groups of channels. Chollet pushes that hypothesis to its extreme: one group per
channel. A depthwise convolution filters each channel on its own, a pointwise (1×1)
convolution mixes the channels, and the two kinds of correlation are mapped entirely
separately. That is the depthwise separable convolution, and Xception ("extreme
Inception") is built from nothing else.

The network is a linear stack of 36 convolutional layers in 14 modules, read as three flows
(Figure 5): the entry flow cuts the 299 px image to 19×19×728 with a strided stem and three
residual modules; the middle flow repeats one residual module of three separable
convolutions eight times at 19×19×728; the exit flow widens to 1024, 1536 and 2048 channels
at 10×10 before global average pooling. Every module but the first and last has a residual
connection, a strided 1×1 projection where the shape changes, since the paper found the
network converges much faster with them (Figure 9). With about as many parameters as
Inception v3 (22.9 M against 23.6 M) it is better on ImageNet (79.0% against 78.2% top-1)
and markedly better on JFT: the gain comes from using the parameters more efficiently,
not from more of them.

Two details matter. Unlike Inception modules there is no non-linearity between the
depthwise and the pointwise convolution: the paper tried ELU and ReLU there and found that
no activation trains faster and ends better (Figure 10). And batch normalisation follows
the separable convolution, not its depthwise half, as in Keras' SeparableConv2D. The ReLU
sits before each separable convolution inside a module, so a module's output, the sum of
its branch and its shortcut, is not activated; the next module's first ReLU does that.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from archlab.models.layers import (ClassifierHead, ConvNormAct, ImageClassifier, get_act,
                                   init_conv_bn)
from archlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, Paper, register_model

XCEPTION = Paper(
    "Xception: Deep Learning with Depthwise Separable Convolutions", 2017, "1610.02357",
    "xception",
    "The extreme of the Inception hypothesis: cross-channel and spatial correlations can be "
    "mapped entirely separately, so every convolution becomes a depthwise one (space) then "
    "a pointwise 1×1 one (channels), with no activation in between and residual "
    "connections around each module; Inception v3's size, better accuracy.")


class SeparableConv(nn.Module):
    """A depthwise k×k then a pointwise 1×1 convolution, with batch norm after both.

    Not layers.DepthwiseSeparableConv, which puts BN and an activation between the two
    halves as MobileNet does: Xception keeps them linear (Figure 10).
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_chs, in_chs, kernel_size, padding=kernel_size // 2,
                                 groups=in_chs, bias=False)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv_pw(self.conv_dw(x)))


class XceptionModule(nn.Module):
    """One residual module of Figure 5: (ReLU, separable conv) repeated `reps` times, a 3×3
    max pool of stride 2 when the module downsamples, and a shortcut around it all: the
    identity, or a strided 1×1 convolution with BN where channels or size change.

    `grow_first` widens at the first separable convolution (entry flow); otherwise at the
    last (the exit flow's 728 -> 1024 module). The entry flow's first module starts without
    a ReLU because the stem's ReLU has just been applied.
    """

    def __init__(self, in_chs: int, out_chs: int, reps: int, stride: int = 1,
                 start_with_relu: bool = True, grow_first: bool = True,
                 act: str | type[nn.Module] = "relu") -> None:
        super().__init__()
        if grow_first:
            widths = [in_chs] + [out_chs] * reps
        else:
            widths = [in_chs] * reps + [out_chs]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(1, reps + 1):
            if i > 1 or start_with_relu:
                # The first ReLU must not work in place: the shortcut still needs its input.
                layers[f"act{i}"] = get_act(act, inplace=i > 1)
            layers[f"sepconv{i}"] = SeparableConv(widths[i - 1], widths[i])
        if stride != 1:
            layers["pool"] = nn.MaxPool2d(3, stride, padding=1)
        self.branch = nn.Sequential(layers)
        self.shortcut = (ConvNormAct(in_chs, out_chs, 1, stride, act=None)
                         if in_chs != out_chs or stride != 1 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.shortcut(x)


def _timm_rules() -> list[tuple[str, str]]:
    """timm's legacy_xception (Cadene's port of the Keras model) names its modules block1 ..
    block12 with a flat `rep` Sequential of [ReLU, SeparableConv2d(conv1, pointwise), BN]."""
    rules = [(r"^conv1\.", "stem.conv1.conv."), (r"^bn1\.", "stem.conv1.bn."),
             (r"^conv2\.", "stem.conv2.conv."), (r"^bn2\.", "stem.conv2.bn.")]
    places = ([f"entry_flow.{i}" for i in range(3)] + [f"middle_flow.{i}" for i in range(8)]
              + ["exit_flow.module"])
    for block, ours in enumerate(places, start=1):
        offset = 0 if block == 1 else 1  # block1's rep has no leading ReLU
        for i in range(3):
            sep, bn = 3 * i + offset, 3 * i + offset + 1
            rules += [
                (fr"^block{block}\.rep\.{sep}\.conv1\.", f"{ours}.branch.sepconv{i + 1}.conv_dw."),
                (fr"^block{block}\.rep\.{sep}\.pointwise\.",
                 f"{ours}.branch.sepconv{i + 1}.conv_pw."),
                (fr"^block{block}\.rep\.{bn}\.", f"{ours}.branch.sepconv{i + 1}.bn."),
            ]
        rules += [(fr"^block{block}\.skip\.", f"{ours}.shortcut.conv."),
                  (fr"^block{block}\.skipbn\.", f"{ours}.shortcut.bn.")]
    for i, n in ((1, 3), (2, 4)):
        rules += [(fr"^conv{n}\.conv1\.", f"exit_flow.sepconv{i}.conv_dw."),
                  (fr"^conv{n}\.pointwise\.", f"exit_flow.sepconv{i}.conv_pw."),
                  (fr"^bn{n}\.", f"exit_flow.sepconv{i}.bn.")]
    return rules + [(r"^fc\.", "head.fc.")]


class Xception(ImageClassifier):
    """Xception: entry flow, middle flow (`middle_repeats` modules), exit flow, GAP, FC.

    `small_input=True` is for 28-64 px images: a stride-1, padded stem and a stride-1 first
    module, so a 32 px image reaches the exit flow at 4×4 instead of vanishing.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 middle_repeats: int = 8, middle_width: int = 728,
                 exit_widths: tuple[int, int, int] = (1024, 1536, 2048),
                 drop_rate: float = 0.5, act: str | type[nn.Module] = "relu") -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        # The stem's two 3×3 convolutions are unpadded ('valid', as in Keras): 299 -> 149 -> 147.
        stem_stride, stem_pad = (1, 1) if small_input else (2, 0)
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", ConvNormAct(in_chans, 32, 3, stem_stride, padding=stem_pad, act=act)),
            ("conv2", ConvNormAct(32, 64, 3, 1, padding=stem_pad, act=act)),
        ]))
        self.entry_flow = nn.Sequential(
            XceptionModule(64, 128, 2, stride=1 if small_input else 2, start_with_relu=False,
                           act=act),
            XceptionModule(128, 256, 2, stride=2, act=act),
            XceptionModule(256, middle_width, 2, stride=2, act=act),
        )
        self.middle_flow = nn.Sequential(*[XceptionModule(middle_width, middle_width, 3, act=act)
                                           for _ in range(middle_repeats)])
        w1, w2, w3 = exit_widths
        self.exit_flow = nn.Sequential(OrderedDict([
            ("module", XceptionModule(middle_width, w1, 2, stride=2, grow_first=False,
                                      act=act)),
            ("sepconv1", SeparableConv(w1, w2)), ("act1", get_act(act, inplace=True)),
            ("sepconv2", SeparableConv(w2, w3)), ("act2", get_act(act, inplace=True)),
        ]))
        self.num_features = w3
        # ImageNet training used dropout 0.5 before the logistic regression.
        self.head = ClassifierHead(w3, num_classes, drop_rate=drop_rate)

        # The stem's stride-2 map is left out: its valid padding leaves it 147 px, not 299/2.
        r = 1 if small_input else 4
        self.feature_info = [
            dict(num_chs=128, reduction=r, module="entry_flow.0"),
            dict(num_chs=256, reduction=2 * r, module="entry_flow.1"),
            dict(num_chs=middle_width, reduction=4 * r, module="middle_flow"),
            dict(num_chs=w3, reduction=8 * r, module="exit_flow"),
        ]
        # Two unpadded 3×3 convolutions, the first of stride 2, need 7 px; the padded
        # small_input stem and the padded pools take any size.
        self.min_input_size = 1 if small_input else 7
        # He initialisation for ReLU networks (fan-out, as timm and torchvision do for Xception).
        init_conv_bn(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.exit_flow(self.middle_flow(self.entry_flow(self.stem(x))))

    checkpoint_key_maps = {"timm": _timm_rules()}


register_model("xception", Xception, paper=XCEPTION, params=22_855_952, params_source="timm",
               peers={"timm": "legacy_xception"}, input_size=299, mean=INCEPTION_MEAN,
               std=INCEPTION_STD, interpolation="bicubic", crop_pct=0.8975)
