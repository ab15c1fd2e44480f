"""EfficientNet (Tan & Le, ICML 2019, 1905.11946), EfficientNet-Lite and EfficientNetV2
(Tan & Le, ICML 2021, 2104.00298).

Networks had been scaled up one dimension at a time: deeper (ResNet-18 to ResNet-200),
wider (Wide ResNet) or fed larger images (GPipe at 480 px). Each helps, and each saturates
near 80% top-1. EfficientNet's observation is that the three dimensions depend on each other:
a larger image needs more layers to grow the receptive field and more channels to capture
its finer patterns. So scale them together, by one *compound coefficient* φ:

    depth d = α^φ,  width w = β^φ,  resolution r = γ^φ,   with α·β²·γ² ≈ 2,

so that the FLOPs (linear in depth, quadratic in width and in resolution) grow by about 2^φ.
A small grid search at φ = 1 on a baseline gave α = 1.2, β = 1.1, γ = 1.15.

The baseline, B0, was itself found by neural architecture search (the MnasNet search space,
optimising accuracy and FLOPs): a stem convolution, seven stages of MBConv blocks (MobileNet
v2's inverted residual with squeeze-excitation, reduction 0.25 of the block's input
channels), and a 1×1 convolution to 1280 channels before pooling. Every activation is swish
(x·sigmoid(x)); the residual branches are dropped at random in training ("drop-connect",
i.e. stochastic depth) with a rate that grows linearly with the block index to 0.2.
B1..B7 are B0 with the released, hand-rounded (width, depth, resolution, dropout)
coefficients: channels = make_divisible(c·w, 8), repeats = ceil(n·d). `efficientnet_custom`
applies the rule itself for any φ.

EfficientNet-Lite (TensorFlow's 2020 release for mobile accelerators) removes what
quantises or runs badly there: no squeeze-excitation, ReLU6 instead of swish, and the stem,
the head and the first and last stages' depths are kept fixed while the rest scales.

EfficientNetV2 found that depthwise convolutions are slow in the early, high-resolution
stages on modern accelerators: its Fused-MBConv replaces the 1×1 expansion and the depthwise
k×k by one regular k×k convolution there, and the searched S/M/L networks use smaller
expansion ratios and 3×3 kernels only.

The weights that TensorFlow trained (and that efficientnet-pytorch and timm's `tf_` models
port) were trained with TensorFlow's "SAME" padding, which puts the odd extra pixel of a
stride-2 convolution on the bottom/right, and with batch-norm eps 1e-3; `padding='same_tf'`
and `bn_eps` reproduce them exactly (the `tf_efficientnet_*` names), while the
`efficientnet_*` names use PyTorch's symmetric padding as torchvision does.
"""
from __future__ import annotations

import math
import re
from typing import Any, Sequence

import torch
from torch import nn

from archlab.models.layers import (
    ClassifierHead, ConvNormAct, ImageClassifier, InvertedResidual, make_divisible,
)
from archlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, Paper, register_model

EFFICIENTNET = Paper(
    "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", 2019,
    "1905.11946", "efficientnet",
    "Scale depth, width and resolution together by one compound coefficient φ (depth 1.2^φ, "
    "width 1.1^φ, resolution 1.15^φ, about 2^φ the FLOPs), starting from a searched baseline "
    "of MBConv blocks with squeeze-excitation and swish.")
EFFICIENTNET_LITE = Paper(
    "EfficientNet-Lite (TensorFlow TPU repository release)", 2020, None, "efficientnet",
    "EfficientNet for mobile accelerators and integer quantisation: no squeeze-excitation, "
    "ReLU6 instead of swish, and the stem and head kept fixed while the body scales.")
EFFICIENTNET_V2 = Paper(
    "EfficientNetV2: Smaller Models and Faster Training", 2021, "2104.00298", "efficientnet",
    "Depthwise convolutions are slow at high resolution on accelerators, so the early stages "
    "use Fused-MBConv (one regular 3×3 convolution instead of 1×1 expansion + depthwise 3×3); "
    "the rest are MBConv with squeeze-excitation, searched for training speed.")

# A stage: (block, expand ratio, kernel, stride, output channels, repeats). The input channels
# of a stage are the previous stage's output (the stem's for the first).
# EfficientNet-B0, Table 1 of the paper; "mbconv" blocks carry squeeze-excitation.
B0_STAGES = (
    ("mbconv", 1, 3, 1, 16, 1),
    ("mbconv", 6, 3, 2, 24, 2),
    ("mbconv", 6, 5, 2, 40, 2),
    ("mbconv", 6, 3, 2, 80, 3),
    ("mbconv", 6, 5, 1, 112, 3),
    ("mbconv", 6, 5, 2, 192, 4),
    ("mbconv", 6, 3, 1, 320, 1),
)
# EfficientNetV2, Table 4 of the paper (S) and the released M and L configurations.
V2_S_STAGES = (
    ("fused", 1, 3, 1, 24, 2), ("fused", 4, 3, 2, 48, 4), ("fused", 4, 3, 2, 64, 4),
    ("mbconv", 4, 3, 2, 128, 6), ("mbconv", 6, 3, 1, 160, 9), ("mbconv", 6, 3, 2, 256, 15),
)
V2_M_STAGES = (
    ("fused", 1, 3, 1, 24, 3), ("fused", 4, 3, 2, 48, 5), ("fused", 4, 3, 2, 80, 5),
    ("mbconv", 4, 3, 2, 160, 7), ("mbconv", 6, 3, 1, 176, 14), ("mbconv", 6, 3, 2, 304, 18),
    ("mbconv", 6, 3, 1, 512, 5),
)
V2_L_STAGES = (
    ("fused", 1, 3, 1, 32, 4), ("fused", 4, 3, 2, 64, 7), ("fused", 4, 3, 2, 96, 7),
    ("mbconv", 4, 3, 2, 192, 10), ("mbconv", 6, 3, 1, 224, 19), ("mbconv", 6, 3, 2, 384, 25),
    ("mbconv", 6, 3, 1, 640, 7),
)

# The compound-scaling coefficients of the search at φ = 1 (section 3.3).
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
# The released (width, depth, resolution, dropout) of B0..B7: φ = 0..7 rounded by hand, not
# the rule applied exactly (B1 would be 258 px by the rule).
EFFICIENTNET_COEFFS = (
    (1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3), (1.2, 1.4, 300, 0.3),
    (1.4, 1.8, 380, 0.4), (1.6, 2.2, 456, 0.4), (1.8, 2.6, 528, 0.5), (2.0, 3.1, 600, 0.5),
)
LITE_COEFFS = (
    (1.0, 1.0, 224, 0.2), (1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3), (1.2, 1.4, 280, 0.3),
    (1.4, 1.8, 300, 0.3),
)

_BLOCK_NAMES = {"mbconv": "MBConv", "fused": "Fused-MBConv"}


class EfficientNet(ImageClassifier):
    """Stem, stages of (Fused-)MBConv blocks, 1×1 head convolution, pooling, classifier.

    `stages` is the unscaled table; `width` and `depth` scale it (`fix_stem_head` keeps the
    stem, the head and the first and last stages' depths as they are, as Lite does).
    `resolution` is the image size the scaling was meant for; it is recorded in `scaling`.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 stages: Sequence[tuple] = B0_STAGES, stem_chs: int = 32, head_chs: int = 1280,
                 width: float = 1.0, depth: float = 1.0, resolution: int = 224,
                 fix_stem_head: bool = False, se_ratio: float = 0.25,
                 act: str | type[nn.Module] = "swish", drop_rate: float = 0.2,
                 drop_path_rate: float = 0.2, padding: str | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.num_classes, self.in_chans = num_classes, in_chans
        norm_kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)

        def scale_chs(c: int) -> int:
            return make_divisible(c * width, 8)

        def scale_repeats(n: int, i: int) -> int:
            if fix_stem_head and i in (0, len(stages) - 1):
                return n
            return int(math.ceil(n * depth))

        stem_out = stem_chs if fix_stem_head else scale_chs(stem_chs)
        head_out = head_chs if fix_stem_head else scale_chs(head_chs)
        # small_input: for 28-64 px images the stem and the first stride-2 stage keep the
        # resolution, so that the last stage still sees a 4×4 map at 32 px.
        self.stem = ConvNormAct(in_chans, stem_out, 3, 1 if small_input else 2, act=act,
                                padding=padding, **norm_kw)
        reduction = 1 if small_input else 2
        self.stage_config: list[dict[str, Any]] = []
        skip_first_stride = small_input
        for i, (block, expand, kernel, stride, out_chs, repeats) in enumerate(stages):
            if block not in _BLOCK_NAMES:
                raise ValueError(f"unknown block {block!r} in stage {i}; use 'mbconv' or "
                                 "'fused'")
            if skip_first_stride and stride == 2:
                stride, skip_first_stride = 1, False
            cfg = dict(block=_BLOCK_NAMES[block], expand=expand, kernel=kernel, stride=stride,
                       out_chs=scale_chs(out_chs), repeats=scale_repeats(repeats, i),
                       se=se_ratio if block == "mbconv" else 0.0)
            self.stage_config.append(cfg)
        total_blocks = sum(c["repeats"] for c in self.stage_config)
        self.scaling = dict(width=width, depth=depth, resolution=resolution, dropout=drop_rate)
        # The side this scaling was meant for: the registry's card (and so `profile` and
        # training's default size) takes it, so a custom φ is costed at 224·1.15^φ.
        self.default_input_size = resolution

        chs, index = stem_out, 0
        stage_modules = []
        self.feature_info = []
        for i, cfg in enumerate(self.stage_config):
            blocks = []
            for j in range(cfg["repeats"]):
                blocks.append(InvertedResidual(
                    chs, cfg["out_chs"], cfg["kernel"], cfg["stride"] if j == 0 else 1,
                    expand_ratio=cfg["expand"], se_ratio=cfg["se"], act=act,
                    fused=cfg["block"] == "Fused-MBConv",
                    # Stochastic depth: the deeper the block, the likelier it is dropped.
                    drop_path=drop_path_rate * index / total_blocks,
                    padding=padding, **norm_kw))
                chs, index = cfg["out_chs"], index + 1
            reduction *= cfg["stride"]
            stage_modules.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction,
                                          module=f"stages.{i}"))
        self.stages = nn.Sequential(*stage_modules)
        self.conv_head = ConvNormAct(chs, head_out, 1, act=act, **norm_kw)
        self.num_features = head_out
        self.head = ClassifierHead(head_out, num_classes, drop_rate=drop_rate)
        # 'same' and symmetric padding both give ceil(size / 2) at every stride: one pixel runs.
        self.min_input_size = 1
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference implementation's initialisation: variance scaling on the fan-out for
        # convolutions, uniform ±1/sqrt(classes) for the classifier.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_head(self.stages(self.stem(x)))

    # -- checkpoints from the peers -----------------------------------------------------
    # Where a block's layers sit in a peer's state dict depends on the stage depths (the
    # package numbers its blocks flat) and on whether the block expands (torchvision numbers
    # the layers present), so the renames are generated from this instance's blocks.

    def _peer_module_names(self, source: str) -> dict[str, str]:
        """{peer module name: our module name} for every module that holds tensors."""
        flat = source == "efficientnet-pytorch"
        if flat and any(b.fused for stage in self.stages for b in stage):
            raise KeyError(source)  # the package has no Fused-MBConv (no EfficientNetV2)
        names: dict[str, str] = {}
        n = len(self.stages)
        if source == "torchvision":
            names.update({"features.0.0": "stem.conv", "features.0.1": "stem.bn",
                          f"features.{n + 1}.0": "conv_head.conv",
                          f"features.{n + 1}.1": "conv_head.bn", "classifier.1": "head.fc"})
        elif source == "timm":
            names.update({"conv_stem": "stem.conv", "bn1": "stem.bn",
                          "conv_head": "conv_head.conv", "bn2": "conv_head.bn",
                          "classifier": "head.fc"})
        elif flat:
            names.update({"_conv_stem": "stem.conv", "_bn0": "stem.bn",
                          "_conv_head": "conv_head.conv", "_bn1": "conv_head.bn",
                          "_fc": "head.fc"})
        else:
            raise KeyError(source)
        blocks = [(s, b, block) for s, stage in enumerate(self.stages)
                  for b, block in enumerate(stage)]
        for index, (s, b, block) in enumerate(blocks):
            ours = f"stages.{s}.{b}"
            units = [u for u in ("conv_pw", "conv_dw", "se", "conv_pwl")
                     if not isinstance(getattr(block, u), nn.Identity)]
            if source == "torchvision":
                peer = f"features.{s + 1}.{b}.block"
                for i, u in enumerate(units):
                    parts = (("fc1", "fc1"), ("fc2", "fc2")) if u == "se" else (
                        ("0", "conv"), ("1", "bn"))
                    names.update({f"{peer}.{i}.{p}": f"{ours}.{u}.{o}" for p, o in parts})
                continue
            if source == "timm":
                peer = f"blocks.{s}.{b}"
                # timm's block classes: ConvBnAct (fused, no expansion), EdgeResidual
                # (fused), DepthwiseSeparableConv (no expansion), InvertedResidual.
                if block.fused:
                    layout = {"conv_dw": ("conv_exp", "bn1"), "conv_pwl": ("conv_pwl", "bn2")}
                    if "conv_pwl" not in units:
                        layout = {"conv_dw": ("conv", "bn1")}
                elif "conv_pw" not in units:
                    layout = {"conv_dw": ("conv_dw", "bn1"), "conv_pwl": ("conv_pw", "bn2")}
                else:
                    layout = {"conv_pw": ("conv_pw", "bn1"), "conv_dw": ("conv_dw", "bn2"),
                              "conv_pwl": ("conv_pwl", "bn3")}
                se = ("se.conv_reduce", "se.conv_expand")
            else:
                peer = f"_blocks.{index}"
                layout = {"conv_pw": ("_expand_conv", "_bn0"),
                          "conv_dw": ("_depthwise_conv", "_bn1"),
                          "conv_pwl": ("_project_conv", "_bn2")}
                se = ("_se_reduce", "_se_expand")
            for u in units:
                if u == "se":
                    names[f"{peer}.{se[0]}"] = f"{ours}.se.fc1"
                    names[f"{peer}.{se[1]}"] = f"{ours}.se.fc2"
                else:
                    conv, bn = layout[u]
                    names[f"{peer}.{conv}"] = f"{ours}.{u}.conv"
                    names[f"{peer}.{bn}"] = f"{ours}.{u}.bn"
        return names

    @property
    def checkpoint_key_maps(self) -> dict[str, list[tuple[str, str]]]:
        maps = {}
        for source in ("torchvision", "timm", "efficientnet-pytorch"):
            try:
                names = self._peer_module_names(source)
            except KeyError:
                continue
            maps[source] = [(rf"^{re.escape(p)}\.(?=[^.]+$)", f"{o}.") for p, o in names.items()]
        return maps

    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        # The same renames as `checkpoint_key_maps`, looked up by module name rather than
        # tried one regex at a time (B7 has ~500 of them).
        if source == "archlab":
            return dict(state_dict)
        names = self._peer_module_names(source)
        out = {}
        for key, value in state_dict.items():
            module, _, tensor = key.rpartition(".")
            out[f"{names[module]}.{tensor}" if module in names else key] = value
        return out


def efficientnet_custom(phi: float = 0.0, num_classes: int = 1000, in_chans: int = 3,
                        small_input: bool = False, **kwargs: Any) -> EfficientNet:
    """B0 scaled by the compound rule for any φ: depth 1.2^φ, width 1.1^φ, resolution
    224·1.15^φ rounded to the nearest multiple of 8.

    8 is the divisor the channels are rounded to, and it keeps the resolution within 4 px
    of the rule; rounding to the total stride, 32, would move it by up to 16 px (at φ = 0.5,
    256 instead of 240: 14% more pixels than the rule asks). Any size runs:
    every stride-2 layer gives ceil(size / 2) with either padding. φ = 0 is B0. The dropout
    stays 0.2 unless given (`drop_rate`): the released B1..B7 rates were tuned per model,
    not derived from φ.
    """
    resolution = int(8 * round(224 * GAMMA ** phi / 8))
    config = dict(width=BETA ** phi, depth=ALPHA ** phi, resolution=resolution)
    config.update(kwargs)
    return EfficientNet(num_classes=num_classes, in_chans=in_chans, small_input=small_input,
                        **config)


# --------------------------------------------------------------------------------------
# The registered variants
# --------------------------------------------------------------------------------------

_B_PARAMS = (5_288_548, 7_794_184, 9_109_994, 12_233_232, 19_341_616, 30_389_784,
             43_040_704, 66_347_960)
_LITE_PARAMS = (4_652_008, 5_416_680, 6_092_072, 8_197_096, 13_006_568)
# TensorFlow's batch-norm defaults (momentum 0.99 in its convention is 0.01 in PyTorch's).
_TF_BN = dict(bn_eps=1e-3, bn_momentum=0.01)

# How the weights are evaluated, bicubic throughout: torchvision resizes B0..B7 to 256, 256,
# 288 (cropped 288), 320, 384 and the side itself; TensorFlow's code (its ports: the tf_ models
# and Lite) cuts a centre of size / (size + 32), its CROP_PADDING.
_TV_CROP = (224 / 256, 240 / 256, 1.0, 300 / 320, 380 / 384, 1.0, 1.0, 1.0)


def _tf_view(size: int) -> dict:
    return dict(interpolation="bicubic", crop_pct=size / (size + 32))


for _i, (_w, _d, _r, _p) in enumerate(EFFICIENTNET_COEFFS):
    # torchvision trains B5..B7 with TensorFlow's batch-norm settings, B0..B4 with PyTorch's.
    _bn = _TF_BN if _i >= 5 else {}
    register_model(
        f"efficientnet_b{_i}", EfficientNet, paper=EFFICIENTNET, params=_B_PARAMS[_i],
        params_source="tv", input_size=_r,
        peers={"torchvision": f"efficientnet_b{_i}", "timm": f"efficientnet_b{_i}"},
        idea=None if _i == 0 else
        f"EfficientNet-B0 compound-scaled to width ×{_w}, depth ×{_d} and {_r} px "
        f"(dropout {_p}); symmetric padding as torchvision's.", interpolation="bicubic",
        crop_pct=_TV_CROP[_i], width=_w, depth=_d, resolution=_r, drop_rate=_p, **_bn)
    register_model(
        f"tf_efficientnet_b{_i}", EfficientNet, paper=EFFICIENTNET, params=_B_PARAMS[_i],
        params_source="tv", input_size=_r,
        peers={"timm": f"tf_efficientnet_b{_i}", "efficientnet-pytorch": f"efficientnet-b{_i}"},
        idea=f"EfficientNet-B{_i} (width ×{_w}, depth ×{_d}, {_r} px) with TensorFlow's 'SAME' "
             "padding and batch-norm eps 1e-3, so that the weights TensorFlow trained (ported "
             "by efficientnet-pytorch and timm's tf_ models) give the same outputs.",
        **_tf_view(_r), width=_w, depth=_d, resolution=_r, drop_rate=_p, padding="same_tf",
        **_TF_BN)

for _i, (_w, _d, _r, _p) in enumerate(LITE_COEFFS):
    _lite = dict(width=_w, depth=_d, resolution=_r, drop_rate=_p, se_ratio=0.0, act="relu6",
                 fix_stem_head=True)
    register_model(
        f"efficientnet_lite{_i}", EfficientNet, paper=EFFICIENTNET_LITE, params=_LITE_PARAMS[_i],
        params_source="timm", input_size=_r, peers={"timm": f"efficientnet_lite{_i}"},
        idea=None if _i == 0 else
        f"EfficientNet-Lite0 scaled to width ×{_w}, depth ×{_d} and {_r} px, stem, head and "
        "first and last stages fixed; no squeeze-excitation, ReLU6.", **_tf_view(_r), **_lite)
    register_model(
        f"tf_efficientnet_lite{_i}", EfficientNet, paper=EFFICIENTNET_LITE,
        params=_LITE_PARAMS[_i], params_source="timm", input_size=_r,
        mean=INCEPTION_MEAN, std=INCEPTION_STD, peers={"timm": f"tf_efficientnet_lite{_i}"},
        idea=f"EfficientNet-Lite{_i} with TensorFlow's 'SAME' padding and batch-norm eps 1e-3, "
             "for the weights TensorFlow trained (inputs scaled to [-1, 1]).",
        **_tf_view(_r), padding="same_tf", **_TF_BN, **_lite)

register_model("efficientnet_custom", efficientnet_custom, paper=EFFICIENTNET,
               idea="EfficientNet-B0 scaled by the compound rule for any φ "
                    "(create_model('efficientnet_custom', phi=1.5)): depth 1.2^φ, width 1.1^φ, "
                    "resolution 224·1.15^φ; FLOPs grow by about 2^φ.",
               phi=0.0)

# torchvision evaluates V2 at the full side; its V2-L weights want bicubic and [-1, 1] inputs.
_V2_VIEW = {"s": dict(crop_pct=1.0), "m": dict(crop_pct=1.0),
            "l": dict(crop_pct=1.0, interpolation="bicubic", mean=INCEPTION_MEAN,
                      std=INCEPTION_STD)}
for _v, _stages, _stem, _params, _r, _p in (
        ("s", V2_S_STAGES, 24, 21_458_488, 384, 0.2),
        ("m", V2_M_STAGES, 24, 54_139_356, 480, 0.3),
        ("l", V2_L_STAGES, 32, 118_515_272, 480, 0.4)):
    register_model(
        f"efficientnet_v2_{_v}", EfficientNet, paper=EFFICIENTNET_V2, params=_params,
        params_source="tv", input_size=_r,
        peers={"torchvision": f"efficientnet_v2_{_v}",
               **({"timm": f"efficientnetv2_{_v}"} if _v != "l" else {})},
        idea=None if _v == "s" else
        f"EfficientNetV2-{_v.upper()}: the V2 recipe (Fused-MBConv early, MBConv with "
        "squeeze-excitation late) searched and scaled to a larger budget.",
        **_V2_VIEW[_v], stages=_stages, stem_chs=_stem, head_chs=1280, resolution=_r,
        drop_rate=_p, bn_eps=1e-3)

del _i, _w, _d, _r, _p, _bn, _lite, _v, _stages, _stem, _params

__all__ = ["EfficientNet", "efficientnet_custom", "B0_STAGES", "V2_S_STAGES", "V2_M_STAGES",
           "V2_L_STAGES", "EFFICIENTNET_COEFFS", "LITE_COEFFS", "ALPHA", "BETA", "GAMMA"]
