"""The residual family: what the generic tests don't see.

Counts against the papers' tables, the plain twins, Bag of Tricks' B/C/D flags, zero-init,
squeeze-excitation, fastai's self-attention and the pre-activation ordering, each against a
hand computation or the paper's figure.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.models.resnet import (
    BasicBlock, BlockOptions, Bottleneck, SimpleSelfAttention, ZeroPadShortcut, _Block,
)


def _count(model: nn.Module, skip_norms: bool = False) -> int:
    return sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False)
               if not (skip_norms and isinstance(m, nn.BatchNorm2d)))


def _meta(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return archlab.create_model(name, **kw)


def _eval(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return archlab.create_model(name, **kw).eval()


# -- CIFAR counts (10 classes, as the papers count them) -------------------------------


@pytest.mark.parametrize("name,millions,digits", [
    ("resnet20", 0.27, 2), ("resnet32", 0.46, 2), ("resnet44", 0.66, 2),
    ("resnet56", 0.85, 2), ("resnet110", 1.7, 1), ("resnet1202", 19.4, 1)])
def test_cifar_counts_match_table6(name, millions, digits):
    assert round(_count(_meta(name, num_classes=10)) / 1e6, digits) == millions


def test_preact_cifar_counts():
    assert round(_count(_meta("preact_resnet164", num_classes=10)) / 1e6, 1) == 1.7
    # 1603.05027 prints 10.2M for ResNet-1001; with batch norm's scales and shifts it is
    # 10.33M, without them 10.18M: the paper's figure counts the weights only.
    model = _meta("preact_resnet1001", num_classes=10)
    assert round(_count(model) / 1e6, 2) == 10.33
    assert round(_count(model, skip_norms=True) / 1e6, 1) == 10.2


def test_cifar_cards_run_at_32px():
    for name in ("resnet20", "plain56", "preact_resnet164"):
        card = archlab.model_card(name)
        assert card.input_size == (3, 32, 32) and card.small_input_size == 32
    info = _meta("resnet20").feature_info
    assert [(i["num_chs"], i["reduction"]) for i in info] == [(16, 1), (32, 2), (64, 4)]


# -- plain twins and option A ------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_twin_costs_the_same(depth):
    res, plain = _meta(f"resnet{depth}"), _meta(f"plain{depth}")
    shortcuts = [m for m in res.modules() if isinstance(m, ZeroPadShortcut)]
    assert len(shortcuts) == 2 and all(_count(m) == 0 for m in shortcuts)
    assert _count(res) == _count(plain)
    blocks = [m for m in plain.modules() if isinstance(m, _Block)]
    assert len(blocks) == 3 * (depth - 2) // 6
    assert all(not b.residual and b.downsample is None for b in blocks)


@pytest.mark.parametrize("depth", [18, 34])
def test_imagenet_plain_net_is_resnet_without_its_projections(depth):
    # By hand: three stage transitions, each a 1×1 projection and its batch norm
    # (64→128, 128→256, 256→512).
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in ((64, 128), (128, 256),
                                                                 (256, 512)))
    res, plain = _meta(f"resnet{depth}"), _meta(f"plain{depth}")
    assert _count(plain) == _count(res) - projections
    blocks = [m for m in plain.modules() if isinstance(m, _Block)]
    assert len(blocks) == (8 if depth == 18 else 16)
    assert all(not b.residual and b.downsample is None for b in blocks)


def test_zero_pad_shortcut_by_hand():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(32, 2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_pad_shortcut_keeps_channels_last_in_backward(dtype):
    """The gradient equals slicing's, exactly, and stays channels_last: a contiguous one
    sends every ReLU backward after it down PyTorch's slow mixed-layout path."""
    x = torch.randn(2, 16, 8, 8, dtype=dtype).contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn(2, 32, 4, 4, dtype=dtype).contiguous(memory_format=torch.channels_last)
    ZeroPadShortcut(32, 2)(a).backward(g)
    F.pad(b[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16)).backward(g)
    assert torch.equal(a.grad, b.grad)
    assert a.grad.is_contiguous(memory_format=torch.channels_last)


def test_plain_block_never_adds_its_input():
    res = _eval("resnet20")
    plain = archlab.create_model("plain20").eval()
    plain.load_state_dict(res.state_dict())  # the shortcuts hold no tensors: same keys
    x = torch.randn(2, 16, 8, 8)
    b = res.layer1[1]
    with torch.no_grad():
        branch = b.bn2(b.conv2(torch.relu(b.bn1(b.conv1(x)))))
        torch.testing.assert_close(plain.layer1[1](x), torch.relu(branch))
        torch.testing.assert_close(res.layer1[1](x), torch.relu(branch + x))
        # Where the shape changes, the ResNet adds the padded, subsampled input.
        b2 = res.layer2[0]
        branch2 = b2.bn2(b2.conv2(torch.relu(b2.bn1(b2.conv1(x)))))
        shortcut = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
        torch.testing.assert_close(res.layer2[0](x), torch.relu(branch2 + shortcut))
        torch.testing.assert_close(plain.layer2[0](x), torch.relu(branch2))


# -- Bag of Tricks B / C / D -------------------------------------------------------------


def test_flag_b_moves_the_stride_to_the_3x3():
    v1, b = _meta("resnet50_v1").layer2[0], _meta("resnet50b").layer2[0]
    assert (v1.conv1.stride, v1.conv2.stride) == ((2, 2), (1, 1))
    assert (b.conv1.stride, b.conv2.stride) == ((1, 1), (2, 2))
    # Only the stride moves: the same weights, the same projection shortcut.
    assert _count(_meta("resnet50_v1")) == _count(_meta("resnet50b"))
    assert v1.downsample[0].stride == b.downsample[0].stride == (2, 2)


def test_flag_c_is_a_stem_of_three_3x3():
    stem = _meta("resnet50c").conv1
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (1, 1)), (32, 64, (3, 3), (1, 1))]
    plain_stem = _meta("resnet50b").conv1
    assert (plain_stem.kernel_size, plain_stem.stride) == ((7, 7), (2, 2))
    assert _meta("resnet50c").layer2[0].downsample[0].stride == (2, 2)  # C alone: no D


def test_flag_d_pools_before_the_projection():
    d = _meta("resnet50d")
    pool, conv, bn = d.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (2, 2)
    assert conv.kernel_size == (1, 1) and conv.stride == (1, 1)
    assert isinstance(bn, nn.BatchNorm2d)
    # The first stage does not downsample: no pool, and the same keys as timm's.
    assert isinstance(d.layer1[0].downsample[0], nn.Identity)
    assert isinstance(_meta("resnet50c").layer2[0].downsample[0], nn.Conv2d)


def test_flag_d_output_by_hand():
    torch.manual_seed(0)
    short = _eval("resnet50d").layer2[0].downsample
    x = torch.randn(1, 256, 6, 6)
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    with torch.no_grad():
        torch.testing.assert_close(short(x), short[2](short[1](pooled)))


# -- zero-init of the last norm ----------------------------------------------------------


@pytest.mark.parametrize("name,stage,block", [
    ("resnet20", "layer1", 1), ("xresnet50", "layer1", 1), ("preact_resnet164", "layer1", 1)])
def test_zero_init_last_makes_a_block_the_identity(name, stage, block):
    kw = {} if name.startswith("x") else {"zero_init_last": True}
    model = _eval(name, **kw)
    b = getattr(model, stage)[block]
    chs = b.conv1.in_channels
    x = torch.randn(2, chs, 8, 8)
    if b.unit != "full_preact":
        x = x.relu()  # a v1 block's input left a ReLU; the one after the sum keeps it
    with torch.no_grad():
        torch.testing.assert_close(b(x), x)
    fresh = getattr(_eval(name, zero_init_last=False), stage)[block]
    with torch.no_grad():
        assert not torch.allclose(fresh(x), x)


def test_xresnet_zero_inits_every_block():
    torch.manual_seed(0)
    model = archlab.create_model("xresnet18")
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8 and all(not b.bn2.weight.any() for b in blocks)


# -- squeeze-excitation, ResNeXt, wide ---------------------------------------------------


def test_se_adds_two_small_layers_per_block():
    # fc1: C -> C/16 and fc2: C/16 -> C, both with biases, in every bottleneck.
    extra = sum(n * (2 * c * (c // 16) + c // 16 + c)
                for n, c in zip((3, 4, 6, 3), (256, 512, 1024, 2048)))
    assert _count(_meta("seresnet50")) - _count(_meta("resnet50")) == extra
    assert _count(_meta("seresnext50_32x4d")) - _count(_meta("resnext50_32x4d")) == extra
    se = _meta("seresnet50").layer3[2].se
    assert (se.fc1.in_channels, se.fc1.out_channels) == (1024, 64)


def test_se_rescales_the_branch_before_the_sum():
    torch.manual_seed(0)
    b = _eval("seresnet50").layer1[1]
    x = torch.randn(1, 256, 4, 4).relu()
    with torch.no_grad():
        out = b.bn3(b.conv3(b.act2(b.bn2(b.conv2(b.act1(b.bn1(b.conv1(x))))))))
        s = torch.sigmoid(b.se.fc2(torch.relu(b.se.fc1(out.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(b(x), torch.relu(out * s + x))


@pytest.mark.parametrize("name,width,groups", [
    ("resnet50", 64, 1), ("resnext50_32x4d", 128, 32), ("resnext101_32x8d", 256, 32),
    ("wide_resnet50_2", 128, 1)])
def test_bottleneck_inner_width(name, width, groups):
    conv = _meta(name).layer1[0].conv2
    assert (conv.in_channels, conv.out_channels, conv.groups) == (width, width, groups)
    last = _meta(name).layer4[0].conv2
    assert last.out_channels == width * 8


def test_basic_block_refuses_groups():
    with pytest.raises(ValueError, match="bottleneck"):
        BasicBlock(64, 64, opts=BlockOptions(groups=32, base_width=4))


# -- the SENet authors' Caffe release (timm's legacy_) -----------------------------------


def test_legacy_senet_pools_and_strides_like_the_caffe_release():
    # Caffe's pool: no padding, the last window rounded up (clipped at the border), i.e. a
    # -inf column and row on the far side only; ours pads one on each side.
    legacy, ours = _meta("legacy_seresnet50"), _meta("seresnet50")
    caffe, padded = legacy.maxpool, ours.maxpool
    x = torch.randn(1, 4, 112, 112, generator=torch.Generator().manual_seed(0))  # 224 px in
    inf = float("-inf")
    by_hand = nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), value=inf), 3, 2)
    torch.testing.assert_close(caffe(x), by_hand)
    assert caffe(x).shape == padded(x).shape == (1, 4, 56, 56)
    assert not torch.equal(caffe(x), padded(x))
    # Unpadded, it needs a 2 px map (the 7x7/2 stem's output at 3 px, the card's minimum).
    assert caffe(x[..., :2, :2]).shape[-1] == 1 and legacy.min_input_size == 3
    with pytest.raises(RuntimeError):
        caffe(x[..., :1, :1])
    # So every stage keeps the padded network's map size at 224 px.
    img = torch.empty(1, 3, 224, 224, device="meta")
    shapes = [[t.shape for t in m.forward_intermediates(img)[1]] for m in (legacy, ours)]
    assert shapes[0] == shapes[1] and [s[-1] for s in shapes[0]] == [56, 28, 14, 7]
    # The SE-ResNets stride the first 1x1 of stages 2-4, the SE-ResNeXts the grouped 3x3.
    for model, strided in ((legacy, "conv1"), (_meta("legacy_seresnext50_32x4d"), "conv2")):
        assert model.layer1[0].conv1.stride == model.layer1[0].conv2.stride == (1, 1)
        for stage in (model.layer2, model.layer3, model.layer4):
            convs = {c: getattr(stage[0], c).stride for c in ("conv1", "conv2", "conv3")}
            assert convs == {c: (2, 2) if c == strided else (1, 1) for c in convs}, strided
            assert stage[0].downsample[0].kernel_size == (1, 1)


def test_legacy_senet_refuses_timms_torchvision_style_seresnet():
    # The same tensors, another network (stride on the 3x3, padded pool): the legacy model
    # must not take them silently.
    from archlab.models.peers import build_peer
    from archlab.models.weights import CheckpointError, convert_state_dict

    sd = build_peer("timm", "seresnet50", device="meta").state_dict()
    with pytest.raises(CheckpointError, match="does not fit legacy_seresnet50"):
        convert_state_dict(_meta("legacy_seresnet50"), sd)


# -- fastai's simple self-attention ------------------------------------------------------


def test_sa_sits_in_the_last_block_of_the_first_stage():
    model = _meta("xresnet50", sa=True)
    where = [n for n, m in model.named_modules() if isinstance(m, SimpleSelfAttention)]
    assert where == ["layer1.2.sa"]
    assert _count(model) - _count(_meta("xresnet50")) == 256 * 256 + 1  # W and γ


def test_sa_by_hand():
    torch.manual_seed(0)
    sa = SimpleSelfAttention(8).eval()
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        torch.testing.assert_close(sa(x), x)  # γ = 0: the identity
        sa.gamma.fill_(0.5)
        flat = x.reshape(2, 8, 9)
        w = sa.conv.weight.squeeze(-1)
        want = flat + 0.5 * (flat @ flat.transpose(1, 2)) @ (w @ flat)
        torch.testing.assert_close(sa(x), want.reshape(2, 8, 3, 3))
    # W is spectrally normalised: its largest singular value is about 1.
    sa.train()
    for _ in range(30):
        sa(x)
    assert torch.linalg.matrix_norm(sa.conv.weight.squeeze(-1).detach(), 2) == pytest.approx(
        1.0, abs=0.05)


def test_sym_makes_the_attention_weight_symmetric():
    torch.manual_seed(0)
    plain, sym = SimpleSelfAttention(8).eval(), SimpleSelfAttention(8, sym=True).eval()
    sym.load_state_dict(plain.state_dict())
    w = plain.weight_matrix().detach()
    assert not torch.allclose(w, w.t())
    ws = sym.weight_matrix().detach()
    torch.testing.assert_close(ws, ws.t())
    torch.testing.assert_close(ws, (w + w.t()) / 2)
    x = torch.randn(1, 8, 2, 2)
    with torch.no_grad():
        sym.gamma.fill_(1.0)
        flat = x.reshape(1, 8, 4)
        want = flat + (flat @ flat.transpose(1, 2)) @ (ws @ flat)
        torch.testing.assert_close(sym(x), want.reshape(1, 8, 2, 2))


# -- pre-activation ----------------------------------------------------------------------


def _call_order(block: nn.Module, x: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [m.register_forward_hook(lambda *_, n=n: order.append(n))
               for n, m in block.named_children() if not isinstance(m, nn.Identity)]
    with torch.no_grad():
        block(x)
    for h in handles:
        h.remove()
    return order


def test_preact_orders_norm_relu_conv_and_leaves_the_sum_alone():
    torch.manual_seed(0)
    model = _eval("preact_resnet164")
    b = model.layer1[0]
    assert isinstance(b, Bottleneck) and b.unit == "full_preact"
    x = torch.randn(2, 16, 8, 8)
    assert _call_order(b, x) == ["bn1", "act1", "conv1", "bn2", "act2", "conv2", "bn3", "act3",
                                 "conv3", "downsample"]
    with torch.no_grad():
        pre = torch.relu(b.bn1(x))  # the projection reads the pre-activated input
        branch = b.conv3(torch.relu(b.bn3(b.conv2(torch.relu(b.bn2(b.conv1(pre)))))))
        out = b(x)
        torch.testing.assert_close(out, branch + b.downsample(pre))
        assert (out < 0).any()  # no ReLU after the addition
        # An identity-shortcut block adds its raw input.
        b1 = model.layer1[1]
        y = torch.randn(2, 64, 8, 8)
        pre1 = torch.relu(b1.bn1(y))
        branch1 = b1.conv3(torch.relu(b1.bn3(b1.conv2(torch.relu(b1.bn2(b1.conv1(pre1)))))))
        torch.testing.assert_close(b1(y), branch1 + y)
    # v1 for contrast: conv-BN-ReLU, and the ReLU comes after the sum.
    v1 = _eval("resnet50").layer1[0]
    assert _call_order(v1, torch.randn(1, 64, 4, 4)) == [
        "conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "downsample", "act3"]
    # The network ends with the last unit's norm and ReLU (section 4 of 1603.05027).
    assert isinstance(model.bn_final, nn.BatchNorm2d)
    assert model.layer1[0].conv1.stride == (1, 1) and model.layer2[0].conv1.stride == (2, 2)


def test_resnetv2_has_no_norm_in_the_stem():
    model = _meta("resnetv2_50")
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.conv1, nn.Conv2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.layer1[0].downsample)


# -- the small-input stem ----------------------------------------------------------------


def test_small_input_stem_keeps_32px_images_large():
    torch.manual_seed(0)
    model = archlab.create_model("resnet18", small_input=True).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    _, stages = model.forward_intermediates(torch.randn(1, 3, 32, 32))
    assert [tuple(t.shape[1:]) for t in stages] == [(64, 32, 32), (128, 16, 16),
                                                     (256, 8, 8), (512, 4, 4)]
    deep = _meta("resnet50d", small_input=True)
    assert deep.conv1[0].stride == (1, 1) and isinstance(deep.maxpool, nn.Identity)


# -- the five units of 1603.05027's Fig. 4 -----------------------------------------------

UNIT_NAMES = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")


def _randomise_norms(model: nn.Module) -> None:
    # Evaluated with non-trivial statistics, a BN's place in the unit changes the output.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_each_unit_computes_its_figure_4_ordering(unit):
    torch.manual_seed(0)
    model = archlab.create_model("resnet20", unit=unit).eval()
    _randomise_norms(model)
    b = model.layer1[1]
    x = torch.randn(2, 16, 8, 8)
    kept = x.clone()
    relu = torch.relu
    want = {  # a row of the figure each: the branch, the addition, what follows it
        "original": lambda: relu(b.bn2(b.conv2(relu(b.bn1(b.conv1(x))))) + x),
        "bn_after_add": lambda: relu(b.bn2(b.conv2(relu(b.bn1(b.conv1(x)))) + x)),
        "relu_before_add": lambda: relu(b.bn2(b.conv2(relu(b.bn1(b.conv1(x)))))) + x,
        "relu_preact": lambda: b.bn2(b.conv2(relu(b.bn1(b.conv1(relu(x)))))) + x,
        "full_preact": lambda: b.conv2(relu(b.bn2(b.conv1(relu(b.bn1(x)))))) + x,
    }[unit]
    with torch.no_grad():
        out = b(x)
        torch.testing.assert_close(x, kept)  # the input is never overwritten in place
        torch.testing.assert_close(out, want())
    # Where the shape changes, the zero-padding shortcut reads the pre-activated input.
    b2 = model.layer2[0]
    with torch.no_grad():
        pre = (relu(x) if unit == "relu_preact" else relu(b2.bn1(x))
               if unit == "full_preact" else x)
        branch = b2._run(b2._branch, pre)
        shortcut = torch.cat([pre[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
        torch.testing.assert_close(b2(x), b2._run(b2._after_add, branch + shortcut))


def _bn_channels(model: nn.Module) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_units_move_the_same_layers_so_resnet20_costs_the_same():
    # ResNet-20 for 10 classes by hand. Convolutions: the 3×3 stem (3->16), then six 3×3
    # convolutions per stage, the first of stages 2 and 3 widening.
    convs = (3 * 16 + 6 * 16 * 16 + (16 * 32 + 5 * 32 * 32) + (32 * 64 + 5 * 64 * 64)) * 9
    fc = 64 * 10 + 10
    # Post-activated units, (a) to (d): a BN on the stem's output and on every convolution's
    # output ((b) moves the last one after the addition, where it has the same channels).
    bn_after = 16 + 6 * 16 + 6 * 32 + 6 * 64
    # Full pre-activation, (e): a BN on every convolution's *input*, none in the stem, one
    # after the last addition. The first units of stages 2 and 3 have a narrower bn1 (16 and
    # 32 channels in, not 32 and 64 out), which the final BN's 64 channels balance exactly.
    bn_before = 6 * 16 + (16 + 5 * 32) + (32 + 5 * 64) + 64
    assert bn_after == bn_before == 688
    assert convs + 2 * bn_after + fc == 269_722           # Table 6 of 1512.03385: 0.27M
    for unit in UNIT_NAMES:
        model = _meta("resnet20", unit=unit, num_classes=10)
        assert _count(model) == 269_722, unit
        assert _bn_channels(model) == 688, unit
    e, a = _meta("resnet20", unit="full_preact"), _meta("resnet20")
    assert (e.layer2[0].bn1.num_features, a.layer2[0].bn1.num_features) == (16, 32)
    # (b)'s BN after the addition has the block's output channels, like (a)'s bn2 had.
    b = _meta("resnet20", unit="bn_after_add").layer3[0]
    assert b._after_add == ["bn2", "act2"] and b.bn2.num_features == 64


def test_units_place_the_stem_and_final_norms():
    stems = {u: (type(m.bn1).__name__, type(m.act1).__name__, type(m.bn_final).__name__,
                 type(m.act_final).__name__)
             for u in UNIT_NAMES for m in [_meta("resnet20", unit=u)]}
    assert stems["original"] == stems["bn_after_add"] == stems["relu_before_add"] == (
        "BatchNorm2d", "ReLU", "Identity", "Identity")
    # The first unit's own ReLU follows the stem's BN; the last sum gets a ReLU.
    assert stems["relu_preact"] == ("BatchNorm2d", "Identity", "Identity", "ReLU")
    assert stems["full_preact"] == ("Identity", "Identity", "BatchNorm2d", "ReLU")
    # preact=True is the full pre-activation, with the same tensors.
    assert (list(_meta("preact_resnet164").state_dict())
            == list(_meta("preact_resnet164", preact=False, unit="full_preact").state_dict()))


def test_a_unit_is_checked_by_name():
    with pytest.raises(ValueError, match="unit must be one of original, .*got 'preact'"):
        _meta("resnet20", unit="preact")
    with pytest.raises(ValueError, match="contradicts unit='bn_after_add'"):
        _meta("resnet20", preact=True, unit="bn_after_add")


@pytest.mark.parametrize("unit", UNIT_NAMES)
def test_zero_init_last_zeroes_every_units_branch(unit):
    torch.manual_seed(0)
    b = archlab.create_model("resnet20", unit=unit, zero_init_last=True).eval().layer1[1]
    x = torch.randn(2, 16, 8, 8).relu()
    with torch.no_grad():
        pre = b._run(b._lead, x.clone())
        assert not b._run(b._branch, pre).any()
        # Only (b) keeps a layer on the shortcut's path: the block is then BN-ReLU of x.
        want = torch.relu(b.bn2(x)) if unit == "bn_after_add" else x
        torch.testing.assert_close(b(x), want)
