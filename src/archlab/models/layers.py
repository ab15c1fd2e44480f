"""The shared vocabulary: the contract every model keeps, and the layers several families use.

A block that only one family uses lives in that family's file; what is here is used by two
or more (ConvNormAct by nearly all, InvertedResidual by MobileNet v2 and EfficientNet,
Attention and Mlp by ViT and DeiT, ...).
"""
from __future__ import annotations

import abc
import math
import re
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------


class ImageClassifier(nn.Module, metaclass=abc.ABCMeta):
    """What every archlab model is: features, then a head.

    A family sets, in its constructor: `num_classes`, `in_chans`, `num_features` (channels
    that reach the head), `head_hidden_size` when the head has hidden layers (the width of
    `forward_head(x, pre_logits=True)`; AlexNet's 4096), `min_input_size` (the smallest side the network can take: below it
    some layer would produce an empty map) and `feature_info`, one dict per stage:
    `{"num_chs": C, "reduction": total stride, "module": "name.of.stage"}`.

    A family implements `forward_features` and either puts a `ClassifierHead` at `self.head`
    (pool, dropout, linear: the default head methods below read it) or overrides
    `forward_head`, `get_classifier` and `reset_classifier`; the rest is shared here.
    """

    num_classes: int
    in_chans: int
    num_features: int
    min_input_size: int = 1
    # Regex rewrites from a peer's state-dict keys to ours, per source ("torchvision", "timm",
    # "efficientnet-pytorch"); applied in order. A family whose conversion needs more than
    # renaming (fused tensors, reshapes) overrides `convert_checkpoint`.
    checkpoint_key_maps: ClassVar[dict[str, Sequence[tuple[str, str]]]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.feature_info: list[dict[str, Any]] = []

    # -- the family's part --------------------------------------------------------------
    @abc.abstractmethod
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The body: image batch -> last feature map (or tokens)."""

    # -- the head: a ClassifierHead at self.head unless the family overrides these ------
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features -> logits (or the pooled vector before the classifier, `pre_logits`)."""
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self) -> nn.Module:
        """The final linear layer(s) that map features to classes."""
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for `num_classes`."""
        self.num_classes = num_classes
        self.head.reset(num_classes)

    # -- shared -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse an input the network cannot take, before any layer runs."""
        name = getattr(self, "model_name", type(self).__name__)
        if x.ndim != 4:
            raise ValueError(f"{name} takes a batch of images (N, C, H, W); got shape "
                             f"{tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0).")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"{name} was built for {self.in_chans} input channels, got "
                             f"{x.shape[1]}; build it with in_chans={x.shape[1]}.")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            m = self.min_input_size
            raise ValueError(
                f"{name} needs images of at least {m}x{m} pixels, got {h}x{w}; resize the "
                f"images up, or use small_input=True for 28-64 px images.")

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return (forward_features(x), outputs of the stages in `feature_info`).

        `indices` picks stages: a list of positions, or an int n for the last n stages.
        """
        self.check_input(x)
        n = len(self.feature_info)
        if indices is None:
            picked = list(range(n))
        elif isinstance(indices, int):
            picked = list(range(n - indices, n))
        else:
            picked = [i % n for i in indices]
        modules = dict(self.named_modules())
        outputs: dict[int, torch.Tensor] = {}
        handles = []
        for i in picked:
            module = modules[self.feature_info[i]["module"]]
            handles.append(module.register_forward_hook(
                lambda _m, _inp, out, i=i: outputs.__setitem__(i, out)))
        try:
            features = self.forward_features(x)
        finally:
            for h in handles:
                h.remove()
        return features, [outputs[i] for i in picked]

    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        """Rename a peer's state dict (`source`) into this model's layout.

        archlab's own layout ("archlab") is returned unchanged; a family that must adapt
        even its own checkpoints (ViT resizes position embeddings to its image size)
        overrides this and handles every source, "archlab" included.
        """
        if source == "archlab":
            return dict(state_dict)
        rules = self.checkpoint_key_maps.get(source)
        if rules is None:
            raise KeyError(source)
        compiled = [(re.compile(p), r) for p, r in rules]
        out = {}
        for key, value in state_dict.items():
            for pattern, repl in compiled:
                key = pattern.sub(repl, key)
            out[key] = value
        return out


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def init_conv_bn(model: nn.Module) -> None:
    """He initialisation (1502.01852) of every convolution, for the ReLU that follows it:
    normal with variance 2 / fan-out, as torchvision and timm do; every batch norm starts
    as the identity. Modules are visited in registration order, so the random draws are
    too."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of `divisor` (hardware likes multiples of 8),
    never going more than 10% below `v` (MobileNet v2 and EfficientNet do this)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class ScaledTanh(nn.Module):
    """LeCun's squashing function (LeNet-5, Appendix A): f(a) = A·tanh(S·a) with A = 1.7159,
    S = 2/3, so that f(1) = 1 and f(-1) = -1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


# Every activation a family can be given by name (a CLI's or a protocol's `act: tanh`): the
# one table, so that every family knows the same names and refuses the same unknown ones.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU,
    "hardswish": nn.Hardswish, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "hardsigmoid": nn.Hardsigmoid, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU,
    "identity": nn.Identity, "scaled_tanh": ScaledTanh,
}
# The activations that can overwrite their input (saves a copy where nothing else reads it).
_INPLACE = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.ELU)

def get_act(act: str | type[nn.Module] | None, inplace: bool = False) -> nn.Module:
    """An activation module from a name in ACTIVATIONS ('relu', 'tanh', ...) or an nn.Module
    class; None is identity. An unknown name is a ValueError listing the known ones."""
    if act is None:
        cls = nn.Identity
    elif isinstance(act, str):
        try:
            cls = ACTIVATIONS[act.lower()]
        except KeyError:
            raise ValueError(f"unknown activation {act!r}; choose one of "
                             f"{', '.join(sorted(ACTIVATIONS))}") from None
    elif isinstance(act, type) and issubclass(act, nn.Module):
        cls = act
    else:
        raise ValueError(f"an activation is a name ({', '.join(sorted(ACTIVATIONS))}) or an "
                         f"nn.Module class, got {act!r}")
    if inplace and cls in _INPLACE:
        return cls(inplace=True)
    return cls()


def get_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """Symmetric padding that keeps a stride-1 convolution's size: (k - 1) * d / 2."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def _tf_same_pad(size: int, k: int, s: int, d: int) -> int:
    return max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's 'SAME' padding.

    TensorFlow pads so that the output is ceil(input / stride), putting the odd extra pixel
    on the bottom/right; PyTorch's symmetric padding puts it on both sides. Weights ported
    from TensorFlow (the original EfficientNets) only reproduce their outputs with this.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        dh, dw = self.dilation
        ph, pw = _tf_same_pad(ih, kh, sh, dh), _tf_same_pad(iw, kw, sw, dw)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def create_conv2d(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                  dilation: int = 1, groups: int = 1, bias: bool = False,
                  padding: int | str | None = None) -> nn.Conv2d:
    """A 2-D convolution; `padding='same_tf'` gives TensorFlow's SAME padding, None the
    symmetric padding that keeps size at stride 1."""
    if padding == "same_tf":
        return Conv2dSame(in_chs, out_chs, kernel_size, stride, dilation=dilation,
                          groups=groups, bias=bias)
    if padding is None:
        padding = get_padding(kernel_size, stride, dilation)
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation=dilation,
                     groups=groups, bias=bias)


# --------------------------------------------------------------------------------------
# Convolution blocks
# --------------------------------------------------------------------------------------


class ConvNormAct(nn.Sequential):
    """Convolution, batch norm, activation: the unit of nearly every CNN since 2015.

    The convolution has no bias when a norm follows, since the norm's shift replaces it.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, act: str | type[nn.Module] | None = "relu",
                 norm: bool = True, bias: bool | None = None, padding: int | str | None = None,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1, inplace: bool = True) -> None:
        super().__init__()
        self.add_module("conv", create_conv2d(in_chs, out_chs, kernel_size, stride, dilation,
                                              groups, bias=(not norm) if bias is None else bias,
                                              padding=padding))
        self.add_module("bn", nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum)
                        if norm else nn.Identity())
        self.add_module("act", get_act(act, inplace=inplace))
        self.in_chs, self.out_chs = in_chs, out_chs


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (1709.01507): pool each channel to one number, pass the vector
    through a small bottleneck MLP, and rescale the channels by the sigmoid of the result,
    so that the network can weigh its channels by global context for well under 1% more
    computation (the paper: 0.26% for ResNet-50)."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 act: str | type[nn.Module] = "relu", gate: str | type[nn.Module] = "sigmoid",
                 rd_divisor: int = 1) -> None:
        super().__init__()
        if rd_channels is None:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = get_act(act, inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = get_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * self.gate(s)


class DropPath(nn.Module):
    """Stochastic depth (1603.09382): in training, drop a residual branch for a whole sample
    with probability p and scale the survivors by 1/(1-p); identity at evaluation.
    EfficientNet calls it drop-connect."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class DepthwiseSeparableConv(nn.Module):
    """A k×k convolution factorised into a depthwise k×k (one filter per channel) and a
    pointwise 1×1 that mixes channels (Xception, MobileNet v1, EfficientNet's first stage):
    1/N + 1/k² of the multiply-adds of a standard convolution.

    With `se_ratio` it carries squeeze-excitation between the two (EfficientNet); with
    `pw_act=False` the pointwise convolution is linear. The residual connection is used when
    the shape allows it and `skip` is set.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 act: str | type[nn.Module] = "relu", pw_act: bool = True,
                 se_ratio: float = 0.0, se_act: str | None = None, skip: bool = False,
                 drop_path: float = 0.0, padding: str | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        norm_kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        self.conv_dw = ConvNormAct(in_chs, in_chs, kernel_size, stride, groups=in_chs, act=act,
                                   **norm_kw)
        self.se = (SqueezeExcite(in_chs, rd_channels=max(1, int(in_chs * se_ratio)),
                                 act=se_act or act) if se_ratio > 0 else nn.Identity())
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, act=act if pw_act else None,
                                   bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pw(self.se(self.conv_dw(x)))
        return x + self.drop_path(out) if self.has_skip else out


class InvertedResidual(nn.Module):
    """MobileNet v2's inverted residual with a linear bottleneck (1801.04381), which
    EfficientNet calls MBConv: expand the thin input by a 1×1 convolution, filter it with a
    cheap depthwise k×k, and project back to a thin output with no activation (a ReLU there
    would destroy information in the low-dimensional space). The shortcut joins the thin ends.

    `fused=True` is EfficientNetV2's Fused-MBConv (2104.00298): the expansion and the
    depthwise convolution become one regular k×k convolution, faster on accelerators in the
    early, high-resolution stages. `se_ratio` adds squeeze-excitation, its bottleneck sized
    from the block's *input* channels as EfficientNet does.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 expand_ratio: float = 6.0, se_ratio: float = 0.0,
                 act: str | type[nn.Module] = "relu6", fused: bool = False,
                 drop_path: float = 0.0, padding: str | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        mid = make_divisible(in_chs * expand_ratio, 1) if expand_ratio != 1 else in_chs
        norm_kw = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.fused = fused
        if fused:
            # One k×k convolution expands and filters; a 1×1 projects if there was expansion.
            self.conv_pw = nn.Identity()
            self.conv_dw = ConvNormAct(in_chs, mid, kernel_size, stride, act=act,
                                       padding=padding, **norm_kw)
        else:
            self.conv_pw = (ConvNormAct(in_chs, mid, 1, act=act, **norm_kw)
                            if mid != in_chs else nn.Identity())
            self.conv_dw = ConvNormAct(mid, mid, kernel_size, stride, groups=mid, act=act,
                                       padding=padding, **norm_kw)
        self.se = (SqueezeExcite(mid, rd_channels=max(1, int(in_chs * se_ratio)), act=act)
                   if se_ratio > 0 else nn.Identity())
        if fused and mid == in_chs:
            # Fused-MBConv with expansion 1: the k×k convolution is the projection itself.
            self.conv_dw = ConvNormAct(in_chs, out_chs, kernel_size, stride, act=act,
                                       padding=padding, **norm_kw)
            self.conv_pwl = nn.Identity()
        else:
            self.conv_pwl = ConvNormAct(mid, out_chs, 1, act=None, **norm_kw)
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return x + self.drop_path(out) if self.has_skip else out


# --------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------


class ClassifierHead(nn.Module):
    """Global pooling, dropout, a linear classifier: the head of every network after
    Network-in-Network (1312.4400) replaced the big fully connected layers with a pool."""

    def __init__(self, in_features: int, num_classes: int, pool: str = "avg",
                 drop_rate: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.pool_type, self.bias = in_features, pool, bias
        self.global_pool = {"avg": nn.AdaptiveAvgPool2d(1), "max": nn.AdaptiveMaxPool2d(1),
                            "": nn.Identity()}[pool]
        self.flatten = nn.Flatten(1) if pool else nn.Identity()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes, bias=bias) if num_classes else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = (nn.Linear(self.in_features, num_classes, bias=self.bias)
                   if num_classes else nn.Identity())

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.fc(x)


class FullyConnectedClassifier(ImageClassifier):
    """The 2012-2014 shape, AlexNet's and VGG's: convolutional `features`, the map pooled to
    a fixed grid (`avgpool`), flattened, and fully connected layers (`classifier`, whose
    last layer `fc8` maps to the classes) before Network-in-Network's global pool replaced
    them. The family builds the four modules; the head methods are shared here."""

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Sequential

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier.fc8

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier.fc8 = nn.Linear(self.classifier.fc8.in_features, num_classes)


# --------------------------------------------------------------------------------------
# Transformer pieces
# --------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Cut the image into non-overlapping p×p patches and project each linearly to a token:
    a p×p convolution with stride p is exactly that projection (2010.11929)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, bias: bool = True) -> None:
        super().__init__()
        self.img_size, self.patch_size = img_size, patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)


class Attention(nn.Module):
    """Multi-head self-attention (1706.03762): every token looks at every other.

    The plain pass runs fused `scaled_dot_product_attention`. Setting `keep_attention` makes
    the layer compute the probabilities explicitly and keep them in `attention_probs`
    (N, heads, tokens, tokens), for attention maps and rollout.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.keep_attention = False
        self.attention_probs: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)
        if self.keep_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            self.attention_probs = attn.detach()
            attn = F.dropout(attn, self.attn_drop, self.training)
            x = attn @ v
        else:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, t, c)))


class Mlp(nn.Module):
    """The transformer's position-wise MLP: expand (4× in ViT), GELU, project back."""

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act: str | type[nn.Module] = "gelu",
                 drop: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = get_act(act)
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
