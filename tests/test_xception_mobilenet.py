"""Xception and MobileNet v1/v2: the papers' own numbers and the behaviour their ideas rest on.

Counts, peer parity, forward/backward and the contract are in test_models_common.py.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archlab
from archlab.models.layers import DepthwiseSeparableConv, InvertedResidual
from archlab.models.xception import SeparableConv, XceptionModule
from peers import count_params, randomize_norms


def _meta(name: str, **kw):
    with torch.device("meta"):
        return archlab.create_model(name, **kw).eval()


def _macs(module: nn.Module, *shape: int) -> float:
    """Multiply-adds of one forward pass (FlopCounterMode counts 2 FLOPs per MAC)."""
    device = next(module.parameters()).device
    with FlopCounterMode(display=False) as counter:
        module(torch.zeros(*shape, device=device))
    return counter.get_total_flops() / 2


def _is_affine(f, x: torch.Tensor) -> bool:
    """f(a) + f(b) == f(a + b) + f(0) holds for affine maps, not across a ReLU."""
    y = torch.randn_like(x)
    with torch.no_grad():
        return torch.allclose(f(x) + f(y), f(x + y) + f(torch.zeros_like(x)),
                              rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------
# Depthwise separable convolutions (1704.04861 section 3.1, 1610.02357)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("m,n,k,size", [(32, 64, 3, 16), (64, 512, 3, 14), (16, 24, 5, 9)])
def test_depthwise_separable_costs_1_over_n_plus_1_over_k_squared(m, n, k, size):
    standard = nn.Conv2d(m, n, k, padding=k // 2, bias=False)
    expected = 1 / n + 1 / k ** 2
    for separable in (DepthwiseSeparableConv(m, n, k), SeparableConv(m, n, k)):
        ratio = _macs(separable, 1, m, size, size) / _macs(standard, 1, m, size, size)
        assert ratio == pytest.approx(expected, rel=1e-9)
    if k == 3 and n >= 72:
        assert 8 < 1 / expected < 9  # "8 to 9 times less computation" (section 3.1)


def test_xception_separable_conv_has_no_activation_between_depthwise_and_pointwise():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    xception_sep = randomize_norms(SeparableConv(8, 16)).eval()
    assert _is_affine(xception_sep, x)
    # MobileNet's block has BN and ReLU after the depthwise half: the check tells them apart.
    mobilenet_sep = randomize_norms(DepthwiseSeparableConv(8, 16, act="relu", pw_act=False)).eval()
    assert not _is_affine(mobilenet_sep, x)


# --------------------------------------------------------------------------------------
# Xception (1610.02357)
# --------------------------------------------------------------------------------------


def test_xception_has_36_conv_layers_in_14_modules_12_of_them_residual():
    model = _meta("xception")
    seps = [m for m in model.modules() if isinstance(m, SeparableConv)]
    stem = [m for m in model.stem.modules() if isinstance(m, nn.Conv2d)]
    assert len(seps) + len(stem) == 36
    residual = [m for m in model.modules() if isinstance(m, XceptionModule)]
    # 14 modules: the stem and the exit flow's last two separable convolutions have no
    # shortcut, the other 12 do.
    assert len(residual) == 12


def test_xception_middle_flow_is_eight_residual_repeats_of_three_separable_convs():
    torch.manual_seed(0)
    model = _meta("xception")
    assert len(model.middle_flow) == 8
    # Only the middle flow is materialised, with random weights and norm statistics.
    middle = randomize_norms(model.middle_flow.to_empty(device="cpu")).eval()
    for m in middle.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    for module in model.middle_flow:
        assert sum(isinstance(m, SeparableConv) for m in module.modules()) == 3
        assert [m.conv_pw.out_channels for m in module.modules()
                if isinstance(m, SeparableConv)] == [728, 728, 728]
    x = torch.randn(2, 728, 3, 3)
    with torch.no_grad():
        assert not torch.allclose(middle(x), x)
        # Silence each module's branch: only identity shortcuts are left, the flow is x.
        for module in middle:
            module.branch[-1].bn.weight.zero_()
            module.branch[-1].bn.bias.zero_()
        torch.testing.assert_close(middle(x), x)


def test_xception_flows_have_figure_5_shapes_at_299():
    model = _meta("xception")
    x = torch.empty(1, 3, 299, 299, device="meta")
    entry = model.entry_flow(model.stem(x))
    assert entry.shape == (1, 728, 19, 19)
    assert model.middle_flow(entry).shape == (1, 728, 19, 19)
    assert model.exit_flow.module(entry).shape == (1, 1024, 10, 10)
    assert model.forward_features(x).shape == (1, 2048, 10, 10)


def test_xception_multiply_adds_match_reference():
    assert _macs(_meta("xception"), 1, 3, 299, 299) / 1e9 == pytest.approx(8.36, abs=0.01)


# --------------------------------------------------------------------------------------
# MobileNet v1 (1704.04861)
# --------------------------------------------------------------------------------------

# Tables 6 and 7: (width multiplier, resolution) -> (million Mult-Adds, million parameters).
V1_TABLES_6_7 = {(1.0, 224): (569, 4.2), (0.75, 224): (325, 2.6), (0.5, 224): (149, 1.3),
                 (0.25, 224): (41, 0.5), (1.0, 192): (418, 4.2), (1.0, 160): (290, 4.2),
                 (1.0, 128): (186, 4.2)}


@pytest.mark.parametrize("alpha,size", list(V1_TABLES_6_7))
def test_mobilenet_v1_cost_matches_tables_6_and_7(alpha, size):
    macs, params = V1_TABLES_6_7[alpha, size]
    model = _meta(f"mobilenet_v1_{round(alpha * 100):03d}", img_size=size)
    assert model.card.input_size == (3, size, size)
    assert _macs(model, 1, 3, size, size) / 1e6 == pytest.approx(macs, abs=1)
    assert round(count_params(model) / 1e6, 1) == params


def test_mobilenet_v1_resolution_multiplier_leaves_parameters_unchanged():
    counts = {size: count_params(_meta("mobilenet_v1_100", img_size=size))
              for size in (224, 192, 160, 128)}
    assert set(counts.values()) == {4_231_976}
    assert count_params(_meta("mobilenet_v1_100_160")) == 4_231_976


@pytest.mark.parametrize("alpha", [0.75, 0.5, 0.25])
def test_mobilenet_v1_width_multiplier_scales_parameters_by_about_alpha_squared(alpha):
    # The body's 1×1 convolutions scale exactly by α², its depthwise filters and norms by α
    # and the classifier by α; without the classifier the ratio is α² give or take a little.
    def body(name):
        model = _meta(name)
        return count_params(model) - count_params(model.head)

    ratio = body(f"mobilenet_v1_{round(alpha * 100):03d}") / body("mobilenet_v1_100")
    assert alpha ** 2 <= ratio <= 1.07 * alpha ** 2


def test_mobilenet_v1_resource_split_matches_table_2():
    """95% of the multiply-adds and 75% of the weights are in the 1×1 convolutions."""
    model = archlab.create_model("mobilenet_v1_100").eval()
    macs, weights = {}, {}

    def hook(module, _inp, out):
        if isinstance(module, nn.Linear):
            kind = "fc"
        elif module.groups > 1:
            kind = "dw"
        else:
            kind = "1x1" if module.kernel_size == (1, 1) else "3x3"
        macs[kind] = macs.get(kind, 0) + out.numel() * module.weight[0].numel()
        weights[kind] = weights.get(kind, 0) + module.weight.numel()

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    share = {k: 100 * v / sum(macs.values()) for k, v in macs.items()}
    weight_share = {k: 100 * v / sum(weights.values()) for k, v in weights.items()}
    # Table 2 (the paper counts weights without biases). Its 1.19% for the 3×3 stem does not
    # add up with the other rows (10.8 M of 569 M is 1.9%), so the stem is not checked.
    for kind, (mult_adds, params) in {"1x1": (94.86, 74.59), "dw": (3.06, 1.06),
                                      "fc": (0.18, 24.33)}.items():
        assert share[kind] == pytest.approx(mult_adds, abs=0.01)
        assert weight_share[kind] == pytest.approx(params, abs=0.01)


def test_mobilenet_v1_has_28_layers_counting_depthwise_and_pointwise_apart():
    model = _meta("mobilenet_v1_100")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 28
    assert sum(isinstance(m, DepthwiseSeparableConv) for m in model.modules()) == 13


# --------------------------------------------------------------------------------------
# MobileNet v2 (1801.04381)
# --------------------------------------------------------------------------------------


def test_mobilenet_v2_multiply_adds_match_table_4():
    # 300 M for 1.0 and 585 M for 1.4 at 224 px.
    assert _macs(_meta("mobilenet_v2_100"), 1, 3, 224, 224) / 1e6 == pytest.approx(300, rel=0.01)
    assert _macs(_meta("mobilenet_v2_140"), 1, 3, 224, 224) / 1e6 == pytest.approx(585, rel=0.01)


def test_mobilenet_v2_bottleneck_is_linear_and_expansion_is_relu6():
    torch.manual_seed(0)
    model = randomize_norms(archlab.create_model("mobilenet_v2_035", num_classes=10)).eval()
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17
    seen: dict[int, dict[str, torch.Tensor]] = {}

    def keep(i, part):
        return lambda _m, inp, out: seen.setdefault(i, {}).update(
            {part: out, f"{part}_in": inp[0]})

    for i, block in enumerate(blocks):
        block.conv_dw.register_forward_hook(keep(i, "dw"))
        block.conv_pwl.register_forward_hook(keep(i, "pwl"))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    for i, block in enumerate(blocks):
        dw, pwl = seen[i]["dw"], seen[i]["pwl"]
        assert dw.min() >= 0 and dw.max() <= 6, "the wide layers pass through ReLU6"
        assert pwl.min() < 0, "the projection keeps negative values: no ReLU after it"
        assert _is_affine(block.conv_pwl, seen[i]["pwl_in"]), "the projection is linear"


def test_mobilenet_v2_shortcut_joins_the_bottlenecks_where_shape_is_kept():
    torch.manual_seed(0)
    model = archlab.create_model("mobilenet_v2_035", num_classes=10).eval()
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    # Table 2: every repeat after the first of a row keeps the shape: 1+2+3+2+2 = 10.
    assert sum(b.has_skip for b in blocks) == 10
    with torch.no_grad():
        for block in blocks:
            block.conv_pwl.bn.weight.zero_()
            block.conv_pwl.bn.bias.zero_()
            first_conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
            x = torch.randn(1, first_conv.in_channels, 8, 8)
            out = block(x)
            # A silenced branch leaves the shortcut: the input itself, or nothing.
            torch.testing.assert_close(out, x if block.has_skip else torch.zeros_like(out))


def test_mobilenet_v2_first_row_has_no_expansion():
    block = _meta("mobilenet_v2_100").blocks[0][0]
    assert isinstance(block.conv_pw, nn.Identity)
    assert block.conv_dw.conv.in_channels == 32 and block.conv_pwl.conv.out_channels == 16


@pytest.mark.parametrize("name,head", [("mobilenet_v2_035", 1280), ("mobilenet_v2_050", 1280),
                                       ("mobilenet_v2_100", 1280), ("mobilenet_v2_140", 1792)])
def test_mobilenet_v2_width_multiplier_spares_the_last_conv_below_one(name, head):
    model = _meta(name)
    assert model.num_features == head == model.head_conv.conv.out_channels


# --------------------------------------------------------------------------------------
# Small inputs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xception", "mobilenet_v1_100", "mobilenet_v2_100"])
def test_small_input_keeps_a_4x4_map_from_32_px(name):
    model = _meta(name, small_input=True)
    features = model.forward_features(torch.empty(2, 3, 32, 32, device="meta"))
    assert features.shape[-2:] == (4, 4)
    assert model.feature_info[-1]["reduction"] == 8
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.stride == (1, 1)
