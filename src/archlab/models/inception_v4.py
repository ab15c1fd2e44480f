"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi, 1602.07261).

"Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning" (2016)
asks one question of ResNet, which had just won ImageNet 2015: are residual connections
needed to train very deep networks, or do they only make training faster? It answers with
two networks of about the same cost, one without and one with them.

Inception-v4 (Figure 9) is Inception v3 cleaned up. Inception v3 had grown module by module
under the constraints of partitioning a model across machines; with TensorFlow that was no
longer needed, so every grid gets one uniform module, repeated: a stem (Figure 3) takes a
299 px image to 35×35×384 with cheap 3×3 convolutions and two places where a strided
convolution and a pooling run side by side; then 4 Inception-A modules at 35×35 (Figure 4,
average pooling and 1×1, 3×3 and double-3×3 branches), a Reduction-A (Figure 7) to 17×17×1024,
7 Inception-B modules (Figure 5, the 7×7 factorised into 1×7 and 7×1), a Reduction-B
(Figure 8) to 8×8×1536, and 3 Inception-C modules (Figure 6, 1×3 and 3×1 outputs side by
side on the coarsest grid). Every module concatenates its branches ("filter concat").

Inception-ResNet (Figure 15) replaces each concatenation by a residual sum: the branches,
fewer and thinner than Inception's, are concatenated, a 1×1 convolution with no activation
("filter expansion", Figures 16, 17 and 19) brings them back to the input's width, and the
result is added to the input before a ReLU. Batch norm sits on the ordinary layers but not on
the sums, whose large activations would cost memory, so that more blocks fit on one GPU.
With more than about 1000 filters the paper's residual networks "died" early in training
(the last layers output zeros), whatever the learning rate; scaling each residual down
before the sum, by factors between 0.1 and 0.3 (section 3.3), made them train. The answer to
the question: the residual version trains clearly faster and ends a little better, but
Inception-v4 reaches about the same accuracy without shortcuts, so residuals are not what
makes depth trainable.

The modules, their branches and the branches' order are timm's (`inception_v4`,
`inception_resnet_v2`), whose weights are the authors' TF-slim release; where that release
differs from the paper it is followed, so that the weights load:
- Inception-ResNet-v2 does not start with Figure 3's stem: it keeps Inception v3's stem and
  ends it with a module like Inception v3's 35×35 one (`mixed5b`: 1×1, 5×5, double-3×3 and
  pooling branches), which hands on 35×35×320 instead of 384;
- its residual blocks are as wide as that input: 320 channels at 35×35, 1088 at 17×17
  and 2080 at 8×8 (Figures 16-19 draw 384, 1154 and 2048), and a final 1×1 convolution
  (`conv7b`) widens the 8×8 map to 1536 before the pooling;
- it repeats the blocks 10, 20 and 10 times (Figure 15 draws 5, 10 and 5), and the last
  block has no ReLU and no scaling;
- the residual scales are 0.17, 0.10 and 0.20 for the 35×35, 17×17 and 8×8 blocks, picked
  from the paper's 0.1-0.3;
- where a figure lists an n×1 and a 1×n factor in one order the release sometimes applies
  them in the other (the second 7×7 branch of Inception-B starts with 7×1);
- TF-slim trains both networks with an auxiliary classifier on the 17×17 grid, which timm's
  port, and so this file, leaves out.
In the figures a "V" marks a convolution or pooling without padding ('valid'); all others
keep the grid ('same'). Dropout before the classifier keeps 80% of the units (Figures 9 and
15). The `small_input` variants keep the stem at the image's size (stride 1, padded) up to
its last reduction, so a 32 px image reaches the three grids at 15, 7 and 3.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from archlab.models.layers import (ClassifierHead, ConvNormAct, ImageClassifier, get_act,
                                   init_conv_bn)
from archlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, Paper, register_model

INCEPTION_V4 = Paper(
    "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning", 2016,
    "1602.07261", "inception_v4",
    "Inception v3 made uniform (one module type per grid, repeated) and, in Inception-ResNet, "
    "each module's concatenation replaced by a residual sum with the residual scaled down "
    "before it is added; the residual version trains much faster, but plain Inception-v4 "
    "gets about as far without shortcuts.")


def _conv(in_chs: int, out_chs: int, kernel_size: int | tuple[int, int], stride: int = 1,
          valid: bool = False, act: str = "relu") -> ConvNormAct:
    """A convolution, batch norm and ReLU; `valid` is the figures' "V" (no padding), the
    rest are padded to keep the grid. Batch norm's eps is TF-slim's 1e-3."""
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    padding = (0, 0) if valid else (k[0] // 2, k[1] // 2)
    return ConvNormAct(in_chs, out_chs, k, stride, padding=padding, bn_eps=1e-3, act=act)


def _avg_pool() -> nn.AvgPool2d:
    # TensorFlow's 'same' average pooling divides by the number of real pixels under the
    # window, not by 9, at the border.
    return nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)


def _max_pool(valid: bool = True) -> nn.MaxPool2d:
    """The reductions' 3×3 max pooling of stride 2 ("V"); without `valid`, the small-input
    stem's stride-1 padded stand-in."""
    return nn.MaxPool2d(3, 2) if valid else nn.MaxPool2d(3, 1, padding=1)


class Concat(nn.Module):
    """Branches side by side on the same input, concatenated along the channels: the
    "filter concat" that every module of both networks ends with."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.num_branches = len(branches)
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)


# --------------------------------------------------------------------------------------
# Inception-v4
# --------------------------------------------------------------------------------------


class Stem(nn.Sequential):
    """Figure 3: 299×299×3 -> 35×35×384. Three 3×3 convolutions, then three places where
    two branches run side by side (a strided pooling beside a strided convolution, twice,
    and two 3×3 'valid' convolutions in between), so that the grid shrinks without a
    representational bottleneck. `small_input` makes everything before the last of them
    stride 1 and padded."""

    def __init__(self, in_chans: int, small_input: bool = False, act: str = "relu") -> None:
        big = not small_input
        s = 2 if big else 1
        super().__init__(OrderedDict([
            ("conv1a", _conv(in_chans, 32, 3, s, valid=big, act=act)),     # 149×149×32
            ("conv2a", _conv(32, 32, 3, valid=big, act=act)),              # 147×147×32
            ("conv2b", _conv(32, 64, 3, act=act)),                         # 147×147×64
            ("mixed3a", Concat(_max_pool(valid=big),                       # 73×73×160
                               _conv(64, 96, 3, s, valid=big, act=act))),
            ("mixed4a", Concat(                                            # 71×71×192
                nn.Sequential(_conv(160, 64, 1, act=act),
                              _conv(64, 96, 3, valid=big, act=act)),
                nn.Sequential(_conv(160, 64, 1, act=act), _conv(64, 64, (1, 7), act=act),
                              _conv(64, 64, (7, 1), act=act),
                              _conv(64, 96, 3, valid=big, act=act)))),
            ("mixed5a", Concat(_conv(192, 192, 3, 2, valid=True, act=act),  # 35×35×384
                               _max_pool())),
        ]))


class InceptionA(Concat):
    """Figure 4, the 35×35 module: average pooling then 1×1, a 1×1, a 3×3 and two stacked
    3×3s (a 5×5's field), 96 channels each: 384 in, 384 out."""

    def __init__(self, in_chs: int = 384, act: str = "relu") -> None:
        super().__init__(
            _conv(in_chs, 96, 1, act=act),
            nn.Sequential(_conv(in_chs, 64, 1, act=act), _conv(64, 96, 3, act=act)),
            nn.Sequential(_conv(in_chs, 64, 1, act=act), _conv(64, 96, 3, act=act),
                          _conv(96, 96, 3, act=act)),
            nn.Sequential(_avg_pool(), _conv(in_chs, 96, 1, act=act)))


class ReductionA(Concat):
    """Figure 7, 35×35 -> 17×17, shared by all the paper's networks with Table 1's widths
    (k, l, m, n): a strided 3×3 (n), a 1×1 (k) then 3×3 (l) then strided 3×3 (m), and a
    strided max pooling, side by side: in_chs + n + m channels out."""

    def __init__(self, in_chs: int, k: int, l: int, m: int, n: int,  # noqa: E741 (Table 1)
                 act: str = "relu") -> None:
        super().__init__(
            _conv(in_chs, n, 3, 2, valid=True, act=act),
            nn.Sequential(_conv(in_chs, k, 1, act=act), _conv(k, l, 3, act=act),
                          _conv(l, m, 3, 2, valid=True, act=act)),
            _max_pool())


class InceptionB(Concat):
    """Figure 5, the 17×17 module: 7×7 fields factorised into a 1×7 and a 7×1 (14 weights
    per channel pair instead of 49), once and twice: 1024 in, 384 + 256 + 256 + 128 out."""

    def __init__(self, in_chs: int = 1024, act: str = "relu") -> None:
        super().__init__(
            _conv(in_chs, 384, 1, act=act),
            nn.Sequential(_conv(in_chs, 192, 1, act=act), _conv(192, 224, (1, 7), act=act),
                          _conv(224, 256, (7, 1), act=act)),
            nn.Sequential(_conv(in_chs, 192, 1, act=act), _conv(192, 192, (7, 1), act=act),
                          _conv(192, 224, (1, 7), act=act), _conv(224, 224, (7, 1), act=act),
                          _conv(224, 256, (1, 7), act=act)),
            nn.Sequential(_avg_pool(), _conv(in_chs, 128, 1, act=act)))


class ReductionB(Concat):
    """Figure 8, 17×17 -> 8×8: a 1×1 then strided 3×3 (192), a 1×1, 1×7, 7×1 then strided
    3×3 (320), and a strided max pooling: 1024 in, 1536 out."""

    def __init__(self, in_chs: int = 1024, act: str = "relu") -> None:
        super().__init__(
            nn.Sequential(_conv(in_chs, 192, 1, act=act),
                          _conv(192, 192, 3, 2, valid=True, act=act)),
            nn.Sequential(_conv(in_chs, 256, 1, act=act), _conv(256, 256, (1, 7), act=act),
                          _conv(256, 320, (7, 1), act=act),
                          _conv(320, 320, 3, 2, valid=True, act=act)),
            _max_pool())


class InceptionC(Concat):
    """Figure 6, the 8×8 module: on the coarsest grid the branches end in a 1×3 and a 3×1
    side by side rather than in sequence, widening the filter bank where little spatial
    extent is left: 1536 in, 256 × 6 out."""

    def __init__(self, in_chs: int = 1536, act: str = "relu") -> None:
        def split(chs: int) -> Concat:
            return Concat(_conv(chs, 256, (1, 3), act=act), _conv(chs, 256, (3, 1), act=act))

        super().__init__(
            _conv(in_chs, 256, 1, act=act),
            nn.Sequential(_conv(in_chs, 384, 1, act=act), split(384)),
            nn.Sequential(_conv(in_chs, 384, 1, act=act), _conv(384, 448, (3, 1), act=act),
                          _conv(448, 512, (1, 3), act=act), split(512)),
            nn.Sequential(_avg_pool(), _conv(in_chs, 256, 1, act=act)))


def _stage(block: type[nn.Module], n: int, *args, **kwargs) -> nn.Sequential:
    return nn.Sequential(*[block(*args, **kwargs) for _ in range(n)])


def _check_depths(depths: tuple[int, ...]) -> None:
    if len(depths) != 3 or any(d < 1 for d in depths):
        raise ValueError(f"depths are the numbers of blocks on the 35×35, 17×17 and 8×8 "
                         f"grids, three numbers of at least 1; got {depths}")


class _InceptionNet(ImageClassifier):
    """What both networks share: the head, the five stages they report and the
    initialisation."""

    def _finish(self, num_classes: int, drop_rate: float, small_input: bool,
                stages: list[tuple[int, str]]) -> None:
        self.num_features = stages[-1][0]
        self.head = ClassifierHead(self.num_features, num_classes, drop_rate=drop_rate)
        # The stem halves twice (not at all for small_input), then three reductions.
        s = 1 if small_input else 4
        reductions = (max(1, s // 2), s, 2 * s, 4 * s, 8 * s)
        self.feature_info = [dict(num_chs=c, reduction=r, module=m)
                             for (c, m), r in zip(stages, reductions)]
        # Five 3×3 'valid' stride-2 layers and two stride-1 ones leave a 1×1 map from 75 px
        # (15 px when only the last stem reduction and the two grid reductions stride).
        self.min_input_size = 15 if small_input else 75
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)


class InceptionV4(_InceptionNet):
    """Figure 9: stem, 4 × Inception-A, Reduction-A, 7 × Inception-B, Reduction-B,
    3 × Inception-C, average pooling, dropout, softmax. `depths` changes the repeats."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 depths: tuple[int, int, int] = (4, 7, 3), drop_rate: float = 0.2,
                 act: str = "relu") -> None:
        super().__init__()
        _check_depths(depths)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.stem = Stem(in_chans, small_input, act)
        self.inception_a = _stage(InceptionA, depths[0], act=act)
        self.reduction_a = ReductionA(384, k=192, l=224, m=256, n=384, act=act)
        self.inception_b = _stage(InceptionB, depths[1], act=act)
        self.reduction_b = ReductionB(act=act)
        self.inception_c = _stage(InceptionC, depths[2], act=act)
        self._finish(num_classes, drop_rate, small_input,
                     [(64, "stem.conv2b"), (160, "stem.mixed3a"), (384, "inception_a"),
                      (1024, "inception_b"), (1536, "inception_c")])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception_a(self.stem(x))
        x = self.inception_b(self.reduction_a(x))
        return self.inception_c(self.reduction_b(x))

    checkpoint_key_maps = {"timm": [
        # timm keeps the whole body in one `features` Sequential, numbered in Figure 9's order.
        *[(fr"^features\.{i}\.", f"stem.{n}.") for i, n in enumerate(("conv1a", "conv2a",
                                                                      "conv2b"))],
        (r"^features\.3\.conv\.", "stem.mixed3a.branch1."),
        (r"^features\.4\.", "stem.mixed4a."),
        (r"^features\.5\.conv\.", "stem.mixed5a.branch0."),
        *[(fr"^features\.{6 + i}\.", f"inception_a.{i}.") for i in range(4)],
        (r"^features\.10\.", "reduction_a."),
        *[(fr"^features\.{11 + i}\.", f"inception_b.{i}.") for i in range(7)],
        (r"^features\.18\.", "reduction_b."),
        *[(fr"^features\.{19 + i}\.", f"inception_c.{i}.") for i in range(3)],
        # Inception-C's split branches are flat attributes there (branch1_1a, branch1_1b).
        (r"\.branch(\d)_(\d)a\.", r".branch\1.\2.branch0."),
        (r"\.branch(\d)_(\d)b\.", r".branch\1.\2.branch1."),
        (r"\.branch(\d)_(\d)\.", r".branch\1.\2."),
        (r"^last_linear\.", "head.fc."),
    ]}


# --------------------------------------------------------------------------------------
# Inception-ResNet-v2
# --------------------------------------------------------------------------------------


class InceptionResNetBlock(Concat):
    """Figure 20's residual Inception block: the branches concatenated, a 1×1 "filter
    expansion" without batch norm or activation back to the input's `chs` channels, scaled
    by `scale` and added to the input, then a ReLU (left out of the release's last block)."""

    def __init__(self, chs: int, width: int, scale: float, *branches: nn.Module,
                 act: str = "relu", final_act: bool = True) -> None:
        super().__init__(*branches)
        self.expand = nn.Conv2d(width, chs, 1)
        self.scale = scale
        self.act = get_act(act if final_act else None, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Section 3.3: wide residual Inceptions die early in training unless the residual
        # is scaled down before it is added.
        return self.act(x + self.scale * self.expand(super().forward(x)))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class InceptionResNetA(InceptionResNetBlock):
    """Figure 16, the 35×35 block: a 1×1, a 3×3 and a double 3×3 (32, 32 and 64 channels)."""

    def __init__(self, chs: int = 320, scale: float = 0.17, act: str = "relu") -> None:
        super().__init__(
            chs, 32 + 32 + 64, scale,
            _conv(chs, 32, 1, act=act),
            nn.Sequential(_conv(chs, 32, 1, act=act), _conv(32, 32, 3, act=act)),
            nn.Sequential(_conv(chs, 32, 1, act=act), _conv(32, 48, 3, act=act),
                          _conv(48, 64, 3, act=act)),
            act=act)


class InceptionResNetB(InceptionResNetBlock):
    """Figure 17, the 17×17 block: a 1×1 and a 1×7 then 7×1 (192 channels each)."""

    def __init__(self, chs: int = 1088, scale: float = 0.10, act: str = "relu") -> None:
        super().__init__(
            chs, 192 + 192, scale,
            _conv(chs, 192, 1, act=act),
            nn.Sequential(_conv(chs, 128, 1, act=act), _conv(128, 160, (1, 7), act=act),
                          _conv(160, 192, (7, 1), act=act)),
            act=act)


class InceptionResNetC(InceptionResNetBlock):
    """Figure 19, the 8×8 block: a 1×1 (192) and a 1×3 then 3×1 (256)."""

    def __init__(self, chs: int = 2080, scale: float = 0.20, act: str = "relu",
                 final_act: bool = True) -> None:
        super().__init__(
            chs, 192 + 256, scale,
            _conv(chs, 192, 1, act=act),
            nn.Sequential(_conv(chs, 192, 1, act=act), _conv(192, 224, (1, 3), act=act),
                          _conv(224, 256, (3, 1), act=act)),
            act=act, final_act=final_act)


class StemV3(nn.Sequential):
    """The release's stem for Inception-ResNet-v2: Inception v3's (299 -> 35 with 3×3
    convolutions and two max poolings), then `mixed5b`, a 35×35 module with 1×1, 5×5,
    double-3×3 and pooling branches: 35×35×320. `small_input` keeps stride 1 until the last
    pooling."""

    def __init__(self, in_chans: int, small_input: bool = False, act: str = "relu") -> None:
        big = not small_input
        super().__init__(OrderedDict([
            ("conv1a", _conv(in_chans, 32, 3, 2 if big else 1, valid=big, act=act)),  # 149
            ("conv2a", _conv(32, 32, 3, valid=big, act=act)),                          # 147
            ("conv2b", _conv(32, 64, 3, act=act)),
            ("pool3a", _max_pool() if big else nn.Identity()),                         # 73
            ("conv3b", _conv(64, 80, 1, act=act)),
            ("conv4a", _conv(80, 192, 3, valid=big, act=act)),                         # 71
            ("pool5a", _max_pool()),                                                   # 35
            ("mixed5b", Concat(
                _conv(192, 96, 1, act=act),
                nn.Sequential(_conv(192, 48, 1, act=act), _conv(48, 64, 5, act=act)),
                nn.Sequential(_conv(192, 64, 1, act=act), _conv(64, 96, 3, act=act),
                              _conv(96, 96, 3, act=act)),
                nn.Sequential(_avg_pool(), _conv(192, 64, 1, act=act)))),
        ]))


class InceptionResNetV2(_InceptionNet):
    """Figure 15 as released: stem, 10 × Inception-ResNet-A, Reduction-A (Table 1: k = l =
    256, m = n = 384), 20 × Inception-ResNet-B, Reduction-B (Figure 18), 10 ×
    Inception-ResNet-C (the last without ReLU or scaling), a 1×1 convolution to 1536, average
    pooling, dropout, softmax. `depths` and `scales` change the repeats and residual scales
    of the three grids."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 depths: tuple[int, int, int] = (10, 20, 10),
                 scales: tuple[float, float, float] = (0.17, 0.10, 0.20),
                 drop_rate: float = 0.2, act: str = "relu") -> None:
        super().__init__()
        _check_depths(depths)
        self.num_classes, self.in_chans = num_classes, in_chans
        self.stem = StemV3(in_chans, small_input, act)
        self.inception_resnet_a = _stage(InceptionResNetA, depths[0], 320, scales[0], act)
        self.reduction_a = ReductionA(320, k=256, l=256, m=384, n=384, act=act)  # 1088
        self.inception_resnet_b = _stage(InceptionResNetB, depths[1], 1088, scales[1], act)
        self.reduction_b = Concat(                                                # 2080
            nn.Sequential(_conv(1088, 256, 1, act=act), _conv(256, 384, 3, 2, True, act)),
            nn.Sequential(_conv(1088, 256, 1, act=act), _conv(256, 288, 3, 2, True, act)),
            nn.Sequential(_conv(1088, 256, 1, act=act), _conv(256, 288, 3, act=act),
                          _conv(288, 320, 3, 2, True, act)),
            _max_pool())
        self.inception_resnet_c = nn.Sequential(
            *[InceptionResNetC(2080, scales[2], act) for _ in range(depths[2] - 1)],
            InceptionResNetC(2080, 1.0, act, final_act=False))
        self.conv7b = _conv(2080, 1536, 1, act=act)
        self._finish(num_classes, drop_rate, small_input,
                     [(64, "stem.conv2b"), (192, "stem.conv4a"), (320, "inception_resnet_a"),
                      (1088, "inception_resnet_b"), (1536, "conv7b")])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception_resnet_a(self.stem(x))
        x = self.inception_resnet_b(self.reduction_a(x))
        return self.conv7b(self.inception_resnet_c(self.reduction_b(x)))

    @property
    def checkpoint_key_maps(self) -> dict[str, list[tuple[str, str]]]:  # type: ignore[override]
        last = len(self.inception_resnet_c) - 1
        return {"timm": [
            (r"^conv2d_7b\.", "conv7b."),
            (r"^conv2d_(\d[ab])\.", r"stem.conv\1."),
            (r"^mixed_5b\.", "stem.mixed5b."),
            (r"^repeat\.", "inception_resnet_a."),
            (r"^mixed_6a\.", "reduction_a."),
            (r"^repeat_1\.", "inception_resnet_b."),
            (r"^mixed_7a\.", "reduction_b."),
            (r"^repeat_2\.", "inception_resnet_c."),
            (r"^block8\.", f"inception_resnet_c.{last}."),
            (r"\.conv2d\.", ".expand."),
            (r"^classif\.", "head.fc."),
        ]}


# --------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------

# TF-slim's weights as timm evaluates them: [-1, 1] inputs, bicubic resizing.
_TF = dict(input_size=299, mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic")

register_model("inception_v4", InceptionV4, paper=INCEPTION_V4, params=42_679_816,
               params_source="timm", peers={"timm": "inception_v4"}, **_TF)
register_model("inception_resnet_v2", InceptionResNetV2, paper=INCEPTION_V4,
               params=55_843_464, params_source="timm", peers={"timm": "inception_resnet_v2"},
               **_TF, crop_pct=0.8975,
               idea="Inception modules made residual: each block's branches are concatenated, "
                    "widened back by a 1×1 convolution, scaled down (0.1-0.3) and added to "
                    "its input, which keeps very wide residual networks from dying early in "
                    "training and makes them train much faster than plain Inception.")
