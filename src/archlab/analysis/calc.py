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


def receptive_field(layers: list[tuple[int, int]]) -> dict[str, float]:
    """Receptive field and cumulative stride after a chain of (kernel, stride) layers:
    r ← r + (k − 1)·j, j ← j·s."""
    r, j = 1, 1
    for k, s in layers:
        r, j = r + (k - 1) * j, j * s
    return {"layers": len(layers), "receptive_field": r, "stride": j}
