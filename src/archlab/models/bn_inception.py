"""BN-Inception, the Inception of "Batch Normalization" (Ioffe & Szegedy, 2015, 1502.03167).

Batch normalisation normalises every layer's inputs over the mini-batch, then lets the
network rescale and shift them (γ, β), so that a layer's input distribution stops drifting
as the layers below it learn ("internal covariate shift"). To show what that buys, the paper
adds it to an Inception network after every convolution, before the ReLU, and changes its
training (section 4.2.1): learning rates 5 and 30 times higher, no dropout, a fifth of the L2
weight decay, a learning rate that decays 6× faster, no local response normalisation, more
thorough shuffling and milder photometric distortions. The batch-normalised network reaches
GoogLeNet's accuracy in 14 times fewer steps and then passes it; an ensemble of six reached
4.9% top-5 validation error on ImageNet.

The network itself (the appendix, Figure 5) is GoogLeNet changed in a few places, and later
papers call it Inception v2:
- each 5×5 convolution becomes two stacked 3×3 ones (the same field, fewer weights), the
  "double 3×3" branch;
- the 28×28 grid gets three modules instead of two (3a, 3b, 3c);
- some modules pool by average, some by maximum, each followed by a 1×1 projection;
- there is no pooling layer between the modules: modules 3c and 4e halve the grid
  themselves, with stride-2 convolutions beside a stride-2 max pooling whose output is
  passed through unprojected ("max + pass through"), so the channels grow where the grid
  shrinks (320 -> 576 at 3c).

The layout here is Cadene's `pretrainedmodels` port (`bninception`), a conversion of
Yuanjun Xiong's Caffe model, whose weights are the ones people download; `checkpoint_key_maps`
reads its names. Where it differs from Figure 5:
- modules 4c and 4d project their pooling to 128 channels as the table's columns say, so they
  hand on 160 + 160 + 160 + 128 = 608 and 96 + 192 + 192 + 128 = 608 channels, and 4e passes
  608 + 192 + 256 = 1056 on to 5a; the table's output column says 576, 576 and 1024 (TF-slim's
  Inception v2 projects those two poolings to 96 to keep them);
- every convolution has a bias before its batch norm, which the norm's shift makes redundant
  (section 3.2); `conv_bias=False` leaves them out;
- the stride-2 modules' max pooling rounds its output size up (Caffe's rule) while their
  padded convolutions round down, which agree only on maps of even size; on an odd map the
  pooling here pads the last row and column with -inf, so that any input size runs, and
  where the port runs at all the two are the same.
The port expects BGR images in 0-255 minus the means (104, 117, 128); archlab's card keeps
ImageNet's RGB mean and standard deviation, for training from scratch. Its weights downloaded
by name (`pretrained="pretrainedmodels:"`) have the first convolution's input channels
turned round to RGB and carry a `pretrained_cfg` of mean (128, 117, 104)/255 and std 1/255,
so that `archlab.transforms_for(model)` feeds them what they were trained on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.layers import ClassifierHead, ConvNormAct, ImageClassifier, init_conv_bn
from archlab.models.registry import Paper, register_model

BN_INCEPTION = Paper(
    "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate "
    "Shift", 2015, "1502.03167", "bn_inception",
    "Normalise every layer's inputs over the mini-batch (then let the network rescale and "
    "shift them), so that each layer sees a stable distribution while the layers below it "
    "learn; a batch-normalised GoogLeNet, its 5×5 convolutions split into two 3×3s, trains "
    "with much higher learning rates and no dropout; the paper says it matches GoogLeNet's "
    "accuracy in 14× fewer training steps.")


def _conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, bias: bool = True,
          act: str = "relu") -> ConvNormAct:
    return ConvNormAct(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2,
                       bias=bias, act=act)


class PassThroughPool(nn.Module):
    """The stride-2 modules' 3×3 max pooling, rounding its size up as Caffe does; an odd
    map gets a row and a column of -inf first, so that its size matches the stride-2
    convolutions beside it (which round down over a padded map)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), value=float("-inf"))
        return F.max_pool2d(x, 3, 2, ceil_mode=True)


class BNInceptionModule(nn.Module):
    """One row of Figure 5: a 1×1 branch, a 1×1 reduce then 3×3, a 1×1 reduce then two
    3×3s ('double 3×3', a 5×5's field), and a pooling (average or max) with a 1×1
    projection, concatenated. A stride-2 module has no 1×1 branch, puts its stride in the
    last 3×3 of each branch, and passes its max pooling through without projection."""

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, dbl_red: int,
                 dbl: int, pool: str, pool_proj: int, bias: bool = True,
                 act: str = "relu") -> None:
        super().__init__()
        stride = 1 if ch1x1 else 2
        kw = dict(bias=bias, act=act)
        if ch1x1:
            self.branch1x1 = _conv(in_chs, ch1x1, 1, **kw)
        self.branch3x3 = nn.Sequential()
        self.branch3x3.add_module("reduce", _conv(in_chs, ch3x3red, 1, **kw))
        self.branch3x3.add_module("conv", _conv(ch3x3red, ch3x3, 3, stride, **kw))
        self.branch3x3dbl = nn.Sequential()
        self.branch3x3dbl.add_module("reduce", _conv(in_chs, dbl_red, 1, **kw))
        self.branch3x3dbl.add_module("conv1", _conv(dbl_red, dbl, 3, **kw))
        self.branch3x3dbl.add_module("conv2", _conv(dbl, dbl, 3, stride, **kw))
        self.branch_pool = nn.Sequential()
        if stride == 2:
            self.branch_pool.add_module("pool", PassThroughPool())
        elif pool == "avg":
            # Caffe's average pooling counts the zero padding in its divisor.
            self.branch_pool.add_module("pool", nn.AvgPool2d(3, 1, padding=1))
        else:
            self.branch_pool.add_module("pool", nn.MaxPool2d(3, 1, padding=1))
        if pool_proj:
            self.branch_pool.add_module("proj", _conv(in_chs, pool_proj, 1, **kw))
        self.out_chs = ch1x1 + ch3x3 + dbl + (pool_proj or in_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        if hasattr(self, "branch1x1"):
            branches.insert(0, self.branch1x1(x))
        return torch.cat(branches, 1)


# Figure 5: #1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3, pooling, pool proj.
# A row with no 1×1 branch (3c, 4e) is a stride-2 module whose pooling passes through.
BN_INCEPTION_TABLE: tuple = (
    ("inception3a", (64, 64, 64, 64, 96, "avg", 32)),
    ("inception3b", (64, 64, 96, 64, 96, "avg", 64)),
    ("inception3c", (0, 128, 160, 64, 96, "max", 0)),
    ("inception4a", (224, 64, 96, 96, 128, "avg", 128)),
    ("inception4b", (192, 96, 128, 96, 128, "avg", 128)),
    ("inception4c", (160, 128, 160, 128, 160, "avg", 128)),
    ("inception4d", (96, 128, 192, 160, 192, "avg", 128)),
    ("inception4e", (0, 128, 192, 192, 256, "max", 0)),
    ("inception5a", (352, 192, 320, 160, 224, "avg", 128)),
    ("inception5b", (352, 192, 320, 192, 224, "max", 128)),
)


def _port_rules() -> list[tuple[str, str]]:
    """pretrainedmodels' flat names (Caffe's: `inception_3a_double_3x3_1` and its `_bn`)."""
    pairs = [("conv1_7x7_s2", "conv1"), ("conv2_3x3_reduce", "conv2"), ("conv2_3x3", "conv3")]
    branches = [("1x1", "branch1x1"), ("3x3_reduce", "branch3x3.reduce"),
                ("3x3", "branch3x3.conv"), ("double_3x3_reduce", "branch3x3dbl.reduce"),
                ("double_3x3_1", "branch3x3dbl.conv1"), ("double_3x3_2", "branch3x3dbl.conv2"),
                ("pool_proj", "branch_pool.proj")]
    pairs += [(fr"inception_(\d[a-e])_{theirs}", fr"inception\1.{ours}")
              for theirs, ours in branches]
    rules = []
    for theirs, ours in pairs:
        rules += [(fr"^{theirs}_bn\.", f"{ours}.bn."), (fr"^{theirs}\.", f"{ours}.conv.")]
    return rules + [(r"^last_linear\.", "head.fc.")]


class BNInception(ImageClassifier):
    """Figure 5: a 7×7 stride-2 convolution, max pooling, a 1×1 and a 3×3 convolution, max
    pooling, then the ten modules of BN_INCEPTION_TABLE and global average pooling.

    `small_input=True` is for 28-64 px images: a 3×3 stride-1 first convolution and no first
    pooling, so a 32 px image reaches the modules at 16×16 and ends at 4×4.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 drop_rate: float = 0.0, conv_bias: bool = True, act: str = "relu") -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        kw = dict(bias=conv_bias, act=act)
        if small_input:
            self.conv1 = _conv(in_chans, 64, 3, **kw)
            self.maxpool1 = nn.Identity()
        else:
            self.conv1 = _conv(in_chans, 64, 7, 2, **kw)
            self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = _conv(64, 64, 1, **kw)
        self.conv3 = _conv(64, 192, 3, **kw)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        chs, out_chs = 192, {}
        for name, row in BN_INCEPTION_TABLE:
            module = BNInceptionModule(chs, *row, **kw)
            self.add_module(name, module)
            chs = out_chs[name] = module.out_chs
        self.module_names = tuple(name for name, _ in BN_INCEPTION_TABLE)
        self.num_features = chs
        # Section 4.2.1: "Remove Dropout", batch normalisation regularises enough.
        self.head = ClassifierHead(chs, num_classes, drop_rate=drop_rate)
        s = 1 if small_input else 4
        self.feature_info = [
            dict(num_chs=64, reduction=max(1, s // 2), module="conv1"),
            dict(num_chs=192, reduction=s, module="conv3"),
            dict(num_chs=out_chs["inception3b"], reduction=2 * s, module="inception3b"),
            dict(num_chs=out_chs["inception4d"], reduction=4 * s, module="inception4d"),
            dict(num_chs=chs, reduction=8 * s, module="inception5b"),
        ]
        # The two max poolings round up and need a map of 2; the stride-2 modules take 1.
        self.min_input_size = 2 if small_input else 7
        init_conv_bn(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        for name in self.module_names:
            x = getattr(self, name)(x)
        return x

    # Not a buildable peer (pretrainedmodels is not a test dependency): its checkpoints load
    # by these names, and tests/test_inception_v4.py checks them against its layout.
    checkpoint_key_maps = {"pretrainedmodels": _port_rules()}


register_model("bn_inception", BNInception, paper=BN_INCEPTION, params=11_295_240,
               params_source="pretrainedmodels", peers={"pretrainedmodels": "bninception"})
