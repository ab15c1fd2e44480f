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


def test_dilated_receptive_field_chain_equals_gradient_support():
    torch.manual_seed(0)
    chain = [(3, 1, 1), (3, 2, 1), (3, 1, 2), (3, 1, 4)]
    net = nn.Sequential(*[nn.Conv2d(1, 1, k, stride=s, dilation=d, padding=d * (k - 1) // 2)
                          for k, s, d in chain])
    for m in net:
        nn.init.uniform_(m.weight, 0.1, 1.0)
    r = calc.receptive_field(chain)
    assert (r["receptive_field"], r["stride"]) == (3 + 2 + 2 * 2 * 2 + 2 * 4 * 2, 2)
    assert r["fields"] == [3, 5, 13, 29] and r["strides"] == [1, 2, 2, 2]
    assert _gradient_support(net, 80) == (r["receptive_field"],) * 2
    # Without the dilations, the same weights see much less.
    assert calc.receptive_field([(3, 1), (3, 2), (3, 1), (3, 1)])["receptive_field"] == 13


def test_attention_cost_equals_vit_tokens_and_flop_counter():
    r = calc.attention_cost(224, 16, 768, 12)
    with torch.device("meta"):
        vit = archlab.create_model("vit_base_patch16_224")
    assert r["patch_tokens"] == vit.num_tokens == 197
    n, heads, head_dim = r["patch_tokens"], 12, 64
    q = torch.empty(1, heads, n, head_dim, device="meta")
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert r["patch_macs"] == fc.get_total_flops() // 2
    assert r["patch_entries"] == heads * n * n
    # 512 px: pixels as tokens (262,145) against 16 px patches (1,025), the slide's example.
    big = calc.attention_cost(512, 16)
    assert (big["pixel_tokens"], big["patch_tokens"]) == (512 * 512 + 1, 32 * 32 + 1)
    assert big["ratio"] == pytest.approx((262_145 / 1_025) ** 2)
    with pytest.raises(ValueError, match="does not split"):
        calc.attention_cost(100, 16)


def test_fc_on_a_whole_image_against_nn_linear_and_conv():
    r = calc.fc_on_image(100, 100, 3, 1000, kernel=3)
    assert r["fc_params"] == sum(p.numel() for p in nn.Linear(30_000, 1000).parameters())
    assert r["fc_params"] == 30_001_000          # the slides: 30 million for one layer
    assert r["conv_params"] == sum(p.numel() for p in nn.Conv2d(3, 1000, 3).parameters())


def test_reduction_saving_equals_flop_counter():
    r = calc.reduction_saving(192, 16, 32, kernel=5, size=28)
    x = torch.zeros(1, 192, 28, 28)
    direct = nn.Conv2d(192, 32, 5, padding=2, bias=False)
    reduced = nn.Sequential(nn.Conv2d(192, 16, 1, bias=False),
                            nn.Conv2d(16, 32, 5, padding=2, bias=False))

    def macs(module):
        with FlopCounterMode(display=False) as fc:
            module(x)
        return fc.get_total_flops() // 2

    assert r["direct_macs"] == macs(direct) == 120_422_400      # "120 million"
    assert r["reduced_macs"] == macs(reduced) == 12_443_648     # "12.4 million"
    assert r["reduced_weights"] == sum(p.numel() for p in reduced.parameters())
    assert r["saving"] == pytest.approx(1 - 12_443_648 / 120_422_400)


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


# REFERENCE.md's multiply-accumulates at the default resolution (torchvision, timm).
REFERENCE_GMACS = {
    "alexnet": 0.714, "vgg11": 7.61, "vgg13": 11.31, "vgg16": 15.47, "vgg19": 19.63,
    "vgg16_bn": 15.47, "googlenet": 1.50, "inception_v3": 5.71, "resnet18": 1.81,
    "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.80, "resnet152": 11.51,
    "resnet50d": 4.33, "resnetv2_50": 4.11, "resnext50_32x4d": 4.23,
    "resnext101_32x8d": 16.41, "seresnext50_32x4d": 4.23, "wide_resnet50_2": 11.40,
    "xception": 8.36, "mobilenet_v1_100": 0.57, "mobilenet_v2_100": 0.30,
    "efficientnet_b0": 0.386, "efficientnet_b1": 0.687, "efficientnet_b2": 0.994,
    "efficientnet_b3": 1.827, "efficientnet_lite0": 0.385, "convnext_tiny": 4.46,
    "convnext_small": 8.68, "convnext_base": 15.36, "convnext_large": 34.4,
    # The SE paper's 3.86 GFLOPs (multiply-adds) is the original ResNet-50, stride on the 1×1.
    "resnet50_v1": 3.86,
}
# Transformers: the peers' published figures leave out the attention matrices (Q·Kᵀ and
# A·V, 2·T²·D per layer), which torch's flop counter counts.
REFERENCE_GMACS_WITHOUT_ATTENTION = {
    "vit_tiny_patch16_224": 1.08, "vit_small_patch16_224": 4.24,
    "vit_base_patch16_224": 16.85, "deit_tiny_distilled_patch16_224": 1.08,
    "deit_small_distilled_patch16_224": 4.26, "deit_base_distilled_patch16_224": 16.93,
}


@pytest.mark.parametrize("name", sorted(REFERENCE_GMACS))
def test_macs_equal_the_reference(name):
    macs = profile(name).macs / 1e9
    assert macs == pytest.approx(REFERENCE_GMACS[name], rel=0.01, abs=0.006)


@pytest.mark.parametrize("name", sorted(REFERENCE_GMACS_WITHOUT_ATTENTION))
def test_transformer_macs_equal_the_reference_plus_attention(name):
    p = profile(name)
    with torch.device("meta"):
        model = archlab.create_model(name)
    t, d = model.num_tokens, model.embed_dim
    attention = model.depth * 2 * t * t * d
    assert (p.macs - attention) / 1e9 == pytest.approx(
        REFERENCE_GMACS_WITHOUT_ATTENTION[name], rel=0.01)


def test_profile_passes_a_models_own_depth_and_width_to_it():
    # `depth` is EfficientNet's depth multiplier here, not the per-layer table's depth.
    full = archlab.profile("efficientnet_b0", img_size=32, small_input=True, width=0.35)
    half = archlab.profile("efficientnet_b0", img_size=32, small_input=True, width=0.35,
                           depth=0.5)
    built = archlab.create_model("efficientnet_b0", small_input=True, width=0.35, depth=0.5)
    assert half.params == sum(p.numel() for p in built.parameters()) < full.params
    assert half.macs < full.macs


def test_costs_of_gives_profiles_two_numbers():
    from archlab.analysis import costs_of, model_costs
    from archlab.models import create_model

    p = profile("resnet18", 224)
    assert model_costs("resnet18", use_cache=False) == (p.params, p.macs)
    model = create_model("lenet5", num_classes=10, in_chans=1).train()
    lenet = profile(model, 32)
    assert costs_of(model, (1, 32, 32)) == (lenet.params, lenet.macs)
    assert model.training            # left as it was found


def test_profile_takes_a_runs_model_kwargs_with_the_models_own_img_size():
    # A ViT built for 28 px stores a 7x7 grid of position embeddings; profiling it at 28 px
    # passes that img_size to the model, not as the input's (it was a TypeError).
    kwargs = {"img_size": 28, "patch_size": 4, "small_patch_size": 4, "embed_dim": 64,
              "depth": 1, "num_heads": 2}
    p = profile("vit_tiny_patch4_32", 28, in_chans=1, small_input=True, model_kwargs=kwargs)
    q = profile("vit_tiny_patch4_32", 28, in_chans=1, small_input=True,
                model_kwargs={**kwargs, "img_size": 32})
    assert p.params - q.params == (49 - 64) * 64     # 7x7 against 8x8 stored positions
