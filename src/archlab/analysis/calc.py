"""The course's formulas, for any numbers: `archlab calc`.

Each function returns a dict of named quantities, so that the CLI can print it and a test
can check it against PyTorch's own layers.
"""
from __future__ import annotations

import math


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    """floor((L + 2·pad − dil·(k − 1) − 1) / stride + 1), the size nn.Conv2d produces."""
    if min(size, kernel, stride, dilation) < 1 or padding < 0:
        raise ValueError("size, kernel, stride and dilation must be >= 1 and padding >= 0")
    out = math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1)
    if out < 1:
        raise ValueError(
            f"a {kernel}x{kernel} convolution (stride {stride}, padding {padding}, dilation "
            f"{dilation}) does not fit in {size} pixels; it needs at least "
            f"{dilation * (kernel - 1) + 1 - 2 * padding}")
    return out


def conv_output(size: int, kernel: int, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> dict[str, float]:
    out = conv_output_size(size, kernel, stride, padding, dilation)
    return {"input": size, "kernel": kernel, "stride": stride, "padding": padding,
            "dilation": dilation, "output": out,
            "same_padding": dilation * (kernel - 1) // 2}


def stacked_convs(kernel: int = 3, layers: int = 2, channels: int = 1) -> dict[str, float]:
    """`layers` stacked k×k convolutions (stride 1) against the one kernel that sees as much.

    The stack sees 1 + L·(k − 1) pixels; it costs L·k²·C² weights against R²·C² for one R×R
    convolution (1409.1556: three 3×3 see 7×7 with 27 instead of 49 weights per channel pair),
    and puts L non-linearities where the large kernel has one.
    """
    if kernel < 1 or layers < 1 or channels < 1:
        raise ValueError("kernel, layers and channels must be >= 1")
    field = 1 + layers * (kernel - 1)
    stack = layers * kernel * kernel * channels * channels
    single = field * field * channels * channels
    return {"kernel": kernel, "layers": layers, "channels": channels,
            "receptive_field": field, "stack_weights": stack, "single_kernel": field,
            "single_weights": single, "saving": 1 - stack / single,
            "nonlinearities_stack": layers, "nonlinearities_single": 1}


def separable_cost(in_chs: int, out_chs: int, kernel: int = 3, size: int = 1
                   ) -> dict[str, float]:
    """A depthwise-separable convolution against a standard one, same padding, stride 1.

    Standard: k²·M·N·H·W multiply-adds; depthwise k²·M·H·W plus pointwise M·N·H·W; the ratio
    is 1/N + 1/k² (1704.04861), about 8-9× fewer for k = 3.
    """
    if min(in_chs, out_chs, kernel, size) < 1:
        raise ValueError("channels, kernel and size must be >= 1")
    hw = size * size
    standard = kernel * kernel * in_chs * out_chs * hw
    depthwise = kernel * kernel * in_chs * hw
    pointwise = in_chs * out_chs * hw
    return {"in_chs": in_chs, "out_chs": out_chs, "kernel": kernel, "size": size,
            "standard_macs": standard, "depthwise_macs": depthwise,
            "pointwise_macs": pointwise, "separable_macs": depthwise + pointwise,
            "ratio": (depthwise + pointwise) / standard,
            "formula_ratio": 1 / out_chs + 1 / (kernel * kernel),
            "speedup": standard / (depthwise + pointwise),
            "standard_weights": kernel * kernel * in_chs * out_chs,
            "separable_weights": kernel * kernel * in_chs + in_chs * out_chs}


def receptive_field(layers: list[tuple[int, ...]]) -> dict[str, float]:
    """Receptive field and cumulative stride after a chain of (kernel, stride[, dilation])
    layers: r ← r + d·(k − 1)·j, j ← j·s.

    A dilated k×k kernel spans d·(k − 1) + 1 pixels with k² weights (1511.07122), so a chain
    of dilations grows the field exponentially at no cost in weights or resolution.
    """
    r, j, fields, strides = 1, 1, [], []
    for layer in layers:
        k, s, d = (*layer, 1) if len(layer) == 2 else layer
        if min(k, s, d) < 1:
            raise ValueError(f"kernel, stride and dilation must be >= 1, got {layer}")
        r, j = r + d * (k - 1) * j, j * s
        fields.append(r)
        strides.append(j)
    return {"layers": len(layers), "receptive_field": r, "stride": j,
            "fields": fields, "strides": strides}


def attention_cost(size: int, patch: int = 16, dim: int = 768, heads: int = 12,
                   class_token: bool = True, bytes_per_value: int = 4) -> dict[str, float]:
    """Self-attention's N×N matrix when an image of `size`² pixels is cut into `patch`²
    patches, against every pixel as a token (patch = 1): why ViT (2010.11929) uses patches.

    Each head of each layer holds N² attention weights and spends N²·dim/heads multiply-adds
    on Q·Kᵀ and as many on the weighted sum of V: quadratic in the number of tokens, so 16×16
    patches divide the matrix by 256² against pixels.
    """
    if min(size, patch, dim, heads, bytes_per_value) < 1:
        raise ValueError("size, patch, dim, heads and bytes must be >= 1")
    if size % patch:
        raise ValueError(f"a {size} px image does not split into {patch} px patches; pick a "
                         f"patch that divides {size} (e.g. {math.gcd(size, 16)})")
    if dim % heads:
        raise ValueError(f"dim {dim} must be a multiple of heads {heads}")

    def cost(p: int) -> dict[str, int]:
        tokens = (size // p) ** 2 + int(class_token)
        entries = tokens * tokens * heads
        return {"tokens": tokens, "entries": entries, "bytes": entries * bytes_per_value,
                "macs": 2 * tokens * tokens * dim}

    patches, pixels = cost(patch), cost(1)
    return {"size": size, "patch": patch, "dim": dim, "heads": heads,
            "class_token": class_token,
            **{f"patch_{k}": v for k, v in patches.items()},
            **{f"pixel_{k}": v for k, v in pixels.items()},
            "ratio": pixels["entries"] / patches["entries"]}


def fc_on_image(height: int, width: int, channels: int = 3, units: int = 1000,
                kernel: int = 3) -> dict[str, float]:
    """A fully connected layer that reads a whole image, against a convolution with as many
    output channels: every unit has its own weight for every pixel, so the count grows with
    the image (the slides' 100×100×3 image and 1,000 units: 30 million weights), while the
    convolution shares one k×k×C filter per output channel across all positions."""
    if min(height, width, channels, units, kernel) < 1:
        raise ValueError("height, width, channels, units and kernel must be >= 1")
    inputs = height * width * channels
    conv = kernel * kernel * channels * units + units
    fc = inputs * units + units
    return {"height": height, "width": width, "channels": channels, "units": units,
            "inputs": inputs, "fc_params": fc, "kernel": kernel, "conv_params": conv,
            "ratio": fc / conv}


def reduction_saving(in_chs: int, reduce_chs: int, out_chs: int, kernel: int = 5,
                     size: int = 28) -> dict[str, float]:
    """A k×k convolution straight on `in_chs` channels, against a 1×1 convolution first
    reducing them to `reduce_chs` (GoogLeNet's dimension reduction, 1409.4842 §4): the
    expensive kernel then runs on a thin input. Defaults: inception (3a)'s 5×5 branch,
    192 → 16 → 32 channels on 28×28 (about 120 M against 12.4 M multiply-adds)."""
    if min(in_chs, reduce_chs, out_chs, kernel, size) < 1:
        raise ValueError("channels, kernel and size must be >= 1")
    hw = size * size
    direct = kernel * kernel * in_chs * out_chs
    reduced_1x1 = in_chs * reduce_chs
    reduced_kxk = kernel * kernel * reduce_chs * out_chs
    return {"in_chs": in_chs, "reduce_chs": reduce_chs, "out_chs": out_chs,
            "kernel": kernel, "size": size,
            "direct_weights": direct, "direct_macs": direct * hw,
            "reduced_weights": reduced_1x1 + reduced_kxk,
            "reduced_macs": (reduced_1x1 + reduced_kxk) * hw,
            "saving": 1 - (reduced_1x1 + reduced_kxk) / direct}
