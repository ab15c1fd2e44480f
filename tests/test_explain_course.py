"""The course's pictures in `archlab explain`: Zeiler & Fergus's deconvnet, Simonyan et al.'s
class-model images, guided backpropagation, and ViT's Figure 7 (position-embedding
similarity, mean attention distance), each against a hand computation or the paper's own
property; the method selection and the page. Tiny models, 28-32 px, a few steps."""
from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.analysis.profile import layer_fields
from archlab.explain import ExplainError, InputImage
from archlab.explain.class_model import _blur
from archlab.explain.methods import usable_methods
from archlab.explain.units import patch_box
from archlab.models.vit import sincos_pos_embedding

pytest.importorskip("captum")
pytest.importorskip("matplotlib")

ex = importlib.import_module("archlab.explain")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cnn(name: str, size: int, seed: int = 0, **kw):
    """A grey 10-class small-input model with random weights, for `size` px images."""
    torch.manual_seed(seed)
    model = archlab.create_model(name, num_classes=10, in_chans=1, small_input=True, **kw)
    return ex.subject_from_module(model, image_size=size)


def _image(subject, seed: int = 0) -> InputImage:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, subject.in_chans, subject.image_size, subject.image_size, generator=g)
    return InputImage("noise", x, subject.to_display(x)[0])


# --------------------------------------------------------------------------------------
# The deconvnet (1311.2901)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,layer,size", [("lenet5", "features.s4", 28),
                                             ("resnet20", "layer1", 32),
                                             ("resnet20", "layer2", 56)])
def test_a_projection_lies_in_the_units_receptive_field(name, layer, size):
    """Nothing outside the unit's receptive field (archlab.analysis's tracker, cut by
    patch_box as the patches are) reaches it, so its projection is zero there; inside it
    is not, and it is not the plain gradient (the ReLUs' rule is applied)."""
    subject = _cnn(name, size)
    field = layer_fields(subject.model, size, [layer])[layer]
    x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(1))
    units = [[1, 2], [3, 0]]
    proj = ex.project(subject, x, layer, 3, units)
    assert proj.shape == (2, 1, size, size) and np.isfinite(proj).all()
    for i, (r, c) in enumerate(units):
        top, left, bottom, right = patch_box(field, r, c, (size, size))
        inside = np.zeros((size, size), bool)
        inside[max(top, 0):bottom, max(left, 0):right] = True
        assert inside.mean() < 0.8
        support = proj[i, 0] != 0
        assert not (support & ~inside).any()
        assert support[inside].mean() > 0.3
    # The plain gradient of the same unit has the same support but other values.
    xg = x[:1].clone().requires_grad_(True)
    out = {}
    h = dict(subject.model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, o: out.__setitem__("a", o))
    subject.model(xg)
    h.remove()
    grad, = torch.autograd.grad(out["a"][0, 3, 1, 2], xg)
    assert not np.allclose(grad[0].numpy(), proj[0], atol=1e-6)


class _TinyConvNet(nn.Module):
    """conv 3x3 -> ReLU -> max-pool 2 -> conv 3x3 -> ReLU: a deconvnet small enough to run
    by hand."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)
        self.act2 = nn.ReLU()

    def forward(self, x):
        return self.act2(self.conv2(self.pool(self.act1(self.conv1(x))))).flatten(1)


def test_the_deconvnet_by_hand_on_a_tiny_net():
    """1311.2901 section 2.1: the map with one activation kept goes down through the ReLU
    (rectified, whatever the forward pass did), the transposed filters, the unpooling by
    the switches, the ReLU again and the first transposed filters."""
    net = _TinyConvNet().eval()
    subject = ex.subject_from_module(net, image_size=8, mean=(0.5,), std=(0.5,))
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    proj = ex.project(subject, x, "act2", 1, [[2, 1]])[0]
    with torch.no_grad():
        _, switches = F.max_pool2d(net.act1(net.conv1(x)), 2, return_indices=True)
        down = torch.zeros(1, 2, 4, 4)
        down[0, 1, 2, 1] = 1.0
        down = F.conv_transpose2d(F.relu(down), net.conv2.weight, padding=1)
        down = F.max_unpool2d(down, switches, 2, output_size=(8, 8))
        down = F.conv_transpose2d(F.relu(down), net.conv1.weight, padding=1)
    np.testing.assert_allclose(proj, down[0].numpy(), rtol=1e-5, atol=1e-7)
    assert np.abs(proj).max() > 0


def test_deconv_in_explain_sits_beside_the_top_patches(tmp_path):
    subject = _cnn("resnet20", 32)
    digits = archlab.load_dataset("digits").subset(torch.arange(48))
    result = ex.explain(subject, methods="deconv", data=digits, channels={"layer1": [2, 5]},
                        top_k=3, out_dir=tmp_path)
    assert result.patches == {} and list(result.deconv) == ["layer1"]
    tp, proj = result.deconv_patches["layer1"], result.deconv["layer1"]
    assert proj.images.shape == tp.patches.shape == (2, 3, 15, 15, 1)
    assert proj.channels == [2, 5]
    # The best patch's projection, recomputed on its own and cut to the same box.
    x = next(ex.dataset_batches(subject, digits.subset([int(tp.indices[1, 0])])))[0]
    full = ex.project(subject, x, "layer1", 5, tp.units[1, :1])[0]
    shown = 0.5 + full / (2 * np.abs(full).max())
    top, left, bottom, right = tp.boxes[1, 0]
    rows, cols = slice(max(top, 0), bottom), slice(max(left, 0), right)
    cut = proj.images[1, 0][rows.start - top:rows.stop - top,
                            cols.start - left:cols.stop - left, 0]
    np.testing.assert_allclose(cut, shown[0][rows, cols], atol=1e-5)
    assert [p.kind for p in ex.list_pictures(tmp_path)] == ["deconv"]


# --------------------------------------------------------------------------------------
# Guided backpropagation (1412.6806)
# --------------------------------------------------------------------------------------


class _TinyMLP(nn.Module):
    num_classes, in_chans = 2, 1

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -1, 2, 0], [0.5, 1, -1, 1],
                                                [-1.0, 2, 1, -0.5]]))
            self.fc1.bias.zero_()
            self.fc2.weight.copy_(torch.tensor([[2.0, -3, 1], [1.0, 1, -2]]))
            self.fc2.bias.zero_()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def test_guided_backprop_by_hand_on_a_tiny_net():
    """Through the ReLU only positive gradient passes, and only where its input was
    positive: d/dx = W1^T (relu(w2) * [W1 x > 0])."""
    net = _TinyMLP().eval()
    subject = ex.subject_from_module(net, image_size=2, mean=(0.5,), std=(0.5,))
    x = torch.tensor([[[[1.0, 0.5], [1.0, -1.0]]]])
    pre = net.fc1.weight @ x.flatten()                    # (2.5, -0.5, 1.5): unit 1 is off
    w1, w2 = net.fc1.weight.detach(), net.fc2.weight.detach()
    image = InputImage("x", x, subject.to_display(x)[0])
    for target in (0, 1):
        guided = w1.T @ (w2[target].clamp_min(0) * (pre > 0))
        plain = w1.T @ (w2[target] * (pre > 0))
        a = ex.attribute(subject, image, "guided_backprop", target=target)
        np.testing.assert_allclose(a.raw.reshape(-1), guided.numpy(), rtol=1e-6)
        np.testing.assert_allclose(a.map.reshape(-1), guided.abs().numpy(), rtol=1e-6)
        # Class 1 reads unit 2 with a negative weight: the gradient has it, guided does not.
        assert np.allclose(guided, plain) == (target == 0)


def test_guided_backprop_is_the_gradient_without_relus_and_not_with_them():
    tanh = _cnn("lenet5", 28, act="tanh")
    relu = _cnn("resnet20", 32)
    for subject, same in ((tanh, True), (relu, False)):
        image = _image(subject)
        guided = ex.attribute(subject, image, "guided_backprop", target=3)
        x = image.tensor.clone().requires_grad_(True)
        subject.model(x)[0, 3].backward()
        assert np.isfinite(guided.raw).all() and np.abs(guided.raw).max() > 0
        assert np.allclose(guided.raw, x.grad[0].numpy(), rtol=1e-5, atol=1e-9) == same
    assert "guided_backprop" not in usable_methods(tanh)
    assert "guided_backprop" in usable_methods(relu)


# --------------------------------------------------------------------------------------
# Class-model images (1312.6034)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_lenet():
    """LeNet-5 trained for three epochs on the 1,438 training digits at 28 px."""
    from archlab.train import Recipe, fit

    digits = archlab.load_dataset("digits")
    torch.manual_seed(0)
    run = fit("lenet5", digits, Recipe(batch_size=64, lr=0.1, threads=1, progress=False,
                                       val_fraction=0.0, augment="none", epochs=3,
                                       image_size=28, small_input=True), verbose=False)
    pre = run.info["preprocess"]
    return ex.subject_from_module(run.model, image_size=28, mean=pre["mean"],
                                  std=pre["std"], classes=digits.classes)


def test_a_class_model_image_raises_its_class_above_every_other(digits_lenet):
    models = ex.class_model_images(digits_lenet, list(range(10)), {"steps": 100})
    start = [m.start_score for m in models]
    assert max(start) - min(start) < 2                 # the start says little of any class
    for m in models:
        assert m.image.shape == (28, 28, 1) and 0 <= m.image.min() <= m.image.max() <= 1
        assert int(m.logits.argmax()) == m.target, (m.target, m.logits)
        assert m.score - m.logits[m.runner_up] > 3, (m.target, m.logits)
        assert m.score > m.start_score + 10
    # The L2 term pulls towards the mean image (zero).
    loose, tight = (ex.class_model_images(digits_lenet, [4], {"steps": 30, "l2": l2})[0]
                    for l2 in (0.0, 1.0))
    assert tight.tensor.norm() < 0.7 * loose.tensor.norm()


def test_class_models_are_deterministic_given_a_seed(digits_lenet):
    p = {"steps": 12, "jitter": 3, "blur_every": 2}
    both = ex.class_model_images(digits_lenet, [2, 7], p)
    same = ex.class_model_images(digits_lenet, [2, 7], p)
    for a, b in zip(both, same):
        torch.testing.assert_close(a.tensor, b.tensor, rtol=0, atol=0)
    # Alone, a class gets the image it gets in a batch (to the rounding of batched kernels).
    again = ex.class_model_images(digits_lenet, ["7"], p)[0]
    torch.testing.assert_close(both[1].tensor, again.tensor, rtol=0, atol=1e-5)
    other = ex.class_model_images(digits_lenet, [7], {**p, "seed": 1})[0]
    assert not torch.equal(other.tensor, again.tensor)
    assert both[1].params == {**ex.AscentParams().__dict__, **p}
    with pytest.raises(ExplainError, match="no parameter stpes.*steps"):
        ex.AscentParams.parse("stpes=3")
    with pytest.raises(ExplainError, match=r"lr=-1\.0 out of range"):
        ex.AscentParams.parse({"lr": -1})
    with pytest.raises(ExplainError, match="KEY=VALUE"):
        ex.AscentParams.parse("steps")


def test_the_blur_is_a_normalised_gaussian():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    sigma = 0.8
    t = torch.arange(-2, 3, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    torch.testing.assert_close(_blur(x, sigma)[0, 0, 2:7, 2:7], g[:, None] * g[None])
    flat = torch.full((1, 3, 6, 6), 0.3)
    torch.testing.assert_close(_blur(flat, 1.3), flat)


# --------------------------------------------------------------------------------------
# ViT's Figure 7 (2010.11929)
# --------------------------------------------------------------------------------------


def test_a_smooth_2d_embedding_is_most_like_its_neighbours():
    """Position embeddings set to the 2-D sin-cos table: each patch's map peaks at its own
    place, and the most similar other patch is one of its four neighbours."""
    torch.manual_seed(0)
    model = archlab.create_model("vit_tiny_patch4_32", num_classes=10, depth=1)
    table = sincos_pos_embedding((8, 8), model.embed_dim)
    with torch.no_grad():
        model.pos_embedding[0, 1:] = table[0]
    pos, grid = ex.position_embeddings(ex.subject_from_module(model))
    assert grid == (8, 8) and pos.shape == (64, model.embed_dim)
    sim = ex.position_similarity(pos, grid)
    for r in range(8):
        for c in range(8):
            m = sim[r, c].copy()
            assert np.unravel_index(m.argmax(), m.shape) == (r, c)
            m[r, c] = -np.inf
            rr, cc = np.unravel_index(m.argmax(), m.shape)
            assert abs(rr - r) + abs(cc - c) == 1, (r, c, rr, cc)
    # The fixed sin-cos kind reads the same table; learned 2-D is [row half, column half].
    fixed = archlab.create_model("vit_tiny_patch4_32", num_classes=10, depth=1,
                                 pos_embedding="sincos")
    np.testing.assert_allclose(ex.position_embeddings(fixed)[0], pos, atol=1e-6)
    two = archlab.create_model("vit_tiny_patch4_32", num_classes=10, depth=1,
                               pos_embedding="learned_2d")
    p2, _ = ex.position_embeddings(two)
    np.testing.assert_allclose(p2[8 * 5 + 2], torch.cat([two.pos_embedding_rows[5],
                                                         two.pos_embedding_cols[2]]).detach())
    with pytest.raises(ExplainError, match="pos_embedding='none'"):
        ex.position_embeddings(archlab.create_model("vit_tiny_patch4_32", num_classes=10,
                                                    depth=1, pos_embedding="none"))


def _mean_distance_by_hand(g: int, patch: int) -> float:
    total = 0.0
    for i in range(g * g):
        for j in range(g * g):
            total += patch * math.hypot(i // g - j // g, i % g - j % g)
    return total / (g * g) ** 2


def test_mean_attention_distance_by_hand():
    # Attending only to itself: distance 0.
    eye = torch.eye(1 + 9).expand(2, -1, -1)
    assert np.allclose(ex.attention_distance([eye], 1, (3, 3), 16), 0)
    # Uniform over the 2x2 patches: from any patch 0, p, p and p·√2.
    uniform = torch.full((3, 5, 5), 1 / 5)            # the class token's share is left out
    d = ex.attention_distance([uniform, uniform], 1, (2, 2), 16)
    assert d.shape == (2, 3)
    np.testing.assert_allclose(d, 16 * (2 + math.sqrt(2)) / 4, rtol=1e-6)
    # One head looking one patch to the right (the last column looks at itself).
    shift = torch.zeros(1, 9, 9)
    for i in range(9):
        shift[0, i, i + 1 if i % 3 < 2 else i] = 1.0
    np.testing.assert_allclose(ex.attention_distance([shift], 0, (3, 3), 4), [[4 * 6 / 9]])


def test_uniform_attention_in_a_vit_has_the_hand_computed_distance():
    """Zero query and key weights make every attention row uniform: each head's mean
    attention distance is the mean distance between two of the 8x8 patches of 4 px."""
    model = archlab.create_model("vit_tiny_patch4_32", num_classes=10, depth=2)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
    subject = ex.subject_from_module(model)
    images = ex.load_images(subject, ["skimage:astronaut", "skimage:coffee"])
    ad = ex.mean_attention_distance(subject, images)
    assert ad.distance.shape == (2, 3) and ad.per_image.shape == (2, 2, 3)
    np.testing.assert_allclose(ad.distance, _mean_distance_by_hand(8, 4), rtol=1e-5)


# --------------------------------------------------------------------------------------
# Choosing the methods, the command and the page
# --------------------------------------------------------------------------------------


def test_channels_and_the_default_choice():
    assert ex.parse_channels("4") == 4 and ex.parse_channels("0,5,9") == [0, 5, 9]
    assert ex.parse_channels("layer2:3,layer2:7,layer3:0") == {"layer2": [3, 7],
                                                               "layer3": [0]}
    with pytest.raises(ExplainError, match="not a mix"):
        ex.parse_channels("layer2:3,4")
    subject = _cnn("lenet5", 28)
    chosen, notes = ex.resolve_methods(subject, None, True, True)
    assert "guided_backprop" in chosen and "deconv" not in chosen
    assert "class_model" not in chosen and any("not run unless named" in n for n in notes)
    chosen, notes = ex.resolve_methods(subject, "all", True, True)
    assert {"deconv", "class_model", "guided_backprop"} <= set(chosen)
    assert not {"pos_embedding", "attention_distance"} & set(chosen)
    assert any(n.startswith("attention, rollout, attention_distance: does not apply, lenet5 "
                            "has no attention layers") for n in notes)


def test_cli_course_methods_on_a_cnn(tmp_path, capsys):
    from archlab.cli import main

    out = tmp_path / "cnn"
    args = ["explain", "lenet5", "--num-classes", "10", "--in-chans", "1", "--small-input",
            "--img-size", "28", "--data", "digits", "--limit", "64", "--top-k", "3",
            "--num-images", "1", "--out", str(out)]
    assert main(args + ["--method", "deconv,class-model,guided-backprop,pos-embedding,"
                        "attention-distance", "--channels", "features.s4:0,features.s4:3",
                        "--classes", "1,7", "--ascent", "steps=4,jitter=1"]) == 0
    pictures = ex.list_pictures(out)
    assert [p.kind for p in pictures] == ["deconv", "class_model", "attribution"]
    page = (out / "index.html").read_text()
    assert "pos_embedding: skipped, lenet5 has no position embeddings" in page
    assert "attention_distance: skipped, lenet5 has no attention layers" in page
    manifest = json.loads((out / "explain.json").read_text())
    assert manifest["methods"] == ["deconv", "class_model", "guided_backprop"]
    capsys.readouterr()
    assert main(args + ["--method", "pos-embedding"]) == 2
    assert "pos_embedding does not apply to lenet5: it has no position" in capsys.readouterr().err
    assert main(args + ["--method", "class-model", "--ascent", "steps=0"]) == 2
    assert "steps=0 out of range" in capsys.readouterr().err


def test_cli_figure_7_of_a_vit(tmp_path):
    from archlab.cli import main

    out = tmp_path / "vit"
    assert main(["explain", "vit_tiny_patch4_32", "skimage:astronaut", "--num-classes", "10",
                 "--method", "pos-embedding,attention-distance,guided-backprop",
                 "--out", str(out)]) == 0
    assert [p.kind for p in ex.list_pictures(out)] == ["pos_embedding", "attention_distance"]
    notes = json.loads((out / "explain.json").read_text())["notes"]
    assert notes == ["guided_backprop: skipped, vit_tiny_patch4_32 has no ReLU, the one "
                     "place where this rule differs from the plain gradient"]
