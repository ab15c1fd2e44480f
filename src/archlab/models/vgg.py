"""VGG (Simonyan & Zisserman, 2014; arXiv 1409.1556).

"Very Deep Convolutional Networks for Large-Scale Image Recognition" asked one question: with
everything else fixed, what does depth buy? Its answer fixed the shape of CNNs for years:
use only 3×3 convolutions (stride 1, padding 1), halve the resolution with 2×2 max pooling
five times, double the channels after each pooling up to 512, and go deep. Two stacked 3×3
convolutions see a 5×5 field with 2·9 = 18 weights per channel pair instead of 25; three see
7×7 with 27 instead of 49, and put three non-linearities where one 7×7 would put one.

The paper's Table 1 is the centre of this file: configurations A (11 weight layers) to E (19),
written below the way the paper writes them ("conv3-64" is a 3×3 convolution with 64
outputs). A-LRN adds AlexNet's local response normalisation after the first layer, to show
that it does not help; C puts 1×1 convolutions at the end of the last three stages, to show
that extra non-linearity helps but spatial context (D's 3×3s) helps more. After the five
stages come AlexNet's three fully connected layers: 4096, 4096, classes, with dropout.

The torchvision names are the paper's configurations: vgg11 = A, vgg13 = B, vgg16 = D,
vgg19 = E, and `_bn` adds batch normalisation after every convolution (the 2015 addition that
lets the deep ones train from scratch without the paper's staged initialisation). Both
families of names are registered; the counts match torchvision's exactly and its state dicts
convert.

Layers are named as in the authors' Caffe models (conv1_1 ... conv5_3, fc6, fc7, fc8), which
is also what makes the paper's staged deepening a matter of names: every layer of net A has a
layer of the same name and shape in nets B to E, so A's weights can initialise a deeper
net with `load_state_dict(a.state_dict(), strict=False)` (the paper initialised the first
four convolutions and the three fully connected layers from A, the rest at random).

`small_input=True` (28-64 px, CIFAR-style) keeps all five stages, rounds the poolings up
(ceil mode) so that 28 px images (7 -> 4 -> 2 -> 1) survive all five, pools to 1×1 instead of
7×7 and narrows the fully connected layers to 512: the 4096-wide layers on a 7×7×512 input
hold nearly 90% of VGG-16's parameters, which a 32 px image cannot feed. `width` scales every
convolution's channels (0.25 gives 16-32-64-128-128), for a VGG that trains in minutes on
a CPU.

`single_kernel=True` is the paper's control of section 4.1: every run of n stacked 3×3
convolutions in a stage becomes one (2n+1)×(2n+1) convolution of the same width, which sees
the same field with one non-linearity instead of n (config B becomes five 5×5 layers, the
shallow net the paper found 7% worse in top-1 error; D's triples become 7×7s).
"""
from __future__ import annotations

import re
from collections import OrderedDict

import torch
from torch import nn

from archlab.models.layers import FullyConnectedClassifier, get_act
from archlab.models.registry import Paper, register_model

VGG_PAPER = Paper(
    "Very Deep Convolutional Networks for Large-Scale Image Recognition", 2014, "1409.1556",
    "vgg",
    "Depth with the smallest filters: stacks of 3×3 convolutions, where two see a 5×5 field "
    "with 18 weights instead of 25 and three see 7×7 with 27 instead of 49, and add a "
    "non-linearity each; 16-19 weight layers beat every shallower configuration.")

# Table 1 of the paper, one list per stage; each stage ends in a 2×2 max pooling.
CONFIGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "A": (("conv3-64",),
          ("conv3-128",),
          ("conv3-256", "conv3-256"),
          ("conv3-512", "conv3-512"),
          ("conv3-512", "conv3-512")),
    "A-LRN": (("conv3-64", "LRN"),
              ("conv3-128",),
              ("conv3-256", "conv3-256"),
              ("conv3-512", "conv3-512"),
              ("conv3-512", "conv3-512")),
    "B": (("conv3-64", "conv3-64"),
          ("conv3-128", "conv3-128"),
          ("conv3-256", "conv3-256"),
          ("conv3-512", "conv3-512"),
          ("conv3-512", "conv3-512")),
    "C": (("conv3-64", "conv3-64"),
          ("conv3-128", "conv3-128"),
          ("conv3-256", "conv3-256", "conv1-256"),
          ("conv3-512", "conv3-512", "conv1-512"),
          ("conv3-512", "conv3-512", "conv1-512")),
    "D": (("conv3-64", "conv3-64"),
          ("conv3-128", "conv3-128"),
          ("conv3-256", "conv3-256", "conv3-256"),
          ("conv3-512", "conv3-512", "conv3-512"),
          ("conv3-512", "conv3-512", "conv3-512")),
    "E": (("conv3-64", "conv3-64"),
          ("conv3-128", "conv3-128"),
          ("conv3-256", "conv3-256", "conv3-256", "conv3-256"),
          ("conv3-512", "conv3-512", "conv3-512", "conv3-512"),
          ("conv3-512", "conv3-512", "conv3-512", "conv3-512")),
}

_CONV = re.compile(r"conv(\d+)-(\d+)")


def single_kernels(config: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    """`config` with every run of n consecutive 3×3 convolutions of one width replaced by a
    single (2n+1)×(2n+1) convolution of that width: the same receptive field (1 + n·2), one
    layer, one non-linearity. 1×1 convolutions and LRN stay where they are."""
    out = []
    for stage in config:
        merged: list[str] = []
        run = 0          # how many 3×3s the last entry of `merged` stands for
        for spec in stage:
            if spec.startswith("conv3-") and run and merged[-1].endswith("-" + spec[6:]):
                run += 1
                merged[-1] = f"conv{2 * run + 1}-{spec[6:]}"
            else:
                run = 1 if spec.startswith("conv3-") else 0
                merged.append(spec)
        out.append(tuple(merged))
    return tuple(out)


def make_stages(config: tuple[tuple[str, ...], ...], in_chans: int, batch_norm: bool,
                width: float = 1.0, ceil_mode: bool = False,
                act: str | type[nn.Module] = "relu") -> tuple[nn.Sequential, list[dict]]:
    """The convolutional body from a Table 1 column, and the feature_info of its stages;
    `width` scales the channels, `ceil_mode` rounds the poolings' output up, `act` is the
    activation after each convolution (layers.ACTIVATIONS)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    info = []
    chs = in_chans
    for s, stage in enumerate(config, start=1):
        i = 0
        for spec in stage:
            if spec == "LRN":
                # AlexNet's setting; the paper found it adds memory and time, not accuracy.
                layers[f"lrn{s}"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
                continue
            match = _CONV.fullmatch(spec)
            if not match:
                raise ValueError(f"unknown VGG layer {spec!r}; write 'conv3-64', 'conv1-512' "
                                 "or 'LRN'")
            k, out = int(match[1]), max(1, round(int(match[2]) * width))
            i += 1
            layers[f"conv{s}_{i}"] = nn.Conv2d(chs, out, k, padding=k // 2)
            if batch_norm:
                layers[f"bn{s}_{i}"] = nn.BatchNorm2d(out)
            layers[f"relu{s}_{i}"] = get_act(act, inplace=True)
            chs = out
        layers[f"pool{s}"] = nn.MaxPool2d(2, 2, ceil_mode=ceil_mode)
        info.append(dict(num_chs=chs, reduction=2 ** s, module=f"features.pool{s}"))
    return nn.Sequential(layers), info


class VGG(FullyConnectedClassifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 config: str = "D", batch_norm: bool = False, drop_rate: float = 0.5,
                 fc_dim: int | None = None, pool_size: int | None = None,
                 width: float = 1.0, act: str | type[nn.Module] = "relu",
                 single_kernel: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width scales the channels and must be positive, got {width}")
        if config not in CONFIGS:
            raise ValueError(f"unknown VGG configuration {config!r}; the paper's are "
                             f"{', '.join(CONFIGS)}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.config = config
        layers = single_kernels(CONFIGS[config]) if single_kernel else CONFIGS[config]
        self.features, self.feature_info = make_stages(layers, in_chans, batch_norm,
                                                       width, ceil_mode=small_input, act=act)
        self.num_features = chs = self.feature_info[-1]["num_chs"]
        pool_size = pool_size or (1 if small_input else 7)
        fc_dim = fc_dim or (512 if small_input else 4096)
        self.head_hidden_size = fc_dim
        # A fixed 7×7 grid for the first fully connected layer at any input size (the paper
        # converted the fc layers to convolutions for dense evaluation instead).
        self.avgpool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(chs * pool_size * pool_size, fc_dim)),
            ("relu6", get_act(act, inplace=True)), ("drop6", nn.Dropout(drop_rate)),
            ("fc7", nn.Linear(fc_dim, fc_dim)),
            ("relu7", get_act(act, inplace=True)), ("drop7", nn.Dropout(drop_rate)),
            ("fc8", nn.Linear(fc_dim, num_classes)),
        ]))
        # Five 2×2 poolings need 32 px to leave a 1×1 map; rounded up, any size does.
        self.min_input_size = 1 if small_input else 32
        self._init_weights(small_input)

    @torch.no_grad()
    def _init_weights(self, small_input: bool) -> None:
        # The paper drew N(0, 0.01) and needed net A's weights to start the deeper nets;
        # He initialisation (1502.01852, as torchvision does) trains D and E from scratch.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and not small_input:
                # N(0, 0.01) suits the 4096-wide layers fed by 25,088 inputs; the narrow
                # small-input head keeps PyTorch's fan-in scaling instead, which on a
                # 512-wide head trains about 3 points faster in two epochs (Fashion-MNIST).
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    # torchvision numbers the layers of `features` and `classifier`; ours are the same layers
    # in the same order with names, so the conversion is positional.
    checkpoint_key_maps = {"torchvision": ()}

    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        if source != "torchvision":
            return super().convert_checkpoint(state_dict, source)
        names = {"features": list(self.features._modules),
                 "classifier": list(self.classifier._modules)}
        out = {}
        for key, value in state_dict.items():
            part, index, rest = (key.split(".", 2) + ["", ""])[:3]
            if part in names and index.isdigit() and int(index) < len(names[part]):
                key = f"{part}.{names[part][int(index)]}.{rest}"
            out[key] = value
        return out


# torchvision's names for configurations A, B, D, E, and their parameter counts without and
# with batch norm.
_TORCHVISION = {"A": ("vgg11", 132_863_336, 132_868_840), "B": ("vgg13", 133_047_848, 133_053_736),
                "D": ("vgg16", 138_357_544, 138_365_992), "E": ("vgg19", 143_667_240, 143_678_248)}
for _config, (_name, _params, _) in _TORCHVISION.items():
    register_model(_name, VGG, paper=VGG_PAPER, params=_params, params_source="tv",
                   peers={"torchvision": _name}, config=_config)

_BN_IDEA = ("VGG with batch normalisation after every convolution (1502.03167): each layer "
            "sees inputs of steady mean and variance, so the deep configurations train from "
            "scratch, at a higher learning rate, without the paper's staged initialisation.")
for _config, (_name, _, _params) in _TORCHVISION.items():
    register_model(f"{_name}_bn", VGG, paper=VGG_PAPER, params=_params, params_source="tv",
                   idea=_BN_IDEA, peers={"torchvision": f"{_name}_bn"}, config=_config,
                   batch_norm=True)

# The paper's own names (Table 1). A, B, D, E are vgg11/13/16/19 under another name; A-LRN
# and C exist only here. Table 2's figures, in millions, are tested in tests/test_classic.py.
_PAPER_NAMES = (
    ("vgg_a", "A", "VGG configuration A, 11 weight layers: the shallowest net of the paper, "
                   "trained first and used to initialise the deeper ones."),
    ("vgg_a_lrn", "A-LRN",
     "VGG configuration A with AlexNet's local response normalisation after the first layer: "
     "the paper's control showing that LRN does not improve accuracy, only costs memory and "
     "time."),
    ("vgg_b", "B", "VGG configuration B, 13 weight layers: two 3×3 convolutions in every stage."),
    ("vgg_c", "C",
     "VGG configuration C, 16 weight layers with 1×1 convolutions closing the last three "
     "stages: extra non-linearity helps (C beats B), but 3×3 context helps more (D beats C)."),
    ("vgg_d", "D", "VGG configuration D (VGG-16): three 3×3 convolutions in the last three "
                   "stages, which see a 7×7 field with 27 weights instead of 49."),
    ("vgg_e", "E", "VGG configuration E (VGG-19), 19 weight layers: the deepest of the paper, "
                   "where its error rate saturates; four 3×3 convolutions in each of the last "
                   "three stages."),
)
for _name, _config, _idea in _PAPER_NAMES:
    if _config in _TORCHVISION:
        _twin, _params, _ = _TORCHVISION[_config]
        register_model(_name, VGG, paper=VGG_PAPER, params=_params, params_source="tv",
                       peers={"torchvision": _twin}, config=_config, idea=_idea)
    else:
        register_model(_name, VGG, paper=VGG_PAPER, config=_config, idea=_idea)
