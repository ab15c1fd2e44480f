"""LeNet-5, VGG, GoogLeNet and Inception v3: what the generic tests do not cover.

The papers' own figures (LeNet-5's 60,000 trainable parameters and its C3 table, VGG's
Table 1 depths and Table 2 sizes), the auxiliary classifiers against torchvision's in
training mode, and the geometry each family relies on.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.models.weights import convert_state_dict, load_state_dict
from archlab.models.lenet import C3_TABLE, ScaledTanh
from peers import build_peer, count_params, logits_close, randomize_norms


def _meta(name: str, **kw):
    with torch.device("meta"):
        return archlab.create_model(name, **kw)


def _no_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


# --------------------------------------------------------------------------------------
# LeNet-5
# --------------------------------------------------------------------------------------


def test_lenet5_has_61706_parameters_for_ten_digits():
    # conv 6@5×5, pool, conv 16@5×5, pool, fc 120, fc 84, fc 10, full C3 connectivity.
    assert count_params(archlab.create_model("lenet5", num_classes=10, in_chans=1)) == 61_706


def test_lenet5_original_has_the_papers_trainable_parameters_per_layer():
    # Section II.B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164; 60,000 in all
    # (the paper's RBF output layer has fixed weights; ours is a linear layer, not counted).
    model = archlab.create_model("lenet5_original", num_classes=10, in_chans=1)
    per_layer = {name: count_params(m) for name, m in model.features.named_children()
                 if count_params(m)}
    per_layer["f6"] = count_params(model.f6)
    assert per_layer == {"c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120,
                         "f6": 10_164}
    assert sum(per_layer.values()) == 60_000
    assert count_params(model) == 60_000 + 84 * 10 + 10


def test_c3_table_is_the_papers_table_1():
    # Six maps read 3 contiguous S2 maps, six read 4 contiguous, three read 4
    # non-contiguous, one reads all: 60 connections, every S2 map feeding 10 C3 maps.
    sizes = [len(t) for t in C3_TABLE]
    assert sizes == [3] * 6 + [4] * 9 + [6]
    assert sum(sizes) == 60
    assert all(sum(i in t for t in C3_TABLE) == 10 for i in range(6))
    assert C3_TABLE[12:15] == ((0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5))


def test_c3_map_ignores_the_s2_maps_outside_its_table_row():
    torch.manual_seed(0)
    c3 = archlab.create_model("lenet5_original", num_classes=10, in_chans=1).features.c3
    x = torch.randn(1, 6, 14, 14)
    y = x.clone()
    y[:, 5] += 1.0  # S2 map 5 feeds C3 maps 3, 4, 5, 8-11, 13-15, not 0, 1, 2, 6, 7, 12
    changed = (c3(x) - c3(y)).abs().amax(dim=(0, 2, 3)) > 0
    assert [j for j in range(16) if changed[j]] == [j for j, t in enumerate(C3_TABLE) if 5 in t]


def test_scaled_tanh_maps_one_to_one():
    f = ScaledTanh()
    assert f(torch.tensor([1.0, -1.0])).tolist() == pytest.approx([1.0, -1.0], abs=1e-3)


@pytest.mark.parametrize("name", ["lenet5", "lenet5_original"])
def test_lenet_maps_shrink_as_in_the_paper(name):
    model = archlab.create_model(name, num_classes=10, in_chans=1).eval()
    sizes = {}
    for layer, m in model.features.named_children():
        m.register_forward_hook(lambda _m, _i, out, layer=layer: sizes.__setitem__(layer,
                                                                                out.shape[1:]))
    model(torch.randn(1, 1, 32, 32))
    assert sizes["c1"] == (6, 28, 28) and sizes["s2"] == (6, 14, 14)
    assert sizes["c3"] == (16, 10, 10) and sizes["s4"] == (16, 5, 5)
    assert sizes["c5"] == (120, 1, 1)


def test_lenet_small_input_is_the_32px_network_on_a_zero_padded_28px_image():
    torch.manual_seed(0)
    small = archlab.create_model("lenet5", num_classes=10, in_chans=1, small_input=True).eval()
    full = archlab.create_model("lenet5", num_classes=10, in_chans=1).eval()
    full.load_state_dict(small.state_dict())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(small(x), full(F.pad(x, (2, 2, 2, 2))))


def test_lenet_c5_slides_over_larger_images():
    model = archlab.create_model("lenet5", num_classes=10, in_chans=1).eval()
    assert model.forward_features(torch.randn(2, 1, 64, 64)).shape == (2, 120, 9, 9)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


# --------------------------------------------------------------------------------------
# VGG
# --------------------------------------------------------------------------------------

PAPER_TABLE_2 = {"vgg_a": 133, "vgg_a_lrn": 133, "vgg_b": 133, "vgg_c": 134, "vgg_d": 138,
                 "vgg_e": 144}  # millions of parameters, 1409.1556 Table 2
PAPER_DEPTH = {"vgg_a": 11, "vgg_a_lrn": 11, "vgg_b": 13, "vgg_c": 16, "vgg_d": 16, "vgg_e": 19}


@pytest.mark.parametrize("name", sorted(PAPER_TABLE_2))
def test_vgg_paper_configurations_match_table_2_and_their_depth(name):
    model = _meta(name)
    assert round(count_params(model) / 1e6) == PAPER_TABLE_2[name]
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weight_layers) == PAPER_DEPTH[name]


def test_vgg_c_closes_its_last_three_stages_with_1x1_convolutions():
    c, d = _meta("vgg_c").features, _meta("vgg_d").features
    for s in (3, 4, 5):
        assert getattr(c, f"conv{s}_3").kernel_size == (1, 1)
        assert getattr(d, f"conv{s}_3").kernel_size == (3, 3)
    assert c.conv2_2.kernel_size == (3, 3)


def test_vgg_a_lrn_normalises_after_the_first_layer_only():
    names = list(_meta("vgg_a_lrn").features._modules)
    assert [n for n in names if n.startswith("lrn")] == ["lrn1"]
    assert names[:4] == ["conv1_1", "relu1_1", "lrn1", "pool1"]


def test_small_vgg_takes_28px_and_a_width():
    # Ceil-mode pooling: 28 -> 14 -> 7 -> 4 -> 2 -> 1, so Fashion-MNIST needs no resize.
    model = archlab.create_model("vgg11_bn", num_classes=10, in_chans=1, small_input=True,
                                 width=0.25, fc_dim=128).eval()
    feats = model.forward_features(torch.randn(2, 1, 28, 28))
    assert feats.shape == (2, 128, 1, 1)
    convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]   # Table 1's A, a quarter as wide
    # conv weights + biases, BN scale and shift, then 128 -> 128 -> 128 -> 10
    expected = sum(9 * i * o + o + 2 * o for i, o in zip([1] + convs[:-1], convs))
    expected += (128 * 128 + 128) * 2 + 128 * 10 + 10
    assert count_params(model) == expected
    with pytest.raises(ValueError, match="width"):
        archlab.create_model("vgg11", small_input=True, width=0)


@pytest.mark.parametrize("deeper", ["vgg_b", "vgg_c", "vgg_d", "vgg_e"])
def test_every_layer_of_net_a_initialises_a_deeper_net_by_name(deeper):
    # The paper's staged training: net A's layers start the deeper configurations.
    a, big = _meta("vgg_a").state_dict(), _meta(deeper).state_dict()
    assert all(k in big and big[k].shape == v.shape for k, v in a.items())


def test_two_stacked_3x3_convolutions_see_5x5_with_18_weights():
    model = archlab.create_model("vgg_b", num_classes=10, small_input=True)
    stack = nn.Sequential(model.features.conv1_1, model.features.conv1_2)
    x = torch.zeros(1, 3, 11, 11, requires_grad=True)
    stack(x)[0, 0, 5, 5].backward()
    seen = x.grad[0].abs().sum(0) > 0
    assert seen.sum() == 25 and seen[3:8, 3:8].all()
    per_pair = sum(c.weight[0, 0].numel() for c in stack)
    assert per_pair == 18


@pytest.mark.parametrize("name", ["vgg11", "vgg13_bn", "vgg16", "vgg19_bn", "vgg_a", "vgg_e"])
def test_vgg_torchvision_state_dicts_fit_key_for_key(name):
    peer = build_peer("torchvision", archlab.model_card(name).peers["torchvision"], "meta")
    converted, report = convert_state_dict(_meta(name), peer.state_dict(), "torchvision")
    assert report.loaded == len(peer.state_dict()) and not report.reset


def test_vgg_features_equal_torchvision_after_conversion():
    # The whole peer is 130M+ parameters; its convolutional body carries the conversion's
    # positional mapping (the classifier's three shapes are checked key for key above).
    from torchvision.models import vgg as tv_vgg

    torch.manual_seed(0)
    peer = randomize_norms(tv_vgg.make_layers(tv_vgg.cfgs["A"], batch_norm=True)).eval()
    ours = archlab.create_model("vgg11_bn", small_input=True).eval()
    state = {f"features.{k}": v for k, v in peer.state_dict().items()}
    converted = ours.convert_checkpoint(state, "torchvision")
    ours.features.load_state_dict({k[len("features."):]: v for k, v in converted.items()})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits_close(ours.forward_features(x), peer(x))


def test_vgg_small_input_pools_to_one_and_narrows_the_classifier():
    model = archlab.create_model("vgg16", num_classes=10, small_input=True)
    assert model.classifier.fc6.in_features == 512 and model.head_hidden_size == 512
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 1, 1)


def test_single_kernel_replaces_each_run_of_3x3s_by_one_kernel_of_the_same_field():
    from archlab.models.vgg import CONFIGS, single_kernels

    # B's pairs become the paper's "five 5×5 layers" (section 4.1); D's triples become 7×7;
    # C's closing 1×1s and A-LRN's normalisation stay where they are.
    assert single_kernels(CONFIGS["B"]) == tuple((f"conv5-{c}",)
                                                 for c in (64, 128, 256, 512, 512))
    assert single_kernels(CONFIGS["D"])[1:3] == (("conv5-128",), ("conv7-256",))
    assert single_kernels(CONFIGS["C"])[2] == ("conv5-256", "conv1-256")
    assert single_kernels(CONFIGS["A-LRN"])[0] == ("conv3-64", "LRN")
    assert single_kernels(CONFIGS["E"])[4] == ("conv9-512",)


def test_single_kernel_vgg_b_has_the_hand_counted_parameters_and_the_same_field():
    # Five 5×5 convolutions with biases, then Table 1's three fully connected layers.
    chs = [3, 64, 128, 256, 512, 512]
    convs = sum(25 * i * o + o for i, o in zip(chs, chs[1:]))
    fcs = 512 * 7 * 7 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000
    shallow = _meta("vgg_b", single_kernel=True)
    assert count_params(shallow) == convs + fcs == 134_503_528
    assert [m.kernel_size for m in shallow.modules() if isinstance(m, nn.Conv2d)] == [(5, 5)] * 5
    from archlab.analysis import profile
    assert profile(shallow, 224).receptive_field == profile(_meta("vgg_b"), 224).receptive_field


def test_small_single_kernel_vgg_d_counts_7x7s_in_its_last_three_stages():
    model = archlab.create_model("vgg16_bn", num_classes=10, in_chans=1, small_input=True,
                                 width=0.25, fc_dim=128, single_kernel=True)
    convs = [(m.kernel_size[0], m.in_channels, m.out_channels)
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(5, 1, 16), (5, 16, 32), (7, 32, 64), (7, 64, 128), (7, 128, 128)]
    # k²·in·out weights + out biases, BN scale and shift; then 128 -> 128 -> 128 -> 10.
    expected = sum(k * k * i * o + 3 * o for k, i, o in convs)
    expected += (128 * 128 + 128) * 2 + 128 * 10 + 10
    assert count_params(model) == expected
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


# --------------------------------------------------------------------------------------
# GoogLeNet and Inception v3: auxiliary classifiers
# --------------------------------------------------------------------------------------


def test_googlenet_counts_with_and_without_auxiliary_heads():
    assert count_params(_meta("googlenet")) == 13_004_888
    assert count_params(_meta("googlenet", aux_logits=False)) == 6_624_904  # torchvision
    assert count_params(_meta("inception_v3", aux_logits=False)) == 23_834_568
    assert count_params(_meta("inception_v3_noaux", aux_logits=True)) == 27_161_264


@pytest.mark.parametrize("name,n_aux", [("googlenet", 2), ("inception_v3", 1)])
def test_training_returns_aux_logits_and_evaluation_does_not(name, n_aux):
    # At 32 px Inception v3's 17×17 grid is 7×7: its auxiliary head pools adaptively.
    torch.manual_seed(0)
    model = archlab.create_model(name, num_classes=7, small_input=True, aux_logits=True)
    x = torch.randn(2, 3, 32, 32)
    out = model.train()(x)
    assert isinstance(out, tuple) and len(out) == 1 + n_aux
    assert out.logits.shape == (2, 7) and all(a.shape == (2, 7) for a in out[1:])
    # Every auxiliary head learns: the loss of each reaches its parameters.
    sum(o.pow(2).mean() for o in out[1:]).backward()
    for head in model.aux_heads():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 7)
    model.reset_classifier(3)
    assert all(o.shape == (2, 3) for o in model.train()(x))


def test_small_input_leaves_aux_heads_out_unless_asked():
    assert not _meta("googlenet", small_input=True).aux_heads()
    assert not _meta("inception_v3", small_input=True).aux_heads()
    assert len(_meta("googlenet", small_input=True, aux_logits=True).aux_heads()) == 2


def test_googlenet_outputs_equal_torchvision_including_aux_heads():
    torch.manual_seed(0)
    peer = _no_dropout(randomize_norms(build_peer("torchvision", "googlenet")))
    assert peer.transform_input is False  # so that both see the same input
    ours = _no_dropout(archlab.create_model("googlenet"))
    load_state_dict(ours, peer.state_dict(), "torchvision")
    image = torch.rand(2, 3, 64, 64)
    theirs = peer.train()(image)                      # (logits, aux2, aux1)
    mine = ours.train()(image)                        # (logits, aux1, aux2)
    for a, b in zip(mine, (theirs.logits, theirs.aux_logits1, theirs.aux_logits2)):
        logits_close(a, b, tol=1e-4)
    # torchvision's released weights run with transform_input=True on ImageNet-normalised
    # images; the card's (0.5, 0.5, 0.5) normalisation feeds ours the same numbers.
    peer.transform_input = True
    card = archlab.model_card("googlenet")
    imagenet = ((image - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1))
                / torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1))
    ours_in = (image - torch.tensor(card.mean).view(3, 1, 1)) / torch.tensor(card.std).view(
        3, 1, 1)
    with torch.no_grad():
        logits_close(ours.eval()(ours_in), peer.eval()(imagenet), tol=1e-4)


def test_inception_v3_training_outputs_equal_torchvision_including_aux_head():
    torch.manual_seed(0)
    peer = _no_dropout(randomize_norms(build_peer("torchvision", "inception_v3")))
    ours = _no_dropout(archlab.create_model("inception_v3"))
    load_state_dict(ours, peer.state_dict(), "torchvision")
    x = torch.randn(2, 3, 299, 299)  # the auxiliary head's 5×5/3 pooling wants 17×17 maps
    theirs, mine = peer.train()(x), ours.train()(x)
    logits_close(mine.logits, theirs.logits, tol=1e-4)
    logits_close(mine.aux, theirs.aux_logits, tol=1e-4)


def test_googlenet_paper_form_has_true_5x5_branches_and_no_batch_norm():
    model = _meta("googlenet_paper")
    assert model.inception3a.branch5x5.conv.conv.kernel_size == (5, 5)
    assert _meta("googlenet").inception3a.branch5x5.conv.conv.kernel_size == (3, 3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in model.modules()) == 2


def test_loading_imagenet_googlenet_into_ten_classes_resets_every_classifier():
    peer = build_peer("torchvision", "googlenet", "meta")
    model = _meta("googlenet", num_classes=10)
    _, report = convert_state_dict(model, peer.state_dict(), "torchvision")
    assert sorted(report.reset) == sorted(
        f"{m}.{p}" for m in ("head.fc", "aux1.fc2", "aux2.fc2") for p in ("weight", "bias"))


def _hand_googlenet(reduce: bool, width: float = 1.0, classes: int = 1000, k5: int = 3,
                    small_input: bool = False) -> int:
    """GoogLeNet's parameters counted from Table 1 by hand: every convolution is followed by
    batch norm (k²·in·out weights, no bias, 2·out), the head is a linear layer."""
    from archlab.models.inception import GOOGLENET_TABLE

    def w(c):
        return max(1, round(c * width))

    def conv(k, i, o):
        return k * k * i * o + 2 * o

    total = conv(3 if small_input else 7, 3, w(64)) + conv(1, w(64), w(64))
    total += conv(3, w(64), w(192))
    chs = w(192)
    for _, widths in GOOGLENET_TABLE:
        if widths is None:
            continue
        c1, r3, c3, r5, c5, pp = map(w, widths)
        if reduce:
            total += (conv(1, chs, c1) + conv(1, chs, r3) + conv(3, r3, c3) + conv(1, chs, r5)
                      + conv(k5, r5, c5) + conv(1, chs, pp))
            chs = c1 + c3 + c5 + pp
        else:      # Figure 2(a): the big kernels read everything, the pooling passes it on
            total += conv(1, chs, c1) + conv(3, chs, c3) + conv(k5, chs, c5)
            chs = c1 + c3 + c5 + chs
    return total + chs * classes + classes


def test_naive_googlenet_has_the_hand_counted_parameters_and_growing_channels():
    assert _hand_googlenet(True) == 6_624_904        # torchvision's, without aux heads
    naive = _meta("googlenet", aux_logits=False, reduce=False)
    assert count_params(naive) == _hand_googlenet(False) == 70_300_872
    assert naive.inception3a.out_chs == 64 + 128 + 32 + 192
    assert naive.num_features == 4_944
    assert count_params(_meta("googlenet", aux_logits=False, reduce=False, kernel_5x5=5)) == \
        _hand_googlenet(False, k5=5)
    # The naive module has no reduction convolutions and its pooling branch no projection.
    m = naive.inception4a
    assert list(m.branch3x3._modules) == ["conv"] and list(m.branch_pool._modules) == ["pool"]


@pytest.mark.parametrize("reduce", [True, False])
def test_narrow_googlenet_counts_and_runs(reduce):
    model = archlab.create_model("googlenet", num_classes=10, small_input=True, width=0.125,
                                 reduce=reduce)
    assert count_params(model) == _hand_googlenet(reduce, 0.125, 10, small_input=True)
    assert model.eval()(torch.randn(2, 3, 28, 28)).shape == (2, 10)
    # The auxiliary heads follow the modules they read, whatever their width.
    aux = _meta("googlenet", num_classes=10, width=0.5, reduce=reduce, aux_logits=True)
    assert aux.aux1.conv.conv.in_channels == aux.inception4a.out_chs
    assert aux.aux2.conv.conv.in_channels == aux.inception4d.out_chs
    with pytest.raises(ValueError, match="width"):
        _meta("googlenet", width=0)
