"""GoogLeNet (Inception v1, 1409.4842) and Inception v3 (1512.00567).

"Going Deeper with Convolutions" (Szegedy et al., 2014) won ImageNet 2014 with, the paper
says, 12× fewer parameters than AlexNet (about 5 M against 60 M; torchvision's layout, which
archlab follows, counts 6.6 M without the auxiliary heads, 9.2× fewer than its AlexNet's
61.1 M). Its unit, the Inception module (Figure 2b), looks at the same input
through 1×1, 3×3 and 5×5 convolutions and a 3×3 max pooling side by side and concatenates
the results, so the network can mix scales at every depth. What makes this affordable is the
1×1 convolution placed before the 3×3 and 5×5 ones (and after the pooling): it first reduces
the channels ("dimension reduction", from Network-in-Network), so that the expensive filters
run on a thin input. Nine modules stacked make a 22-layer network that ends in global average
pooling instead of large fully connected layers. Two auxiliary classifiers, small heads on
modules 4a and 4d, add their losses (weighted 0.3) during training to push gradient into the
middle of this deep network; at inference they are thrown away.

`reduce=False` builds the same network from Figure 2(a)'s naive modules (no 1×1 reductions,
the pooling's channels passed through), which is what the reductions are measured against:
its channels grow from 192 to 4,944 over the nine modules. `width` scales every
convolution's channels (the stem's and Table 1's), for a GoogLeNet that trains on a CPU.

Where torchvision's `googlenet`, whose layout and weights the registered `googlenet` follows,
differs from the paper:
- batch normalisation after every convolution (it came in 2015, with Inception v2);
  `norm="lrn"` gives the paper's network instead: convolutions with biases, no batch norm,
  local response normalisation twice in the stem (Figure 3);
- the "5×5" branch of every module is a 3×3 convolution, a bug kept so that the released
  weights still load (pytorch/vision#906); `kernel_5x5=5` gives the paper's 5×5;
- the auxiliary heads pool adaptively to 4×4, where the paper uses a 5×5 average pooling of
  stride 3 (also 4×4 on the 14×14 maps of a 224 px image, with slightly different windows);
- dropout before the classifier is 0.2 (the paper: 0.4);
- torchvision's `transform_input` (re-normalising ImageNet-normalised input to [-1, 1]
  inside the network, for its ported weights) is not here: the card's mean and std are
  (0.5, 0.5, 0.5), which feeds the network the [-1, 1] input those weights expect.

"Rethinking the Inception Architecture for Computer Vision" (Szegedy et al., 2015) made the
modules cheaper by factorising convolutions: a 5×5 becomes two stacked 3×3 (Figure 5, 28%
cheaper for the same field), an n×n becomes a 1×n followed by an n×1 (Figure 6, n = 7 on the
17×17 grid), and the coarsest 8×8 grid gets a wider filter bank with parallel 1×3 and 3×1
outputs (Figure 7). Resolution is reduced by "grid reduction" modules in which a strided
convolution branch and a pooling branch run side by side and are concatenated (Figure 10), so
that neither a representational bottleneck (pool then expand) nor a 3× more expensive
expand-then-pool is needed. One auxiliary head sits on the 17×17 grid; the paper found it
acts mostly as a regulariser (its batch-normalised version improves top-1 by 0.4%). The
layout here is torchvision's and timm's, which is the authors' TensorFlow release (its
35×35 modules keep a 5×5 branch next to the double-3×3 one).

Both networks return `(logits, aux...)` in training mode when they have auxiliary heads, and
plain logits in evaluation mode. `aux_weight` (a class attribute: 0.3 for GoogLeNet, from the
paper; 0.4 for Inception v3, from the authors' TF-slim training code) is what a trainer should
weigh each auxiliary loss by: loss = CE(logits) + aux_weight · Σ CE(aux). `aux_logits=None`
(the default) builds the heads at full size and leaves them out of the `small_input`
variants, as CIFAR versions of these networks do; pass True or False to decide.
"""
from __future__ import annotations

from collections import namedtuple
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.layers import ClassifierHead, ConvNormAct, ImageClassifier
from archlab.models.registry import (
    INCEPTION_MEAN, INCEPTION_STD, Paper, register_model,
)

GOOGLENET = Paper(
    "Going Deeper with Convolutions", 2014, "1409.4842", "googlenet",
    "The Inception module runs 1×1, 3×3 and 5×5 convolutions and a pooling side by side and "
    "concatenates them, with 1×1 convolutions first shrinking the channels so that the big "
    "filters are cheap. 22 layers and, the paper says, 12× fewer parameters than AlexNet; "
    "archlab's count, 6.6 M without the auxiliary heads, is 9.2× fewer than alexnet's 61.1 M. "
    "Two auxiliary classifiers feed gradient into the middle during training.")
INCEPTION_V3 = Paper(
    "Rethinking the Inception Architecture for Computer Vision", 2015, "1512.00567",
    "inception",
    "Factorise big convolutions into small ones: a 5×5 into two 3×3s, an n×n into a 1×n and "
    "an n×1; reduce the grid with a strided convolution and a pooling side by side; a "
    "batch-normalised auxiliary classifier and label smoothing as regularisers.")

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux1", "aux2"])
InceptionV3Outputs = namedtuple("InceptionV3Outputs", ["logits", "aux"])


def _conv(in_chs: int, out_chs: int, kernel_size: int | tuple[int, int], stride: int = 1,
          padding: int | tuple[int, int] = 0, norm: bool = True) -> ConvNormAct:
    # Both networks' released weights use batch norm with eps 1e-3 (TensorFlow's default).
    return ConvNormAct(in_chs, out_chs, kernel_size, stride, padding=padding, norm=norm,
                       bn_eps=1e-3)


class _AuxNetwork(ImageClassifier):
    """What GoogLeNet and Inception v3 share: a body given as an ordered list of layer names,
    auxiliary heads tapped after some of them, and the (logits, aux...) training output."""

    aux_weight: ClassVar[float]
    _outputs: ClassVar[type]
    _layers: tuple[str, ...]
    _aux_after: dict[str, str]  # body layer -> auxiliary head fed by its output

    def _run(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        aux = []
        for name in self._layers:
            x = getattr(self, name)(x)
            if with_aux and name in self._aux_after:
                aux.append(getattr(self, self._aux_after[name])(x))
        return x, aux

    def _add_head(self, num_classes: int, drop_rate: float, small_input: bool,
                  stages: tuple[tuple[int, str], ...]) -> None:
        """The pooled linear head on the last of the five stages both networks report
        (channels, module): the stem's two halvings (none for small_input), then three
        grid reductions."""
        self.num_features = stages[-1][0]
        self.head = ClassifierHead(self.num_features, num_classes, pool="avg",
                                   drop_rate=drop_rate)
        s = 1 if small_input else 4
        reductions = (max(1, s // 2), s, 2 * s, 4 * s, 8 * s)
        self.feature_info = [dict(num_chs=chs, reduction=r, module=module)
                             for (chs, module), r in zip(stages, reductions)]

    def aux_heads(self) -> list[nn.Module]:
        return [getattr(self, h) for h in self._aux_after.values() if getattr(self, h) is not None]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, with_aux=False)[0]

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        with_aux = self.training and bool(self.aux_heads())
        x, aux = self._run(x, with_aux)
        logits = self.forward_head(x)
        return self._outputs(logits, *aux) if with_aux else logits

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module | tuple[nn.Module, ...]:
        """The main classifier; with auxiliary heads, a tuple of it and theirs (all of them
        map to the classes, and all change with `reset_classifier`)."""
        aux = [h.fc_out for h in self.aux_heads()]
        return (self.head.fc, *aux) if aux else self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)
        for h in self.aux_heads():
            h.reset(num_classes)


# --------------------------------------------------------------------------------------
# GoogLeNet
# --------------------------------------------------------------------------------------


class InceptionModule(nn.Module):
    """Figure 2(b): four branches on the same input, concatenated along the channels.

    `reduce=False` is Figure 2(a), the naive module: the 3×3 and 5×5 convolutions read the
    whole input and the pooling passes all of its channels through, so the output has
    ch1x1 + ch3x3 + ch5x5 + in_chs channels and grows module by module (the reduction
    widths ch3x3red, ch5x5red and pool_proj are then unused).
    """

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, kernel_5x5: int = 3, norm: bool = True,
                 reduce: bool = True) -> None:
        super().__init__()
        self.branch1x1 = _conv(in_chs, ch1x1, 1, norm=norm)
        self.branch3x3 = nn.Sequential()
        self.branch5x5 = nn.Sequential()
        self.branch_pool = nn.Sequential()
        self.branch_pool.add_module("pool", nn.MaxPool2d(3, 1, padding=1, ceil_mode=True))
        if reduce:
            self.branch3x3.add_module("reduce", _conv(in_chs, ch3x3red, 1, norm=norm))
            self.branch5x5.add_module("reduce", _conv(in_chs, ch5x5red, 1, norm=norm))
            # The projection keeps the pooling branch from growing the channel count module
            # by module (pooling alone passes all its input channels through).
            self.branch_pool.add_module("proj", _conv(in_chs, pool_proj, 1, norm=norm))
        self.branch3x3.add_module("conv", _conv(ch3x3red if reduce else in_chs, ch3x3, 3,
                                                padding=1, norm=norm))
        self.branch5x5.add_module("conv", _conv(ch5x5red if reduce else in_chs, ch5x5,
                                                kernel_5x5, padding=kernel_5x5 // 2, norm=norm))
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + (pool_proj if reduce else in_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x),
                          self.branch_pool(x)], 1)


class _AuxClassifier(nn.Module):
    """An auxiliary classifier: its last linear layer (named `last`, as the peer names it)
    maps to the classes, so `reset_classifier` replaces it with the main one."""

    last = "fc"

    @property
    def fc_out(self) -> nn.Linear:
        return getattr(self, self.last)

    def reset(self, num_classes: int) -> None:
        setattr(self, self.last, nn.Linear(self.fc_out.in_features, num_classes))


class GoogLeNetAux(_AuxClassifier):
    """An auxiliary classifier (section 5): pool to 4×4, a 1×1 convolution to 128 channels,
    a 1024-wide fully connected layer, 70% dropout, the classes."""

    last = "fc2"

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.7,
                 norm: bool = True) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = _conv(in_chs, 128, 1, norm=norm)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.drop(self.act(self.fc1(x))))


# Table 1 of the paper: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj; "maxpool"
# halves the grid between the 28×28, 14×14 and 7×7 groups.
GOOGLENET_TABLE: tuple = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", None),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", None),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)


class GoogLeNet(_AuxNetwork):
    aux_weight = 0.3  # "the losses of the auxiliary classifiers were weighted by 0.3"
    _outputs = GoogLeNetOutputs

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 aux_logits: bool | None = None, kernel_5x5: int = 3, norm: str = "bn",
                 drop_rate: float = 0.2, aux_drop_rate: float = 0.7, reduce: bool = True,
                 width: float = 1.0) -> None:
        super().__init__()
        if norm not in ("bn", "lrn"):
            raise ValueError(f"norm must be 'bn' (torchvision's GoogLeNet) or 'lrn' (the "
                             f"paper's), got {norm!r}")
        if width <= 0:
            raise ValueError(f"width scales every convolution's channels and must be "
                             f"positive, got {width}")

        def w(chs: int) -> int:
            return max(1, round(chs * width))

        if aux_logits is None:
            aux_logits = not small_input
        self.num_classes, self.in_chans = num_classes, in_chans
        bn = norm == "bn"
        layers = []
        if small_input:
            # 28-64 px images: a 3×3 stride-1 first convolution and no first pooling.
            self.conv1 = _conv(in_chans, w(64), 3, padding=1, norm=bn)
            layers += ["conv1"]
        else:
            self.conv1 = _conv(in_chans, w(64), 7, stride=2, padding=3, norm=bn)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            layers += ["conv1", "maxpool1"]
        if not bn:
            self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)
            layers += ["lrn1"]
        self.conv2 = _conv(w(64), w(64), 1, norm=bn)
        self.conv3 = _conv(w(64), w(192), 3, padding=1, norm=bn)
        layers += ["conv2", "conv3"]
        if not bn:
            self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75)
            layers += ["lrn2"]
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        layers += ["maxpool2"]
        chs = w(192)
        out_chs = {"conv1": w(64), "conv3": chs}    # what each module hands on
        for name, widths in GOOGLENET_TABLE:
            if widths is None:
                pool = (nn.MaxPool2d(3, 2, ceil_mode=True) if name == "maxpool3"
                        else nn.MaxPool2d(2, 2, ceil_mode=True))
                setattr(self, name, pool)
            else:
                module = InceptionModule(chs, *map(w, widths), kernel_5x5=kernel_5x5,
                                         norm=bn, reduce=reduce)
                setattr(self, name, module)
                chs = out_chs[name] = module.out_chs
            layers.append(name)
        self._layers = tuple(layers)
        self._aux_after = {"inception4a": "aux1", "inception4d": "aux2"}
        if aux_logits:
            self.aux1 = GoogLeNetAux(out_chs["inception4a"], num_classes, aux_drop_rate, norm=bn)
            self.aux2 = GoogLeNetAux(out_chs["inception4d"], num_classes, aux_drop_rate, norm=bn)
        else:
            self.aux1 = self.aux2 = None
        self._add_head(num_classes, drop_rate, small_input,
                       tuple((out_chs[m], m) for m in ("conv1", "conv3", "inception3b",
                                                       "inception4e", "inception5b")))
        # A 3×3 pooling needs a map of at least 2 (its windows round up, ceil_mode), which
        # the stride-2 convolution and first two poolings leave from 15 px (4 px without them).
        self.min_input_size = 4 if small_input else 15
        self._init_weights(bn)

    @torch.no_grad()
    def _init_weights(self, bn: bool) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if bn:  # torchvision's initialisation
                    nn.init.trunc_normal_(m.weight, std=0.01, a=-2, b=2)
                else:
                    # Without batch norm a small fixed std vanishes over 22 layers; Glorot
                    # scaling, as the BVLC reproduction of the paper used.
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    checkpoint_key_maps = {
        "torchvision": [
            (r"\.branch1\.", ".branch1x1."),
            (r"\.branch2\.0\.", ".branch3x3.reduce."), (r"\.branch2\.1\.", ".branch3x3.conv."),
            (r"\.branch3\.0\.", ".branch5x5.reduce."), (r"\.branch3\.1\.", ".branch5x5.conv."),
            (r"\.branch4\.1\.", ".branch_pool.proj."),
            (r"^fc\.", "head.fc."),
        ],
    }


# --------------------------------------------------------------------------------------
# Inception v3
# --------------------------------------------------------------------------------------


class Block35(nn.Module):
    """The 35×35 module (Figure 5): the 5×5 factorised into two 3×3s (branch3x3dbl), next to
    a 1×1, a 5×5 and an average-pooling branch."""

    def __init__(self, in_chs: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _conv(in_chs, 64, 1)
        self.branch5x5_1 = _conv(in_chs, 48, 1)
        self.branch5x5_2 = _conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _conv(in_chs, 64, 1)
        self.branch3x3dbl_2 = _conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _conv(96, 96, 3, padding=1)
        self.branch_pool = _conv(in_chs, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, padding=1))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class Reduction35(nn.Module):
    """Grid reduction 35 -> 17 (Figure 10): strided convolutions beside a strided pooling,
    concatenated, so the grid halves while the channels grow (288 -> 768)."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3 = _conv(in_chs, 384, 3, stride=2)
        self.branch3x3dbl_1 = _conv(in_chs, 64, 1)
        self.branch3x3dbl_2 = _conv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, 2)], 1)


class Block17(nn.Module):
    """The 17×17 module (Figure 6, n = 7): 7×7 convolutions factorised into 1×7 then 7×1,
    which costs 2·7 = 14 weights per channel pair instead of 49."""

    def __init__(self, in_chs: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = _conv(in_chs, 192, 1)
        self.branch7x7_1 = _conv(in_chs, c7, 1)
        self.branch7x7_2 = _conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _conv(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _conv(in_chs, c7, 1)
        self.branch7x7dbl_2 = _conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _conv(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _conv(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _conv(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _conv(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, padding=1))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)


class Reduction17(nn.Module):
    """Grid reduction 17 -> 8, the same idea as Reduction35 (768 -> 1280 channels)."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3_1 = _conv(in_chs, 192, 1)
        self.branch3x3_2 = _conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _conv(in_chs, 192, 1)
        self.branch7x7x3_2 = _conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class Block8(nn.Module):
    """The 8×8 module (Figure 7): on the coarsest grid the filter bank is expanded, 1×3 and
    3×1 outputs side by side instead of in sequence, "to promote high dimensional
    representations" where there is little spatial extent left to factorise."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch1x1 = _conv(in_chs, 320, 1)
        self.branch3x3_1 = _conv(in_chs, 384, 1)
        self.branch3x3_2a = _conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _conv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _conv(in_chs, 448, 1)
        self.branch3x3dbl_2 = _conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _conv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _conv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _conv(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, padding=1))
        return torch.cat([self.branch1x1(x), b3, bd, bp], 1)


class InceptionV3Aux(_AuxClassifier):
    """The auxiliary classifier on the 17×17 grid (Figure 8): 5×5 average pooling of stride 3
    (17 -> 5), a 1×1 convolution, a 5×5 convolution to 768 (batch-normalised, the paper's
    "BN-auxiliary"), the classes."""

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = _conv(in_chs, 128, 1)
        self.conv1 = _conv(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 17:
            x = F.avg_pool2d(x, 5, 3)
        else:
            # Below 299 px the grid is under 17×17 and the 5×5/3 pooling would leave less
            # than the 5×5 that conv1 needs: pool adaptively to 5×5 instead.
            x = F.adaptive_avg_pool2d(x, 5)
        x = self.conv1(self.conv0(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_V3_KEYS = (
    (r"^Conv2d_(\d[ab])_\dx\d\.", r"conv\1."),
    (r"^Mixed_(\d[a-e])\.", r"mixed\1."),
    (r"^AuxLogits\.", "aux."),
    (r"^fc\.", "head.fc."),
)


class InceptionV3(_AuxNetwork):
    aux_weight = 0.4  # TF-slim's train_image_classifier weighs the AuxLogits loss by 0.4
    _outputs = InceptionV3Outputs

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 aux_logits: bool | None = None, drop_rate: float = 0.5) -> None:
        super().__init__()
        if aux_logits is None:
            aux_logits = not small_input
        self.num_classes, self.in_chans = num_classes, in_chans
        # The stem: 299 -> 35 with cheap 3×3 convolutions and two poolings (Table 1). For
        # 28-64 px images it keeps its resolution until the second pooling.
        p = 1 if small_input else 0
        self.conv1a = _conv(in_chans, 32, 3, stride=1 if small_input else 2, padding=p)
        self.conv2a = _conv(32, 32, 3, padding=p)
        self.conv2b = _conv(32, 64, 3, padding=1)
        self.pool1 = nn.Identity() if small_input else nn.MaxPool2d(3, 2)
        self.conv3b = _conv(64, 80, 1)
        self.conv4a = _conv(80, 192, 3, padding=p)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.mixed5b = Block35(192, pool_features=32)
        self.mixed5c = Block35(256, pool_features=64)
        self.mixed5d = Block35(288, pool_features=64)
        self.mixed6a = Reduction35(288)
        self.mixed6b = Block17(768, channels_7x7=128)
        self.mixed6c = Block17(768, channels_7x7=160)
        self.mixed6d = Block17(768, channels_7x7=160)
        self.mixed6e = Block17(768, channels_7x7=192)
        self.aux = InceptionV3Aux(768, num_classes) if aux_logits else None
        self.mixed7a = Reduction17(768)
        self.mixed7b = Block8(1280)
        self.mixed7c = Block8(2048)
        self._layers = ("conv1a", "conv2a", "conv2b", "pool1", "conv3b", "conv4a", "pool2",
                        "mixed5b", "mixed5c", "mixed5d", "mixed6a", "mixed6b", "mixed6c",
                        "mixed6d", "mixed6e", "mixed7a", "mixed7b", "mixed7c")
        self._aux_after = {"mixed6e": "aux"}
        self._add_head(num_classes, drop_rate, small_input,
                       ((64, "conv2b"), (192, "conv4a"), (288, "mixed5d"), (768, "mixed6e"),
                        (2048, "mixed7c")))
        # The unpadded stem and grid reductions need 75 px to leave a 1×1 map at the end
        # (15 px for the small_input stem).
        self.min_input_size = 15 if small_input else 75
        if not aux_logits:
            # torchvision's and timm's layouts are the same key for key, so a state dict
            # alone cannot tell them apart and the first listed wins a tie: without the
            # auxiliary head, timm (whose default has none) is the likelier source.
            self.checkpoint_key_maps = {"timm": _V3_KEYS, "torchvision": _V3_KEYS}
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # TF-slim's (and torchvision's): truncated normals of std 0.1, but much smaller for
        # the auxiliary head's last two layers so that it starts near-silent.
        small = {}
        if self.aux is not None:
            small = {self.aux.conv1.conv: 0.01, self.aux.fc: 0.001}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=small.get(m, 0.1), a=-2, b=2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    checkpoint_key_maps = {"torchvision": _V3_KEYS, "timm": _V3_KEYS}


# --------------------------------------------------------------------------------------
# Registered variants
# --------------------------------------------------------------------------------------

_INC = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD)

register_model("googlenet", GoogLeNet, paper=GOOGLENET, params=13_004_888, params_source="tv",
               peers={"torchvision": "googlenet"}, **_INC)
register_model("googlenet_paper", GoogLeNet, paper=GOOGLENET, kernel_5x5=5, norm="lrn",
               drop_rate=0.4, **_INC,
               idea="GoogLeNet as published in 2014: true 5×5 branches, no batch norm, local "
                    "response normalisation in the stem, 40% dropout; Inception modules with "
                    "1×1 reductions and two auxiliary classifiers weighted 0.3.")
register_model("inception_v3", InceptionV3, paper=INCEPTION_V3, params=27_161_264,
               params_source="tv", peers={"torchvision": "inception_v3"}, input_size=299,
               **_INC)
register_model("inception_v3_noaux", InceptionV3, paper=INCEPTION_V3, params=23_834_568,
               params_source="timm", peers={"timm": "inception_v3"}, input_size=299,
               aux_logits=False, drop_rate=0.0, **_INC, interpolation="bicubic",
               idea="Inception v3 without its auxiliary head (timm's default form, and what "
                    "runs at inference): factorised convolutions (5×5 as two 3×3s, 7×7 as "
                    "1×7 then 7×1) and grid reductions with convolution and pooling side by "
                    "side.")
