"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998).

"Gradient-Based Learning Applied to Document Recognition" put together what every CNN since
has: local receptive fields, shared weights (convolutions) and spatial subsampling, trained
end to end by back-propagation. The network reads a 32×32 image (MNIST's 28×28 digits
padded so that strokes reach the centre of the top feature detectors) through

    C1 conv 6@5×5 -> S2 subsample 2×2 -> C3 conv 16@5×5 -> S4 subsample 2×2
    -> C5 conv 120@5×5 -> F6 full 84 -> output 10

Every convolution is "valid" (no padding), so the maps shrink 32 -> 28 -> 14 -> 10 -> 5 -> 1.
C5 is a convolution, not a fully connected layer: on a 32×32 image its 5×5 kernel covers the
whole 5×5 map of S4, but on a larger image it slides, and the network becomes a detector that
classifies every window. Here a global average pool after C5 (a no-op at 32 px) turns that
map back into one vector, so any image of at least 32 px runs.

Two forms, one class:

- `lenet5`, the modern form most courses teach: ReLU, max pooling, every C3 map connected to
  every S2 map. With 1 input channel and 10 classes it has exactly 61,706 parameters.
- `lenet5_original`, the paper's own form: the scaled tanh f(a) = 1.7159·tanh(2a/3)
  (Appendix A: f(±1) = ±1, so targets of ±1 sit where the gain is largest), trainable
  subsampling (each S unit adds its four inputs, multiplies by a trainable coefficient, adds
  a trainable bias and squashes), the partial C3 connection table of Table I ("keeps the
  number of connections within reasonable bounds" and "forces a break of symmetry": different
  maps see different inputs) and the paper's initialisation, uniform in ±2.4/fan-in. Up to F6
  it has the paper's 60,000 trainable parameters. The paper's output layer is different: 10
  Euclidean RBF units with fixed, hand-drawn ±1 codes (stylised 7×12 bitmaps of the
  characters); we use a plain linear layer there, as everyone since has.

`small_input=True` pads C1 by 2, so that 28×28 images (MNIST, Fashion-MNIST) go in as they
are and see exactly the geometry of a 32×32 image.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# ScaledTanh, LeCun's activation, lives in layers (the activation table); imported here
# so that lenet.ScaledTanh keeps working.
from archlab.models.layers import ImageClassifier, ScaledTanh, get_act  # noqa: F401
from archlab.models.registry import Paper, register_model

LENET = Paper(
    "Gradient-Based Learning Applied to Document Recognition", 1998, None, "lenet",
    "Convolution (local receptive fields with shared weights) and subsampling, trained end "
    "to end by back-propagation: the network learns its own feature extractors instead of "
    "using hand-designed ones, and shifts and distortions of the input move the features "
    "instead of breaking them.")

# Table I: the S2 maps that each of the 16 C3 maps reads. Six maps see three neighbouring
# S2 maps, six see four neighbours, three see four non-neighbours, and the last sees all six.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class Subsampling(nn.Module):
    """The paper's S layers: the sum of each 2×2 neighbourhood, times one trainable
    coefficient per map, plus one trainable bias per map (2 parameters per map)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.avg_pool2d(x, 2) * 4.0
        return s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv(nn.Module):
    """C3 with the connection table: output map j is a 5×5 convolution over only the input
    maps `table[j]`, so it owns len(table[j])·25 + 1 parameters (1,516 in all, not 2,416)."""

    def __init__(self, table: tuple[tuple[int, ...], ...], kernel_size: int = 5) -> None:
        super().__init__()
        self.table = table
        self.maps = nn.ModuleList(nn.Conv2d(len(ins), 1, kernel_size) for ins in table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(x[:, list(ins)]) for conv, ins in zip(self.maps, self.table)], 1)


def _pool(kind: str, channels: int) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "trainable":
        return Subsampling(channels)
    raise ValueError(f"pool must be 'max', 'avg' or 'trainable' (the paper's), got {kind!r}")


class LeNet5(ImageClassifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 act: str | type[nn.Module] = "relu", pool: str = "max", c3_table: bool = False,
                 paper_init: bool = False, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        # small_input: pad 28×28 images to the 32×32 geometry the network was designed for.
        layers["c1"] = nn.Conv2d(in_chans, 6, 5, padding=2 if small_input else 0)
        layers["c1_act"] = get_act(act)
        layers["s2"] = _pool(pool, 6)
        if pool == "trainable":
            layers["s2_act"] = get_act(act)
        layers["c3"] = PartialConv(C3_TABLE) if c3_table else nn.Conv2d(6, 16, 5)
        layers["c3_act"] = get_act(act)
        layers["s4"] = _pool(pool, 16)
        if pool == "trainable":
            layers["s4_act"] = get_act(act)
        layers["c5"] = nn.Conv2d(16, 120, 5)
        layers["c5_act"] = get_act(act)
        self.features = nn.Sequential(layers)
        self.num_features = 120
        self.head_hidden_size = 84
        self.f6 = nn.Linear(120, 84)
        self.f6_act = get_act(act)
        self.head_drop = nn.Dropout(drop_rate)
        self.output = nn.Linear(84, num_classes)
        # C5 needs a 5×5 map from S4: 32 px without padding, 28 px with it.
        self.min_input_size = 28 if small_input else 32
        last = "_act" if pool == "trainable" else ""
        self.feature_info = [
            dict(num_chs=6, reduction=2, module=f"features.s2{last}"),
            dict(num_chs=16, reduction=4, module=f"features.s4{last}"),
            dict(num_chs=120, reduction=4, module="features.c5_act"),
        ]
        if paper_init:
            self._paper_init()

    @torch.no_grad()
    def _paper_init(self) -> None:
        # "Uniform between -2.4/F and 2.4/F, F the fan-in": keeps the weighted sums in the
        # range where the sigmoid's gain is largest, so learning starts fast.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.uniform_(-2.4 / fan_in, 2.4 / fan_in)
                m.bias.uniform_(-2.4 / fan_in, 2.4 / fan_in)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # A no-op at 32 px, where C5 is 1×1; on larger images, the mean over C5's windows.
        x = self.head_drop(self.f6_act(self.f6(x.mean((2, 3)))))
        return x if pre_logits else self.output(x)

    def get_classifier(self) -> nn.Module:
        return self.output

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = nn.Linear(84, num_classes)


_GREY_MEAN, _GREY_STD = (0.1307,) * 3, (0.3081,) * 3  # MNIST's statistics, for digit-like data

# Counts at 1000 classes and 3 input channels (the registry's convention), by hand:
# C1 3·25·6+6 = 456, C3 2,416 (or 1,516 with the table), C5 16·25·120+120 = 48,120,
# F6 120·84+84 = 10,164, output 84·1000+1000 = 85,000; trainable S2, S4 add 12 + 32.
register_model("lenet5", LeNet5, paper=LENET, params=146_156, params_source="computed",
               input_size=32, mean=_GREY_MEAN, std=_GREY_STD, small_input_size=28,
               idea="LeNet-5 as it is taught today: two convolution + max-pooling stages, "
                    "then three fully connected layers (120, 84, classes) with ReLU; "
                    "61,706 parameters for 10 digits.")
register_model("lenet5_original", LeNet5, paper=LENET, params=145_300,
               params_source="computed", input_size=32, mean=_GREY_MEAN, std=_GREY_STD,
               small_input_size=28, act="scaled_tanh", pool="trainable", c3_table=True,
               paper_init=True,
               idea="LeNet-5 as published: scaled tanh, trainable subsampling and the partial "
                    "C3 connection table, 60,000 trainable parameters up to F6; shared "
                    "convolution weights and subsampling give invariance to small shifts.")
