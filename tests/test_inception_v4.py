"""Inception-v4, Inception-ResNet-v2 (1602.07261) and BN-Inception (1502.03167): what the
generic tests don't see.

Shapes against the papers' figures (on the meta device), the residual scaling against a hand
computation, and BN-Inception against the layout of the pretrainedmodels port, whose
checkpoint is the one people download: its names and shapes are written out here from
Figure 5's table and the port's naming, and loaded.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab.models.bn_inception import PassThroughPool
from archlab.models.inception_v4 import InceptionResNetA, InceptionResNetB, InceptionResNetC
from archlab.models.weights import load_state_dict


def _shapes(model, modules: list[str], size: int) -> dict[str, tuple[int, int, int]]:
    """(channels, height, width) of each named module's output for one size×size image."""
    found = {}
    named = dict(model.named_modules())
    for name in modules:
        named[name].register_forward_hook(
            lambda _m, _i, out, name=name: found.__setitem__(name, tuple(out.shape[1:])))
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    return found


@pytest.fixture(scope="module")
def v4():
    with torch.device("meta"):
        return archlab.create_model("inception_v4").eval()


@pytest.fixture(scope="module")
def irv2():
    with torch.device("meta"):
        return archlab.create_model("inception_resnet_v2").eval()


# -- Inception-v4 ------------------------------------------------------------------------


def test_inception_v4_stem_follows_figure_3(v4):
    stem = ["stem.conv1a", "stem.conv2a", "stem.conv2b", "stem.mixed3a", "stem.mixed4a",
            "stem.mixed5a"]
    assert list(_shapes(v4, stem, 299).values()) == [
        (32, 149, 149), (32, 147, 147), (64, 147, 147), (160, 73, 73), (192, 71, 71),
        (384, 35, 35)]


def test_inception_v4_grids_and_repeats_follow_figure_9(v4):
    grids = _shapes(v4, ["inception_a", "reduction_a", "inception_b", "reduction_b",
                         "inception_c"], 299)
    assert grids == {"inception_a": (384, 35, 35), "reduction_a": (1024, 17, 17),
                     "inception_b": (1024, 17, 17), "reduction_b": (1536, 8, 8),
                     "inception_c": (1536, 8, 8)}
    assert (len(v4.inception_a), len(v4.inception_b), len(v4.inception_c)) == (4, 7, 3)
    assert v4.head.drop.p == pytest.approx(0.2)  # "Dropout (keep 0.8)"


@pytest.mark.parametrize("name,k,l,m,n", [("inception_v4", 192, 224, 256, 384),
                                          ("inception_resnet_v2", 256, 256, 384, 384)])
def test_reduction_a_has_table_1_widths(name, k, l, m, n, v4, irv2):  # noqa: E741
    red = (v4 if name == "inception_v4" else irv2).reduction_a
    chain = [layer.conv.out_channels for layer in red.branch1]
    assert (red.branch0.conv.out_channels, chain) == (n, [k, l, m])


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_fewer_blocks_keep_the_grids_and_zero_blocks_are_refused(name):
    with torch.device("meta"):
        model = archlab.create_model(name, depths=(1, 1, 1)).eval()
    assert _shapes(model, [model.feature_info[-1]["module"]], 299) == {
        model.feature_info[-1]["module"]: (1536, 8, 8)}
    with pytest.raises(ValueError, match=r"at least 1; got \(2, 0, 1\)"):
        archlab.create_model(name, depths=(2, 0, 1))


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_small_input_reaches_the_three_grids_at_15_7_and_3(name):
    with torch.device("meta"):
        model = archlab.create_model(name, small_input=True).eval()
    assert archlab.model_card(name).small_input_size == 32
    stages = [f["module"] for f in model.feature_info][2:]
    assert [s[1:] for s in _shapes(model, stages, 32).values()] == [(15, 15), (7, 7), (3, 3)]


# -- Inception-ResNet-v2 -------------------------------------------------------------------


def test_inception_resnet_v2_grids_and_repeats_are_the_releases(irv2):
    # The paper's Figures 16-19 draw 384, 1154 and 2048 channels and Figure 15 5/10/5
    # blocks; TF-slim's release (timm's layout, the weights) has these.
    grids = _shapes(irv2, ["stem", "inception_resnet_a", "reduction_a", "inception_resnet_b",
                           "reduction_b", "inception_resnet_c", "conv7b"], 299)
    assert list(grids.values()) == [(320, 35, 35), (320, 35, 35), (1088, 17, 17),
                                    (1088, 17, 17), (2080, 8, 8), (2080, 8, 8), (1536, 8, 8)]
    blocks = [irv2.inception_resnet_a, irv2.inception_resnet_b, irv2.inception_resnet_c]
    assert [len(b) for b in blocks] == [10, 20, 10]
    assert [{blk.scale for blk in b} for b in blocks] == [{0.17}, {0.10}, {0.20, 1.0}]
    assert irv2.inception_resnet_c[-1].scale == 1.0


@pytest.mark.parametrize("block,chs,scale", [(InceptionResNetA, 320, 0.17),
                                             (InceptionResNetB, 1088, 0.10),
                                             (InceptionResNetC, 2080, 0.20)])
def test_residual_is_scaled_before_the_sum_then_activated(block, chs, scale):
    torch.manual_seed(0)
    blk = block(chs, scale).eval()
    residual = []
    blk.expand.register_forward_hook(lambda _m, _i, out: residual.append(out))
    x = torch.randn(1, chs, 5, 5)
    with torch.no_grad():
        out = blk(x)
    r = residual[0]
    assert r.abs().max() > 0.1  # a residual worth scaling
    # Section 3.3 and Figure 20: scale the residual, add the input, then the ReLU.
    torch.testing.assert_close(out, torch.relu(x + scale * r))
    assert not torch.allclose(out, torch.relu(x + r))


def test_last_block_adds_its_residual_unscaled_and_unactivated(irv2):
    torch.manual_seed(0)
    blk = InceptionResNetC(2080, 1.0, final_act=False).eval()
    residual = []
    blk.expand.register_forward_hook(lambda _m, _i, out: residual.append(out))
    x = torch.randn(1, 2080, 3, 3)
    with torch.no_grad():
        out = blk(x)
    torch.testing.assert_close(out, x + residual[0])
    assert (out < 0).any()
    assert str(irv2.inception_resnet_c[-1].act) == "Identity()"


# -- BN-Inception --------------------------------------------------------------------------

# Figure 5 of 1502.03167, row by row: #1×1, #3×3 reduce, #3×3, double #3×3 reduce,
# double #3×3, pool proj (0: max pooling passed through, the stride-2 rows 3c and 4e).
FIGURE_5 = {
    "3a": (64, 64, 64, 64, 96, 32), "3b": (64, 64, 96, 64, 96, 64),
    "3c": (0, 128, 160, 64, 96, 0), "4a": (224, 64, 96, 96, 128, 128),
    "4b": (192, 96, 128, 96, 128, 128), "4c": (160, 128, 160, 128, 160, 128),
    "4d": (96, 128, 192, 160, 192, 128), "4e": (0, 128, 192, 192, 256, 0),
    "5a": (352, 192, 320, 160, 224, 128), "5b": (352, 192, 320, 192, 224, 128),
}


def test_bn_inception_module_outputs_follow_figure_5():
    with torch.device("meta"):
        model = archlab.create_model("bn_inception").eval()
    names = ["conv1", "maxpool1", "conv3", "maxpool2"] + [f"inception{m}" for m in FIGURE_5]
    shapes = _shapes(model, names, 224)
    assert [shapes[n] for n in names[:4]] == [(64, 112, 112), (64, 56, 56), (192, 56, 56),
                                              (192, 28, 28)]
    # The table's output column: 256, 320, 576 at 28×28 (3c already halved to 14×14),
    # 576 at 14×14, 1024 at 7×7. Its branch widths for 4c and 4d add up to 608, which the
    # port (and so 4e's pass-through, 608 + 192 + 256 = 1056) follows.
    assert {m: shapes[f"inception{m}"] for m in FIGURE_5} == {
        "3a": (256, 28, 28), "3b": (320, 28, 28), "3c": (576, 14, 14),
        "4a": (576, 14, 14), "4b": (576, 14, 14), "4c": (608, 14, 14), "4d": (608, 14, 14),
        "4e": (1056, 7, 7), "5a": (1024, 7, 7), "5b": (1024, 7, 7)}


def _conv_bn(name: str, out_chs: int, in_chs: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_chs, in_chs, k, k), f"{name}.bias": (out_chs,),
            **{f"{name}_bn.{p}": (out_chs,) for p in ("weight", "bias", "running_mean",
                                                       "running_var")}}


def _port_layout() -> dict[str, tuple[int, ...]]:
    """The pretrainedmodels bninception state dict's names and shapes: Caffe's layer names
    (`inception_4e_double_3x3_2`), a biased convolution and a `_bn` batch norm each."""
    shapes = {**_conv_bn("conv1_7x7_s2", 64, 3, 7), **_conv_bn("conv2_3x3_reduce", 64, 64, 1),
              **_conv_bn("conv2_3x3", 192, 64, 3)}
    chs = 192
    for m, (c1, r3, c3, rd, cd, proj) in FIGURE_5.items():
        p = f"inception_{m}_"
        if c1:
            shapes.update(_conv_bn(p + "1x1", c1, chs, 1))
        shapes.update({**_conv_bn(p + "3x3_reduce", r3, chs, 1), **_conv_bn(p + "3x3", c3, r3, 3),
                       **_conv_bn(p + "double_3x3_reduce", rd, chs, 1),
                       **_conv_bn(p + "double_3x3_1", cd, rd, 3),
                       **_conv_bn(p + "double_3x3_2", cd, cd, 3)})
        if proj:
            shapes.update(_conv_bn(p + "pool_proj", proj, chs, 1))
        chs = c1 + c3 + cd + (proj or chs)
    shapes.update({"last_linear.weight": (1000, chs), "last_linear.bias": (1000,)})
    return shapes


def test_the_pretrainedmodels_layout_loads_by_detection_and_by_name():
    layout = _port_layout()
    # A few entries read off pretrainedmodels/models/bninception.py by hand.
    for key, shape in {"conv1_7x7_s2.weight": (64, 3, 7, 7), "conv2_3x3.weight": (192, 64, 3, 3),
                       "inception_3a_pool_proj.weight": (32, 192, 1, 1),
                       "inception_3c_double_3x3_2.weight": (96, 96, 3, 3),
                       "inception_4d_1x1.weight": (96, 608, 1, 1),
                       "inception_5a_1x1.weight": (352, 1056, 1, 1),
                       "inception_5b_pool_proj_bn.running_var": (128,),
                       "last_linear.weight": (1000, 1024)}.items():
        assert layout[key] == shape, key
    assert len(layout) == 416
    learned = sum(torch.Size(s).numel() for k, s in layout.items() if "running" not in k)
    assert learned == 11_295_240 == archlab.model_card("bn_inception").params

    g = torch.Generator().manual_seed(0)
    # The downloadable file predates PyTorch 0.4.1: no num_batches_tracked counters.
    port = {k: torch.randn(s, generator=g) for k, s in layout.items()}
    model = archlab.create_model("bn_inception")
    assert load_state_dict(model, port).source == "pretrainedmodels"
    ours = model.state_dict()
    for theirs, mine in [
            ("inception_3c_double_3x3_2.weight", "inception3c.branch3x3dbl.conv2.conv.weight"),
            ("inception_4a_1x1_bn.running_mean", "inception4a.branch1x1.bn.running_mean"),
            ("inception_5b_pool_proj.bias", "inception5b.branch_pool.proj.conv.bias"),
            ("conv2_3x3_reduce_bn.weight", "conv2.bn.weight"),
            ("last_linear.weight", "head.fc.weight")]:
        assert torch.equal(ours[mine], port[theirs]), mine
    # Section 3.2: batch norm's shift makes a convolution's bias redundant; without them
    # the network has one weight fewer per convolution output channel.
    biases = sum(s[0] for k, s in layout.items() if k.endswith(".bias") and "_bn" not in k
                 and not k.startswith("last_linear"))
    with torch.device("meta"):
        bare = archlab.create_model("bn_inception", conv_bias=False)
    assert sum(p.numel() for p in bare.parameters()) == learned - biases
    counters = {k[:-len("running_mean")] + "num_batches_tracked": torch.tensor(5)
                for k in port if k.endswith("running_mean")}
    report = load_state_dict(model, {**port, **counters}, "pretrainedmodels")
    assert report.loaded == 416 + len(counters)


def test_pass_through_pooling_is_caffes_on_even_maps_and_fits_odd_ones():
    pool = PassThroughPool()
    x = torch.randn(1, 2, 14, 14)
    torch.testing.assert_close(pool(x), F.max_pool2d(x, 3, 2, ceil_mode=True), rtol=0, atol=0)
    odd = torch.randn(1, 2, 15, 15)
    out = pool(odd)
    # The stride-2 padded 3×3 convolutions beside it give 8×8 on a 15×15 map.
    assert out.shape[-2:] == F.conv2d(odd, torch.zeros(1, 2, 3, 3), stride=2, padding=1).shape[-2:]
    assert out[0, 0, -1, -1] == odd[0, 0, -1, -1]  # the last window holds one real pixel
    assert torch.isfinite(out).all()
