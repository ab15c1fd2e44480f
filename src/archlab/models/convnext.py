"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", 2022).

After ViT and Swin, was it attention that won, or the recipe and the macro design that
came with it? ConvNeXt answers by "modernizing" a ResNet-50 one step at a time toward a
Swin Transformer and measuring each step (2201.03545, Figure 2): the DeiT/Swin training
recipe (76.1 -> 78.8 top-1), Swin's stage ratio (3, 3, 9, 3), a "patchify" stem (a 4×4
convolution with stride 4, like a ViT's patch embedding), ResNeXt's depthwise convolution
widened to 96 channels, the inverted bottleneck (a thin block with a 4× wider MLP inside,
like a transformer's), a large 7×7 depthwise kernel moved to the top of the block (where
attention sits in a transformer block), GELU instead of ReLU, one activation and one norm
per block, LayerNorm instead of batch norm, and separate downsampling layers (LayerNorm and
a 2×2 stride-2 convolution) between stages. The result is a pure ConvNet that matches Swin
(ConvNeXt-T 82.1 top-1 against Swin-T 81.3) at the same cost.

The block: depthwise 7×7 -> LayerNorm -> linear 4C -> GELU -> linear C, scaled per channel
by a learnable "layer scale" initialised to 1e-6 (from CaiT, 2103.17239: each residual
branch starts as almost the identity, which lets deep networks train), and dropped by
stochastic depth in training. The MLP runs on channels-last tensors, where a 1×1
convolution is a linear layer and LayerNorm normalises the channels of each pixel.

`small_input=True` replaces the 4×4/4 patchify stem with a 3×3 stride-1 convolution, as
CIFAR ResNets do, so a 32 px image reaches the four stages at 32, 16, 8 and 4 px.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.layers import DropPath, ImageClassifier, Mlp
from archlab.models.registry import Paper, register_model

CONVNEXT = Paper(
    "A ConvNet for the 2020s", 2022, "2201.03545", "convnext",
    "A ResNet modernised step by step toward a vision transformer: patchify stem, 3:3:9:3 "
    "stages, 7x7 depthwise convolutions, inverted bottleneck MLP, GELU, LayerNorm and layer "
    "scale. A pure ConvNet that matches Swin at the same cost, showing the gap was design and "
    "recipe, not attention.")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) map: the stem's and the
    downsampling layers' norm, where the tensors are channels-first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dw 7×7 -> LN -> 4× MLP with GELU -> layer scale -> stochastic depth, plus the input."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6,
                 kernel_size: int = 7, mlp_ratio: float = 4.0,
                 act: str | type[nn.Module] = "gelu") -> None:
        super().__init__()
        # Swin's 7×7 windows, as a depthwise convolution: spatial mixing only, per channel.
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act=act)
        self.layer_scale = (nn.Parameter(torch.full((dim,), layer_scale_init))
                            if layer_scale_init > 0 else None)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1)))  # channels-last
        if self.layer_scale is not None:
            y = y * self.layer_scale
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtStage(nn.Module):
    """A separate downsampling layer (LN, 2×2 conv stride 2; none in stage 1), then blocks."""

    def __init__(self, in_chs: int, out_chs: int, drop_paths: list[float],
                 layer_scale_init: float, downsample: bool,
                 act: str | type[nn.Module] = "gelu") -> None:
        super().__init__()
        self.downsample = nn.Sequential(OrderedDict(
            norm=LayerNorm2d(in_chs, eps=1e-6), conv=nn.Conv2d(in_chs, out_chs, 2, 2),
        )) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(out_chs, p, layer_scale_init, act=act)
                                      for p in drop_paths])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt(ImageClassifier):
    """ConvNeXt; `depths` and `dims` give T/S/B/L. `drop_path_rate` is the stochastic depth
    of the last block, rising linearly from 0 at the first (the paper's 0.1/0.4/0.5/0.5
    for T/S/B/L on ImageNet-1k)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 depths: tuple[int, ...] = (3, 3, 9, 3),
                 dims: tuple[int, ...] = (96, 192, 384, 768), drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6,
                 act: str | type[nn.Module] = "gelu") -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths {depths} and dims {dims} must have one entry per stage")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.depths, self.dims = tuple(depths), tuple(dims)
        if small_input:
            stem_conv = nn.Conv2d(in_chans, dims[0], 3, 1, 1)
            stem_stride = 1
        else:
            # "Patchify": non-overlapping 4×4 patches, as a ViT's patch embedding.
            stem_conv = nn.Conv2d(in_chans, dims[0], 4, 4)
            stem_stride = 4
        self.stem = nn.Sequential(OrderedDict(conv=stem_conv,
                                              norm=LayerNorm2d(dims[0], eps=1e-6)))
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, chs, stride = [], dims[0], stem_stride
        self.feature_info = []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            stages.append(ConvNeXtStage(chs, dim, rates[:depth], layer_scale_init,
                                        downsample=i > 0, act=act))
            rates = rates[depth:]
            stride *= 2 if i > 0 else 1
            chs = dim
            self.feature_info.append(dict(num_chs=dim, reduction=stride, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = chs
        # The smallest side that keeps a 1×1 map through the stem and the 2×2/2 downsamplings.
        self.min_input_size = stem_stride * 2 ** (len(dims) - 1)
        self.head = nn.Sequential(OrderedDict(
            norm=nn.LayerNorm(chs, eps=1e-6), drop=nn.Dropout(drop_rate),
            fc=nn.Linear(chs, num_classes) if num_classes else nn.Identity(),
        ))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head.drop(self.head.norm(x.mean((2, 3))))
        return x if pre_logits else self.head.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)

    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        out = super().convert_checkpoint(state_dict, source)
        # torchvision keeps layer scale as (C, 1, 1) to broadcast over a channels-first map;
        # ours (and timm's gamma) is (C,), applied channels-last.
        return {k: v.reshape(-1) if k.endswith(".layer_scale") and v.ndim == 3 else v
                for k, v in out.items()}

    # torchvision's features: 0 stem, 1/3/5/7 the stages' blocks, 2/4/6 the downsamplings.
    checkpoint_key_maps = {
        "torchvision": [
            (r"^features\.0\.0\.", "stem.conv."), (r"^features\.0\.1\.", "stem.norm."),
            *[(rf"^features\.{2 * i + 1}\.(\d+)\.", rf"stages.{i}.blocks.\1.")
              for i in range(4)],
            *[(rf"^features\.{2 * i}\.0\.", f"stages.{i}.downsample.norm.") for i in (1, 2, 3)],
            *[(rf"^features\.{2 * i}\.1\.", f"stages.{i}.downsample.conv.") for i in (1, 2, 3)],
            (r"\.block\.0\.", ".conv_dw."), (r"\.block\.2\.", ".norm."),
            (r"\.block\.3\.", ".mlp.fc1."), (r"\.block\.5\.", ".mlp.fc2."),
            (r"^classifier\.0\.", "head.norm."), (r"^classifier\.2\.", "head.fc."),
        ],
        "timm": [
            (r"^stem\.0\.", "stem.conv."), (r"^stem\.1\.", "stem.norm."),
            (r"\.downsample\.0\.", ".downsample.norm."),
            (r"\.downsample\.1\.", ".downsample.conv."),
            (r"\.gamma$", ".layer_scale"),
        ],
    }


# The peers; torchvision's weights are evaluated from 236, 230, 232 and 232 px down to 224.
_PEERS = {n: dict(peers={"torchvision": n, "timm": n}, crop_pct=224 / side) for n, side in (
    ("convnext_tiny", 236), ("convnext_small", 230), ("convnext_base", 232),
    ("convnext_large", 232))}
register_model("convnext_tiny", ConvNeXt, paper=CONVNEXT, params=28_589_128, params_source="tv",
               **_PEERS["convnext_tiny"], depths=(3, 3, 9, 3), dims=(96, 192, 384, 768),
               drop_path_rate=0.1)
register_model("convnext_small", ConvNeXt, paper=CONVNEXT, params=50_223_688,
               params_source="tv", **_PEERS["convnext_small"], depths=(3, 3, 27, 3),
               dims=(96, 192, 384, 768), drop_path_rate=0.4)
register_model("convnext_base", ConvNeXt, paper=CONVNEXT, params=88_591_464, params_source="tv",
               **_PEERS["convnext_base"], depths=(3, 3, 27, 3),
               dims=(128, 256, 512, 1024), drop_path_rate=0.5)
register_model("convnext_large", ConvNeXt, paper=CONVNEXT, params=197_767_336,
               params_source="tv", **_PEERS["convnext_large"], depths=(3, 3, 27, 3),
               dims=(192, 384, 768, 1536), drop_path_rate=0.5)
