"""EfficientNet, Lite and V2: the compound-scaling rule, TensorFlow's 'SAME' padding, the
Lite and V2 changes, and the efficientnet-pytorch layout where the generic tests cannot reach.

The generic tests (test_models_common.py) already check every registered count against
REFERENCE.md and the peers, and the logits against torchvision, timm and efficientnet-pytorch.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import archlab
from archlab.models.weights import CheckpointError, convert_state_dict, load_state_dict
from archlab.models.efficientnet import LITE_COEFFS, efficientnet_custom
from archlab.models.layers import Conv2dSame, ConvNormAct, DropPath, SqueezeExcite
from peers import build_peer, count_params, logits_close, randomize_norms


def _meta(name: str, **kw):
    with torch.device("meta"):
        return archlab.create_model(name, **kw)


@torch.no_grad()
def _calibrate_norms(model: nn.Module, size: int = 72, batch: int = 4) -> nn.Module:
    """Give every batch norm the statistics of a batch that went through it.

    With random running statistics (peers.randomize_norms) the norms do not normalise, the
    signal dies out over EfficientNet's 16-55 blocks and the logits hardly depend on the
    image (two images differ by ~1e-7): a parity test would then see the head and little
    else, and a wrong padding would pass. Measured statistics keep every layer in play.
    """
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one pass gives that batch's statistics
            m.train()
    model(torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2)))
    return model.eval()


def _assert_parity(model: nn.Module, peer: nn.Module, size: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peer(x)
        # The check means something only if the logits depend on the image.
        assert (expected[0] - expected[1]).abs().max() > 0.1 * expected.abs().max()
        logits_close(model(x), expected)


def _macs(model: nn.Module, size: int) -> float:
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        model.eval()(x)
    return counter.get_total_flops() / 2  # the counter counts a multiply-add as 2 FLOPs


TF_BN = dict(bn_eps=1e-3, bn_momentum=0.01)


# -- parity with every layer in play ---------------------------------------------------


# One case per conversion path: torchvision's and timm's MBConv layouts (timm's first stage
# is a DepthwiseSeparableConv), timm's 'same' padding, and V2's Fused-MBConv in both layouts.
# efficientnet-pytorch's is checked below at its own static padding and for Lite.
@pytest.mark.parametrize("name,source", [
    ("efficientnet_b0", "torchvision"), ("efficientnet_b0", "timm"),
    ("tf_efficientnet_lite0", "timm"),
    ("efficientnet_v2_s", "torchvision"), ("efficientnet_v2_s", "timm"),
])
def test_logits_equal_peer_with_measured_norm_statistics(name, source):
    # 72 px: maps of 36, 18, 9, 5 and 3 px, even and odd, where 'same' padding is
    # asymmetric and where it is not.
    torch.manual_seed(0)
    peer = _calibrate_norms(randomize_norms(build_peer(source, archlab.model_card(name).peers[
        source])))
    model = archlab.create_model(name).eval()
    report = load_state_dict(model, peer.state_dict(), source)
    assert not report.reset and not report.adapted
    _assert_parity(model, peer, 72)


# -- compound scaling ------------------------------------------------------------------


def test_b3_is_b0_scaled_by_the_released_coefficients():
    # By hand from Table 1 and B3's (width 1.2, depth 1.4): channels make_divisible(c·1.2, 8)
    # (16·1.2 = 19.2 rounds to 16, more than 10% down, so 24), repeats ceil(n·1.4).
    model = _meta("efficientnet_b3")
    assert [s["out_chs"] for s in model.stage_config] == [24, 32, 48, 96, 136, 232, 384]
    assert [s["repeats"] for s in model.stage_config] == [2, 3, 3, 5, 5, 6, 2]
    assert model.stem.conv.out_channels == 40 and model.num_features == 1536
    assert model.scaling == dict(width=1.2, depth=1.4, resolution=300, dropout=0.3)
    assert [len(stage) for stage in model.stages] == [2, 3, 3, 5, 5, 6, 2]
    assert archlab.model_card("efficientnet_b3").input_size == (3, 300, 300)


def test_custom_phi_zero_is_b0_and_phi_sets_the_three_dimensions():
    b0 = _meta("efficientnet_b0")
    with torch.device("meta"):
        direct = efficientnet_custom(phi=0.0)
    shapes = {k: v.shape for k, v in b0.state_dict().items()}
    for custom in (direct, _meta("efficientnet_custom")):  # the registered name: phi = 0
        assert {k: v.shape for k, v in custom.state_dict().items()} == shapes
        assert custom.stage_config == b0.stage_config and custom.scaling == b0.scaling

    model = _meta("efficientnet_custom", phi=1.5)
    assert model.scaling["width"] == pytest.approx(1.1 ** 1.5)
    assert model.scaling["depth"] == pytest.approx(1.2 ** 1.5)
    assert model.scaling["resolution"] == 280  # 224·1.15^1.5 = 276.2, nearest multiple of 8
    assert [s["repeats"] for s in model.stage_config] == [
        math.ceil(n * 1.2 ** 1.5) for n in (1, 2, 2, 3, 3, 4, 1)]


def test_reference_macs():
    # REFERENCE.md (torchvision's figures): B0 0.386 G @224, B1 0.687 @240, B2 0.994 @260,
    # B3 1.827 @300.
    for name, size, macs in (("efficientnet_b0", 224, 0.386e9), ("efficientnet_b1", 240, 0.687e9),
                             ("efficientnet_b2", 260, 0.994e9), ("efficientnet_b3", 300, 1.827e9)):
        assert _macs(_meta(name), size) == pytest.approx(macs, rel=0.02), name


def test_custom_flops_grow_about_two_to_the_phi():
    # α·β²·γ² = 1.92 per unit of φ; the ceil on the repeats adds a little. Leaving out depth,
    # width or resolution would give 1.6, 1.59 or 1.45 per unit instead.
    base = _macs(_meta("efficientnet_custom"), 224)
    for phi in (1.0, 2.0):
        model = _meta("efficientnet_custom", phi=phi)
        per_unit = (_macs(model, model.scaling["resolution"]) / base) ** (1 / phi)
        assert 1.8 < per_unit < 2.4, (phi, per_unit)


# -- TensorFlow's 'SAME' padding ---------------------------------------------------------


def test_same_padding_puts_the_extra_pixel_bottom_right():
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # ceil(4 / 2) = 2 outputs need (2 - 1)·2 + 3 = 5 input rows: one zero row below, none
    # above; so the first window is rows/cols 0-2 and the last is rows/cols 2-3 plus zeros.
    expected = torch.tensor([[[[45.0, 39.0], [66.0, 50.0]]]])
    with torch.no_grad():
        torch.testing.assert_close(conv(x), expected)
        # PyTorch's symmetric padding would have started the first window at the zero row.
        symmetric = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
        nn.init.ones_(symmetric.weight)
        assert symmetric(x)[0, 0, 0, 0] == 0 + 1 + 4 + 5


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_same_padding_gives_ceil_of_size_over_stride(kernel, stride):
    block = ConvNormAct(2, 2, kernel, stride, padding="same_tf")
    assert isinstance(block.conv, Conv2dSame)
    for size in range(1, 12):
        out = block.conv(torch.zeros(1, 2, size, size + 1))
        assert out.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))


def test_static_padding_of_the_package_at_its_own_size():
    """efficientnet-pytorch pads statically: each convolution's padding is fixed when the
    model is built, from the map size that the `image_size` it is built for will give (the
    generic tests use its dynamic mode). Built for 80 px, the stride-2 layers see 80, 40, 20
    and 10 px (even: one pixel more at the bottom/right) and 5 px (odd: symmetric), the same
    mix as B1's own 240 px (240, 120, 60, 30; 15), at a ninth of the cost."""
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    peer = EfficientNet.from_name("efficientnet-b1", image_size=80)
    assert any(not isinstance(m.static_padding, nn.Identity) for m in peer.modules()
               if hasattr(m, "static_padding"))
    peer = _calibrate_norms(randomize_norms(peer), 80)
    ours = archlab.create_model("tf_efficientnet_b1").eval()
    load_state_dict(ours, peer.state_dict())  # the source is detected
    _assert_parity(ours, peer, 80)
    # The same weights with PyTorch's symmetric padding are another network.
    symmetric = archlab.create_model("efficientnet_b1", **TF_BN).eval()
    symmetric.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        assert not torch.allclose(symmetric(x), ours(x), rtol=0.01, atol=0.01)


# -- Lite ---------------------------------------------------------------------------------


def test_lite_has_no_squeeze_excitation_and_uses_relu6():
    model = _meta("efficientnet_lite0")
    kinds = {type(m) for m in model.modules()}
    assert SqueezeExcite not in kinds and nn.SiLU not in kinds and nn.ReLU6 in kinds
    assert all(s["se"] == 0 for s in model.stage_config)
    b0 = _meta("efficientnet_b0")
    assert any(isinstance(m, SqueezeExcite) for m in b0.modules())


def test_lite_keeps_stem_head_and_first_last_depths_fixed():
    lite4, b4 = _meta("efficientnet_lite4"), _meta("efficientnet_b4")  # both width 1.4, depth 1.8
    assert lite4.stem.conv.out_channels == 32 and lite4.num_features == 1280
    assert b4.stem.conv.out_channels == 48 and b4.num_features == 1792
    assert [s["repeats"] for s in lite4.stage_config] == [1, 4, 4, 6, 6, 8, 1]
    assert [s["repeats"] for s in b4.stage_config] == [2, 4, 4, 6, 6, 8, 2]
    # The body is scaled the same way.
    assert [s["out_chs"] for s in lite4.stage_config] == [s["out_chs"] for s in b4.stage_config]


def _lite_in_package_layout(index: int) -> nn.Module:
    """efficientnet-pytorch has no Lite models, but its EfficientNet class takes any block
    table: build Lite with the package's own rounding and the official Lite rules (no SE,
    first and last repeats and stem and head unscaled), then swap swish for ReLU6."""
    from efficientnet_pytorch import EfficientNet
    from efficientnet_pytorch.utils import efficientnet, round_filters, round_repeats

    width, depth, _, _ = LITE_COEFFS[index]
    blocks, params = efficientnet(width_coefficient=width, depth_coefficient=depth)
    last = len(blocks) - 1
    blocks = [b._replace(input_filters=round_filters(b.input_filters, params),
                         output_filters=round_filters(b.output_filters, params),
                         num_repeat=b.num_repeat if i in (0, last) else
                         round_repeats(b.num_repeat, params), se_ratio=None)
              for i, b in enumerate(blocks)]
    blocks[0] = blocks[0]._replace(input_filters=32)  # the unscaled stem feeds it
    # Without a width coefficient the package leaves the stem's 32 and the head's 1280 alone;
    # image_size=None is its dynamic (any size) 'same' padding.
    peer = EfficientNet(blocks, params._replace(width_coefficient=None, depth_coefficient=None,
                                                image_size=None))
    for m in [peer, *peer._blocks]:
        m._swish = nn.ReLU6()
    return peer


@pytest.mark.parametrize("index", range(5))
def test_lite_in_the_efficientnet_pytorch_layout_has_our_keys_and_shapes(index):
    with torch.device("meta"):
        peer = _lite_in_package_layout(index)
    name = f"tf_efficientnet_lite{index}"
    assert count_params(peer) == archlab.model_card(name).params
    converted, report = convert_state_dict(_meta(name), peer.state_dict())
    assert report.source == "efficientnet-pytorch" and len(converted) == len(peer.state_dict())


# Lite1: first and last depths kept while the rest grows by 1.1; Lite4: width 1.4 and depth 1.8.
@pytest.mark.parametrize("index", [1, 4])
def test_lite_from_the_efficientnet_pytorch_layout_gives_the_same_logits(index):
    torch.manual_seed(0)
    peer = _calibrate_norms(randomize_norms(_lite_in_package_layout(index)))
    name = f"tf_efficientnet_lite{index}"
    assert count_params(peer) == archlab.model_card(name).params
    model = archlab.create_model(name).eval()
    report = load_state_dict(model, peer.state_dict())
    assert report.source == "efficientnet-pytorch" and not report.reset
    _assert_parity(model, peer, 72)


# -- stochastic depth ---------------------------------------------------------------------


def test_drop_connect_grows_linearly_with_the_block_index():
    model = _meta("efficientnet_b0")
    blocks = [b for stage in model.stages for b in stage]
    assert len(blocks) == 16
    for i, block in enumerate(blocks):
        if block.has_skip and i > 0:
            assert isinstance(block.drop_path, DropPath)
            assert block.drop_path.drop_prob == pytest.approx(0.2 * i / 16)
        else:  # no residual to fall back on, or a rate of 0
            assert isinstance(block.drop_path, nn.Identity)
    assert not any(isinstance(m, DropPath) for m in
                   _meta("efficientnet_b0", drop_path_rate=0.0).modules())


# -- EfficientNetV2 -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["s", "m", "l"])
def test_v2_uses_fused_mbconv_in_the_early_stages(variant):
    import torchvision

    ours = _meta(f"efficientnet_v2_{variant}")
    with torch.device("meta"):
        tv = torchvision.models.get_model(f"efficientnet_v2_{variant}")
    tv_blocks = [type(stage[0]).__name__ for stage in list(tv.features)[1:-1]]
    assert [s["block"].replace("-", "") for s in ours.stage_config] == tv_blocks
    assert tv_blocks[:3] == ["FusedMBConv"] * 3 and set(tv_blocks[3:]) == {"MBConv"}
    for stage, cfg in zip(ours.stages, ours.stage_config):
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        has_se = any(isinstance(m, SqueezeExcite) for m in stage.modules())
        if cfg["block"] == "Fused-MBConv":  # regular convolutions only, no SE
            assert all(c.groups == 1 for c in convs) and not has_se
        else:
            assert any(c.groups == c.in_channels > 1 for c in convs) and has_se


def test_v2_has_no_efficientnet_pytorch_layout():
    model = _meta("efficientnet_v2_s")
    assert "efficientnet-pytorch" not in model.checkpoint_key_maps
    peer = build_peer("efficientnet-pytorch", "efficientnet-b0", device="meta")
    with pytest.raises(CheckpointError, match="no key map for efficientnet-pytorch"):
        convert_state_dict(model, peer.state_dict())


# -- the rest of the contract -------------------------------------------------------------


def test_key_maps_agree_with_the_fast_conversion():
    model = _meta("efficientnet_b0")
    for source in ("torchvision", "timm", "efficientnet-pytorch"):
        peer = build_peer(source, {"torchvision": "efficientnet_b0", "timm": "efficientnet_b0",
                                   "efficientnet-pytorch": "efficientnet-b0"}[source],
                          device="meta")
        fast = model.convert_checkpoint(peer.state_dict(), source)
        slow = archlab.models.layers.ImageClassifier.convert_checkpoint(
            model, peer.state_dict(), source)
        assert list(fast) == list(slow) and set(fast) == set(model.state_dict())
    # Our own layout is recognised as such and passes unchanged.
    converted, report = convert_state_dict(model, _meta("efficientnet_b0").state_dict())
    assert report.source == "archlab" and list(converted) == list(model.state_dict())


def test_small_input_keeps_resolution_in_the_stem_and_first_stride_two_stage():
    model = archlab.create_model("efficientnet_b0", small_input=True).eval()
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4, 4, 8, 8]
    with torch.no_grad():
        features, stages = model.forward_intermediates(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 1280, 4, 4)
    assert [t.shape[-1] for t in stages] == [32, 32, 16, 8, 8, 4, 4]


def test_a_custom_phi_is_built_and_costed_at_its_own_resolution():
    # The compound rule's resolution, 224 * 1.15^phi to the nearest 8, is the card's input
    # size, so profile() costs the model where the rule meant it to run.
    from archlab.analysis import profile

    assert archlab.create_model("efficientnet_custom", phi=2).card.input_size == (3, 296, 296)
    base = profile("efficientnet_custom", phi=0).macs
    for phi in (1, 2, 3):
        p = profile("efficientnet_custom", phi=phi)
        assert p.input_size[1] == int(8 * round(224 * 1.15 ** phi / 8))
        # About 2^phi the FLOPs (alpha * beta^2 * gamma^2 = 1.92, then rounding).
        assert 1.6 ** phi < p.macs / base < 2.5 ** phi
