"""The layers a setting swaps in, on a CPU, so that it pays: the same weights and
state-dict keys, another way to compute them (analysis/speed.py applies them in
`Settings.prepare`).

- under bf16, depthwise convolutions compute in fp32 (oneDNN's bf16 kernels for them are
  slower than its fp32 ones);
- under channels_last, 1x1 and patchify convolutions compute as matrix products;
- for inference under bf16, the convolutions' and linear layers' weights are stored in bf16
  once, where autocast would cast them for every batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Float32DepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution that computes in fp32 under autocast (the same weights and
    state-dict keys: `depthwise_in_fp32` swaps the class of an existing module).

    oneDNN's bf16 depthwise kernels are slower than its fp32 ones on a CPU: measured on 2
    Xeon cores with AMX at 64 px, batch 32, a bf16 EfficientNet-B0 training step took 590
    ms against 288 in fp32 (channels_last both), and a ConvNeXt-T's 7x7 depthwise backward
    doubled. Depthwise layers do few multiplications per byte, so they gain nothing from
    the matrix units anyway; in fp32 the same steps take 231 and 417 ms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def depthwise_in_fp32(model: nn.Module) -> nn.Module:
    """Make every depthwise nn.Conv2d of `model` compute in fp32 under autocast (in place)."""
    for m in model.modules():
        if type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels:
            m.__class__ = Float32DepthwiseConv2d
    return model


class MatmulConv2d(nn.Conv2d):
    """A 1x1 convolution, or a patchify one (kernel equal to stride: a ViT's patch
    embedding, ConvNeXt's stem and downsampling layers), computed as a matrix product over
    the channels of a channels_last map (the same weights and state-dict keys:
    `convolutions_as_matmul` swaps the class of an existing module). Any other input takes
    the convolution.

    In channels_last a map is already a (pixels, channels) matrix: for a 1x1 layer the
    permutes cost nothing, and a patchify layer gathers its non-overlapping patches in one
    copy. The product and its two gradients then run as plain matrix products, which oneDNN
    makes faster on a CPU than its convolution kernels for these shapes, most of all in the
    backward. On 2 Xeon cores with AMX, batch 32 at 64 px, one training step against the
    same network's convolutions, interleaved (benchmarks/conv_matmul.py): ResNet-50 1.21x
    faster in bf16 (1.17x in fp32), ResNeXt-50 1.61x, Xception 1.53x, EfficientNet-B0
    1.17x; inference 0.92-1.49x, no interval below 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        weight = self.weight
        if self.kernel_size == (1, 1):
            if self.stride != (1, 1):
                # The same pixels as slicing ::stride, but the layout (and so its
                # gradient's, which slicing's backward would build contiguous) is kept.
                x = F.avg_pool2d(x, 1, self.stride)
            rows = x.permute(0, 2, 3, 1)                     # (N, H, W, C), a view
        else:                                                # patches of kernel = stride
            (kh, kw), (n, c, h, w) = self.kernel_size, x.shape
            ho, wo = h // kh, w // kw                        # a remainder is dropped
            rows = (x[:, :, :ho * kh, :wo * kw].permute(0, 2, 3, 1)
                    .reshape(n, ho, kh, wo, kw, c).transpose(2, 3)
                    .reshape(n, ho, wo, kh * kw * c))
            weight = weight.permute(0, 2, 3, 1)              # (out, kh, kw, in), as the rows
        y = F.linear(rows, weight.flatten(1), self.bias)     # (N, H', W', out)
        return y.permute(0, 3, 1, 2)                         # NCHW, laid out channels_last


def convolutions_as_matmul(model: nn.Module) -> nn.Module:
    """Compute every plain nn.Conv2d of `model` that is 1x1 or patchify (kernel equal to
    stride), without padding or groups, as a matrix product when its input is
    channels_last (in place)."""
    for m in model.modules():
        if (type(m) is nn.Conv2d and m.groups == 1 and m.dilation == (1, 1)
                and m.padding in ((0, 0), "valid")
                and (m.kernel_size == (1, 1) or m.kernel_size == m.stride)):
            m.__class__ = MatmulConv2d
    return model


def weights_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Store the weights and biases of every plain convolution and linear layer of `model`
    in `dtype` (in place), for inference under autocast to `dtype`.

    Autocast casts those to `dtype` at every call, and its cache lasts one forward pass: a
    ViT-S's 22M weights were read in fp32 and written in bf16 for every batch. Cast once
    ahead, they are what autocast would have made of them (the same rounding), so the
    logits are the same, and autocast passes them through: on 2 Xeon cores with AMX, a
    batch of AlexNet's inference ran 3.77x faster, VGG-16's 1.67x, ResNet-50's 1.12x
    (benchmarks/inference_weights.py). Norms, embeddings and the fp32 depthwise layers
    keep their weights as they are."""
    for m in model.modules():
        if type(m) in (nn.Conv2d, nn.Linear, MatmulConv2d):
            m.to(dtype)
    return model
