"""`calc` and `profile` against hand computations and PyTorch's own layers."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archlab
from archlab.analysis import calc
from archlab.analysis.profile import profile


def test_conv_output_size_matches_nn_conv2d_on_random_configs():
    rng = random.Random(0)
    checked = 0
    while checked < 300:
        size, k = rng.randint(1, 64), rng.randint(1, 9)
        s, p, d = rng.randint(1, 4), rng.randint(0, 4), rng.randint(1, 3)
        conv = nn.Conv2d(1, 1, k, s, p, dilation=d)
        try:
            expected = conv(torch.zeros(1, 1, size, size)).shape[-1]
        except RuntimeError:
            with pytest.raises(ValueError, match="does not fit"):
                calc.conv_output_size(size, k, s, p, d)
            continue
        assert calc.conv_output_size(size, k, s, p, d) == expected, (size, k, s, p, d)
        checked += 1


def test_stacked_3x3_against_large_kernels():
    two = calc.stacked_convs(3, 2)
    assert (two["receptive_field"], two["stack_weights"], two["single_weights"]) == (5, 18, 25)
    three = calc.stacked_convs(3, 3)
    assert (three["receptive_field"], three["stack_weights"],
            three["single_weights"]) == (7, 27, 49)
    assert calc.stacked_convs(3, 3, channels=64)["stack_weights"] == 27 * 64 * 64


def test_separable_cost_equals_flop_counter_and_formula():
    m, n, k, hw = 32, 64, 3, 14
    standard = nn.Conv2d(m, n, k, padding=1, bias=False)
    separable = nn.Sequential(nn.Conv2d(m, m, k, padding=1, groups=m, bias=False),
                              nn.Conv2d(m, n, 1, bias=False))
    x = torch.zeros(1, m, hw, hw)

    def macs(module):
        with FlopCounterMode(display=False) as fc:
            module(x)
        return fc.get_total_flops() // 2

    r = calc.separable_cost(m, n, k, hw)
    assert r["standard_macs"] == macs(standard)
    assert r["separable_macs"] == macs(separable)
    assert r["ratio"] == pytest.approx(1 / n + 1 / k ** 2)
    assert r["standard_weights"] == standard.weight.numel()
    assert r["separable_weights"] == sum(p.numel() for p in separable.parameters())


def test_receptive_field_chain_alexnet_by_hand():
    # conv1 11/4, pool 3/2, conv2 5/1, pool 3/2, conv3-5 3/1, pool 3/2: 195 px, stride 32.
    r = calc.receptive_field([(11, 4), (3, 2), (5, 1), (3, 2), (3, 1), (3, 1), (3, 1), (3, 2)])
    assert (r["receptive_field"], r["stride"]) == (195, 32)
    assert profile("alexnet").receptive_field == (195.0, 195.0)


def _gradient_support(net: nn.Module, size: int) -> tuple[int, int]:
    """Empirical receptive field: the input pixels on which the centre output unit depends."""
    x = torch.rand(1, 1, size, size, requires_grad=True)
    out = net(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero()
    cols = (x.grad[0, 0].abs().sum(0) > 0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_profile_receptive_field_equals_gradient_support():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(4, 4, 5, stride=2, padding=2),
        nn.Conv2d(4, 4, (3, 1), padding=(1, 0)), nn.Conv2d(4, 4, 3, dilation=2, padding=2),
        nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(4, 1, 3, padding=1))
    for m in net.modules():   # positive weights: no cancellation hides a pixel
        if isinstance(m, nn.Conv2d):
            nn.init.uniform_(m.weight, 0.1, 1.0)
    p = profile(net, 96, in_chans=1, device="cpu")
    assert p.layers[-1].receptive_field == tuple(float(v) for v in _gradient_support(net, 96))


def test_profile_counts_alexnet_like_the_reference():
    p = profile("alexnet")
    assert p.params == 61_100_840
    assert p.macs == pytest.approx(0.714e9, rel=2e-3)
    assert p.flops == 2 * p.macs
    assert sum(r.macs for r in p.layers) == p.macs
    conv1 = p.layers[0]
    assert conv1.name == "features.conv1" and conv1.output_shape == (1, 64, 55, 55)
    assert conv1.macs == 64 * 55 * 55 * 3 * 11 * 11 and conv1.stride == (4.0, 4.0)
    # Activation memory is the float32 outputs of every leaf layer, and scales with batch.
    assert profile("alexnet", batch_size=4).activation_bytes == 4 * p.activation_bytes
    assert p.activation_bytes == 4 * sum(
        torch.Size(r.output_shape).numel() for r in p.layers)
