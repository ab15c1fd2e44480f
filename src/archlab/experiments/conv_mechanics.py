"""`conv-mechanics`: what a convolution is, as arithmetic, and what max pooling buys.

A convolution is a linear map, so it is a matrix. Unroll the input image x (C_in x H x W)
into a vector of C_in*H*W numbers and the output (C_out x H' x W') into one of C_out*H'*W':
every output value is a weighted sum of a few input values, so conv2d(x) = M x for a matrix
M with one row per output value, holding the kernel's weights at the columns of the pixels
that kernel position sees and zeros elsewhere (padding adds no column: it is zeros times
weights). Row after row the same weights slide along, a band that repeats within each block
of rows and each block of blocks: a doubly-blocked Toeplitz matrix. From the matrix follow
two facts the course uses without proof:

- the gradient: for a loss L, dL/dx = M^T dL/dy, so backpropagation through a convolution is
  a multiplication by the transposed matrix; checked against autograd with
  L = sum(g * conv2d(x)) for a random g, whose gradient in x is exactly M^T g;
- the transposed convolution ("deconvolution" in the segmentation papers) is that same
  product: conv_transpose2d(y, w) = M^T y, with the same weights w. With stride 2 the
  convolution shrinks 6x6 to 3x3 and its transpose grows 3x3 back to 6x6 (output_padding
  resolves the rounding of the size, not the values).

Each is checked in float64, where the rounding error of a few dozen products is about
1e-16, against PyTorch's own conv2d, autograd and conv_transpose2d.

Max pooling's invariance to small shifts. Shift an image by d pixels and a convolution's
feature map shifts by d pixels with it (equivariance): at the same position of the frame the
features change. A k x k max pool reports only the largest feature within each window, and a
maximum that moves by less than the window often stays inside it, so the pooled features at
the same positions change less. Measured on real images (Fashion-MNIST's test set): one
convolution of 3x3 filters with random weights (fixed seeds), then ReLU, then no pooling or
a k x k max pool with stride k.

The change is defined with the frame held fixed. The image is zero-padded by MARGIN pixels
into a canvas; the original is the canvas's central H x W window, the image shifted right by d
is the window d pixels to the left (so no content wraps around, and the content leaves no
hole: Fashion-MNIST's garments lie on a black border that the padding continues). Both
windows are the same size, so their feature maps f and f_d have the same grid, position
(i, j) meaning the same place in the frame. The relative change is

    change = ||f_d - f|| / ||f||     (Frobenius norms over channels and positions)

per image, 0 for features that do not move, about sqrt(2) for features that move onto
positions where nothing was. Paired per image, unpooled against pooled, over the same images
and shifts: the mean change with its 95% t interval, the interval of the per-image difference
(unpooled - pooled) and Wilcoxon's signed-rank test of it.

Why random filters and not a trained first layer: the claim is about the max operation, not
about what the filters learned, and random 3x3 filters already respond to edges and blobs at
every position; no training keeps the experiment a few seconds long and its numbers the same
on every machine. `--seeds N` averages each image's change over N random filter banks.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from archlab._plot import figure, to_svg
from archlab.data import DataError, load_dataset
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.study.stats import mean_interval

TOLERANCE = 1e-10               # float64: the identities are exact up to rounding (~1e-16)
ALPHA = 0.05
SHIFTS = (1, 2, 3)
POOLS = (1, 2, 4)               # 1: no pooling
MARGIN = max(SHIFTS)
FILTERS = 8
IMAGES = {"quick": 500, "full": 5000}


def toeplitz(weight: torch.Tensor, size: int, stride: int = 1, padding: int = 1
             ) -> torch.Tensor:
    """The matrix M of conv2d(·, weight, stride, padding) on a C_in x size x size input:
    conv2d(x)[o, i, j] = (M @ x.flatten())[o*H'*W' + i*W' + j], one row per output value."""
    c_out, c_in, k, _ = weight.shape
    out = (size + 2 * padding - k) // stride + 1
    m = torch.zeros(c_out * out * out, c_in * size * size, dtype=weight.dtype)
    for o in range(c_out):
        for i in range(out):
            for j in range(out):
                row = (o * out + i) * out + j
                for a in range(k):
                    for b in range(k):
                        y, x = i * stride - padding + a, j * stride - padding + b
                        if 0 <= y < size and 0 <= x < size:     # padding: zeros, no column
                            cols = torch.arange(c_in) * size * size + y * size + x
                            m[row, cols] += weight[o, :, a, b]
    return m


def identities(c_in: int = 1, c_out: int = 2, size: int = 6, stride: int = 1,
               padding: int = 1, seed: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """M for a random 3x3 kernel, and the max |difference| of conv2d, its input gradient and
    conv_transpose2d against M x, M^T g and M^T y (float64)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, c_in, 3, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(1, c_in, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
    m = toeplitz(w, size, stride, padding)
    y = F.conv2d(x, w, stride=stride, padding=padding)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad((g * y).sum(), x)
    # conv_transpose2d's output size is ambiguous with a stride; output_padding picks `size`.
    extra = size - ((y.shape[-1] - 1) * stride - 2 * padding + 3)
    back = F.conv_transpose2d(g, w, stride=stride, padding=padding, output_padding=extra)
    flat = x.detach().flatten()
    diff = {"conv2d = M x": (m @ flat - y.detach().flatten()).abs().max(),
            "input gradient = M^T g": (m.T @ g.flatten() - grad.flatten()).abs().max(),
            "conv_transpose2d = M^T y": (m.T @ g.flatten() - back.flatten()).abs().max()}
    return m, {k: float(v) for k, v in diff.items()}


def shifted(images: torch.Tensor, d: int) -> torch.Tensor:
    """The images moved right by d pixels in a fixed frame: the window of the zero-padded
    canvas d pixels left of the centre (d = 0: the images themselves)."""
    h, w = images.shape[-2:]
    canvas = F.pad(images, (MARGIN, MARGIN, MARGIN, MARGIN))
    return canvas[..., MARGIN:MARGIN + h, MARGIN - d:MARGIN - d + w]


def features(images: torch.Tensor, weight: torch.Tensor, pool: int) -> torch.Tensor:
    f = F.relu(F.conv2d(images, weight, padding=1))
    return F.max_pool2d(f, pool) if pool > 1 else f


def relative_change(images: torch.Tensor, seeds: int = 1) -> dict[int, list[list[float]]]:
    """Per pool size, per shift in SHIFTS: each image's ||f_d - f|| / ||f||, averaged over
    `seeds` random filter banks (images with no feature response are left out)."""
    total = {p: torch.zeros(len(SHIFTS), len(images), dtype=torch.float64) for p in POOLS}
    for seed in range(seeds):
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(FILTERS, images.shape[1], 3, 3, generator=gen, dtype=torch.float64)
        w /= math.sqrt(9 * images.shape[1])
        for p in POOLS:
            f = features(images, w, p).flatten(1)
            for s, d in enumerate(SHIFTS):
                moved = features(shifted(images, d), w, p).flatten(1)
                total[p][s] += (moved - f).norm(dim=1) / f.norm(dim=1).clamp_min(1e-12)
    return {p: (t / seeds).tolist() for p, t in total.items()}


def _paired(unpooled: list[float], pooled: list[float]) -> tuple[float, float, float]:
    """The interval of the mean of unpooled - pooled, and Wilcoxon's p."""
    from scipy.stats import wilcoxon

    diff = np.asarray(unpooled) - np.asarray(pooled)
    ci = mean_interval(diff)
    p = 1.0 if not np.any(diff) else float(wilcoxon(diff).pvalue)
    return ci.low, ci.high, p


def decide(numbers: dict) -> tuple[str, str]:
    """From the identities' max differences and the per-image changes: holds when every
    difference is under TOLERANCE and every pool changes significantly less than no pooling
    at every shift (p < ALPHA, the interval of the difference above 0); does not hold when
    an identity fails or some pool changes significantly more; otherwise inconclusive."""
    worst = max(numbers["max_diff"].values())
    words = [f"max |difference| of the identities {worst:.1e} (tolerance {TOLERANCE:.0e})"]
    if worst >= TOLERANCE:
        bad = [k for k, v in numbers["max_diff"].items() if v >= TOLERANCE]
        return DOES_NOT_HOLD, words[0] + "; fails: " + ", ".join(bad)
    change = numbers["change"]
    less, more = [], []
    for s, d in enumerate(numbers["shifts"]):
        base = change["1"][s]
        parts = [f"{d} px: unpooled {np.mean(base):.3f}"]
        for pool in (k for k in change if k != "1"):
            low, high, p = _paired(base, change[pool][s])
            less.append(low > 0 and p < ALPHA)
            more.append(high < 0 and p < ALPHA)
            parts.append(f"{pool}x{pool} {np.mean(change[pool][s]):.3f} (less by "
                         f"[{low:.3f}, {high:.3f}], p={p:.1g})")
        words.append(", ".join(parts))
    because = "; ".join(words)
    if all(less):
        return HOLDS, because
    if any(more):
        return DOES_NOT_HOLD, because
    return INCONCLUSIVE, because


def _images(ctx: Context, n: int) -> tuple[torch.Tensor, str, list[str]]:
    try:
        data = load_dataset("fashion-mnist", "test", root=ctx.root, download=False)
        name, notes = "fashion-mnist", []
    except DataError as e:
        # The 8x8 digits, upsampled so that 1-3 px is a small shift as on 28x28 images.
        data = load_dataset("digits", "test", image_size=28)
        name, notes = "digits", [f"Fashion-MNIST is unavailable ({e}); the digits were used."]
    return data.images[:n].to(torch.float64) / 255.0, name, notes


class ConvMechanics(Experiment):
    name = "conv-mechanics"
    claim = ("A convolution is a product with a (doubly-blocked Toeplitz) matrix M, its "
             "gradient and the transposed convolution are products with M^T, and max pooling "
             "makes the features change less under shifts of a few pixels.")
    source = ("the course's lecture on convolutions (Dumoulin & Visin, 1603.07285, "
              "section 4; LeCun et al. 1998, section II.A on subsampling)")
    paper = "the identities exact; pooled features less sensitive to 1-3 px shifts"

    def run(self, ctx: Context) -> Outcome:
        m1, diff1 = identities(stride=1)
        m2, diff2 = identities(stride=2)
        images, dataset, notes = _images(ctx, IMAGES[ctx.scale])
        change = relative_change(images, ctx.seeds or 1)
        numbers = {
            "max_diff": {**{f"stride 1: {k}": v for k, v in diff1.items()},
                         **{f"stride 2: {k}": v for k, v in diff2.items()}},
            "shifts": list(SHIFTS),
            "change": {str(p): [[round(v, 6) for v in vs] for vs in change[p]] for p in POOLS},
            "images": len(images), "dataset": dataset, "filter_banks": ctx.seeds or 1}
        verdict, because = decide(numbers)
        return Outcome(
            verdict, because, ["measured", "value", "95% interval", "less than unpooled: p"],
            _rows(numbers),
            [Figure("The matrix of a convolution", _matrix_figure(m1, m2),
                    "M for 3x3 kernels, 1 -> 2 channels on a 6x6 input with padding 1: one "
                    "row per output value, one column per input pixel. With stride 1 (72 x "
                    "36) the band of nine weights slides one column per row and jumps at "
                    "each output row's end; with stride 2 (18 x 36) it slides two."),
             Figure("Feature change under a shift", _shift_figure(numbers),
                    "||f_d - f|| / ||f|| at the same positions of the frame, mean over the "
                    f"images ({len(images)} of {dataset}) with its 95% interval.")],
            numbers=numbers, notes=notes)


def _rows(numbers: dict) -> list[list[str]]:
    rows = [[f"max |diff| {k}", f"{v:.1e}", "", ""] for k, v in numbers["max_diff"].items()]
    change = numbers["change"]
    for s, d in enumerate(numbers["shifts"]):
        for pool, values in change.items():
            ci = mean_interval(values[s])
            p = "" if pool == "1" else f"{_paired(change['1'][s], values[s])[2]:.1g}"
            label = "no pooling" if pool == "1" else f"{pool}x{pool} max pool"
            rows.append([f"change, {d} px shift, {label}", f"{np.mean(values[s]):.3f}",
                         f"[{ci.low:.3f}, {ci.high:.3f}]", p])
    return rows


def _matrix_figure(m1: torch.Tensor, m2: torch.Tensor) -> str:
    fig = figure(9, 6, layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=[1, 1])
    limit = float(max(m1.abs().max(), m2.abs().max()))
    for ax, m, title in ((axes[0], m1, "stride 1"), (axes[1], m2, "stride 2")):
        image = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.grid(False)
        ax.set_title(f"{title}: M is {m.shape[0]} x {m.shape[1]}")
        ax.set_xlabel("input pixel (channel, row, column)")
        ax.set_ylabel("output value (channel, row, column)")
    fig.colorbar(image, ax=axes, shrink=0.6, label="weight")
    return to_svg(fig, "conv-matrix")


def _shift_figure(numbers: dict) -> str:
    fig = figure(5.5, 3.8, layout="constrained")
    ax = fig.subplots()
    shifts = numbers["shifts"]
    for pool, values in numbers["change"].items():
        means = [float(np.mean(v)) for v in values]
        cis = [mean_interval(v) for v in values]
        err = [[m - c.low for m, c in zip(means, cis)], [c.high - m for m, c in zip(means, cis)]]
        label = "no pooling" if pool == "1" else f"{pool}x{pool} max pool"
        ax.errorbar(shifts, means, yerr=err, marker="o", capsize=3, label=label)
    ax.set_xticks(shifts)
    ax.set_xlabel("shift (pixels)")
    ax.set_ylabel("relative change of the features")
    ax.set_ylim(bottom=0)
    ax.legend()
    return to_svg(fig, "conv-shift")


__all__ = ["ConvMechanics", "decide", "identities", "relative_change", "shifted", "toeplitz"]
