"""RegNet: what the generic tests don't see.

The generator's stages against the peers' own generators and the networks torchvision builds,
the Y block's squeeze-excitation against a hand computation, the multiply-adds against the
budgets the paper names its models by, and the small-input stem.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import archlab
from archlab.analysis import costs_of
from archlab.models import model_config
from archlab.models.regnet import RegNetBlock, block_widths, regnet_stages
from peers import build_peer

NAMES = archlab.list_models(family="regnet")
# torchvision's network at the same budget, whether or not it is the same network.
TORCHVISION_AT_BUDGET = {
    "regnetx_004": "regnet_x_400mf", "regnetx_008": "regnet_x_800mf",
    "regnetx_016": "regnet_x_1_6gf", "regnetx_032": "regnet_x_3_2gf",
    "regnetx_080": "regnet_x_8gf", "regnetx_160": "regnet_x_16gf",
    "regnety_004": "regnet_y_400mf", "regnety_008": "regnet_y_800mf",
    "regnety_016": "regnet_y_1_6gf", "regnety_032": "regnet_y_3_2gf",
    "regnety_080": "regnet_y_8gf", "regnety_160": "regnet_y_16gf",
}


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return archlab.create_model(name, **kw)


def _stages(name: str) -> list[tuple[int, int, int]]:
    """(width, depth, group width) of each stage of the built network, read off its layers."""
    out = []
    for stage in _meta(name).stages:
        conv2 = stage[0].conv2.conv
        out.append((stage[0].conv3.conv.out_channels, len(stage),
                    conv2.out_channels // conv2.groups))
    return out


def _torchvision_stages(tv_name: str) -> list[tuple[int, int, int]]:
    trunk = build_peer("torchvision", tv_name, device="meta").trunk_output
    out = []
    for stage in trunk:
        first = next(iter(stage))
        conv_b = first.f.b[0]
        out.append((first.f.c[0].out_channels, len(stage),
                    conv_b.out_channels // conv_b.groups))
    return out


def test_the_paper_smallest_and_deits_teacher_by_hand():
    # RegNetX-200MF's ramp (w0=24, wa=36.44, wm=2.49, d=13): u_1 = 60.44 is 2.518 times
    # w0, log base 2.49 of it 1.01 -> 24·2.49 = 59.76 -> 56 (a multiple of 8), and so on.
    assert block_widths(24, 36.44, 2.49, 13) == [24, 56] + [152] * 4 + [368] * 7
    assert _stages("regnetx_002") == [(24, 1, 8), (56, 1, 8), (152, 4, 8), (368, 7, 8)]
    assert _stages("regnety_160") == [(224, 2, 112), (448, 4, 112), (1232, 11, 112),
                                      (3024, 1, 112)]


@pytest.mark.parametrize("name", NAMES)
def test_stages_equal_timms_generator_from_timms_configuration(name):
    from timm.models.regnet import adjust_widths_groups_comp, generate_regnet, model_cfgs

    cfg = model_cfgs[name]
    widths, n_stages, groups = generate_regnet(cfg.wa, cfg.w0, cfg.wm, cfg.depth,
                                               cfg.group_size)
    stage_widths = sorted(set(widths))
    depths = [widths.count(w) for w in stage_widths]
    stage_widths, groups = adjust_widths_groups_comp(stage_widths, [1.0] * n_stages, groups)
    assert _stages(name) == list(zip(stage_widths, depths, groups))
    assert model_config(name)["se_ratio"] == cfg.se_ratio


@pytest.mark.parametrize("name", sorted(TORCHVISION_AT_BUDGET))
def test_torchvision_is_a_peer_exactly_where_it_builds_the_same_stages(name):
    """torchvision rounds a stage's width to its group width with make_divisible (never more
    than 10% down) where pycls and timm take the nearest multiple: three budgets differ."""
    tv_name = TORCHVISION_AT_BUDGET[name]
    same = _torchvision_stages(tv_name) == _stages(name)
    assert same == (archlab.model_card(name).peers.get("torchvision") == tv_name)
    assert same == (name not in ("regnetx_004", "regnety_008", "regnety_080"))


def test_torchvision_block_params_agree_with_the_generator():
    from torchvision.models.regnet import BlockParams

    # RegNetY-16GF, the DeiT teacher: torchvision's generator on the same six numbers.
    params = BlockParams.from_init_params(depth=18, w_0=200, w_a=106.23, w_m=2.48,
                                          group_width=112, se_ratio=0.25)
    ours = regnet_stages(200, 106.23, 2.48, 18, 112)
    assert [s.width for s in ours] == params.widths
    assert [s.depth for s in ours] == params.depths
    assert [s.group_width for s in ours] == params.group_widths


def _se_gate(block: RegNetBlock, mid: torch.Tensor) -> torch.Tensor:
    squeezed = mid.mean((2, 3), keepdim=True)
    return torch.sigmoid(block.se.fc2(torch.relu(block.se.fc1(squeezed))))


def test_y_block_squeezes_the_bottleneck_by_a_quarter_of_its_input():
    # RegNetY-400MF's first block: 32 stem channels in, 48 out, group width 8.
    first = _meta("regnety_004").stages[0][0]
    fc1, fc2 = first.se.fc1, first.se.fc2
    assert (fc1.in_channels, fc1.out_channels, fc2.out_channels) == (48, 8, 48)
    assert first.conv2.conv.groups == 48 // 8
    torch.manual_seed(0)
    block = RegNetBlock(32, 48, 2, 8, se_ratio=0.25).eval()
    for p in block.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 32, 8, 8)
    # By hand: SE reweighs the 3×3 group convolution's output, before the last 1×1.
    with torch.no_grad():
        mid = block.conv2(block.conv1(x))
        expected = torch.relu(block.conv3(mid * _se_gate(block, mid)) + block.shortcut(x))
        torch.testing.assert_close(block(x), expected)


def test_x_blocks_have_no_squeeze_excitation():
    model = _meta("regnetx_004")
    assert not any(isinstance(m, nn.Conv2d) and m.bias is not None for m in model.modules())
    assert all(isinstance(b.se, nn.Identity) for stage in model.stages for b in stage)


@pytest.mark.parametrize("name,budget", [("regnetx_004", 0.4e9), ("regnety_004", 0.4e9),
                                         ("regnety_160", 16e9)])
def test_multiply_adds_match_the_budget_in_the_name(name, budget):
    _, macs = costs_of(_meta(name), (3, 224, 224))
    assert macs == pytest.approx(budget, rel=0.05)


def test_small_input_stem_keeps_the_resolution():
    big, small = _meta("regnetx_002"), _meta("regnetx_002", small_input=True)
    assert [i["reduction"] for i in big.feature_info] == [4, 8, 16, 32]
    assert [i["reduction"] for i in small.feature_info] == [2, 4, 8, 16]
    _, stages = small.forward_intermediates(torch.empty(1, 3, 32, 32, device="meta"))
    assert stages[-1].shape[-2:] == (2, 2)


def test_zero_init_last_starts_each_block_at_its_shortcut():
    torch.manual_seed(0)
    model = archlab.create_model("regnetx_002", small_input=True, zero_init_last=True).eval()
    block = model.stages[2][1]  # an identity-shortcut block
    x = torch.rand(1, 152, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


def test_bad_generator_numbers_name_the_fix():
    with pytest.raises(ValueError, match="w0 a positive multiple of 8.*w0=20"):
        block_widths(20, 36.44, 2.49, 13)
    with pytest.raises(ValueError, match="wm=1.0"):
        archlab.create_model("regnetx_002", wm=1.0)
