"""`archlab explain`: each map against a hand computation or the paper's own property, the
sanity checks of Adebayo et al. (1810.03292) on networks trained here, and bad input."""
from __future__ import annotations

import copy
import importlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import archlab
from archlab.explain import ExplainError, InputImage, dataset_batches
from archlab.explain.units import crop, patch_box
from archlab.analysis.profile import Field
from archlab.data import ImageData, load_dataset

pytest.importorskip("captum")
pytest.importorskip("matplotlib")

# The package; the top-level name archlab.explain is its function.
ex = importlib.import_module("archlab.explain")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe(**kw):
    from archlab.train import Recipe

    return Recipe(batch_size=64, lr=0.1, threads=1, progress=False, val_fraction=0.0,
                  augment="none", **kw)


@pytest.fixture(scope="module")
def fm_train():
    return load_dataset("fashion-mnist", "train")


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory, fm_train):
    """LeNet-5 trained by archlab.fit on 3,000 Fashion-MNIST images for 4 epochs (~79% test
    accuracy): a run directory as `archlab train` leaves it."""
    from archlab.train import fit

    run_dir = tmp_path_factory.mktemp("fm-run")
    sub = fm_train.subset(torch.randperm(len(fm_train),
                                         generator=torch.Generator().manual_seed(0))[:3000])
    sub.spec = {**fm_train.spec, "spec": "fashion-mnist"}
    fit("lenet5", sub, _recipe(epochs=4), run_dir=run_dir, verbose=False)
    return run_dir


@pytest.fixture(scope="module")
def fm(fm_run):
    return ex.load_subject(fm_run)


def _images(subject, n, seed=3):
    data, _ = ex.sample_dataset(subject, "fashion-mnist", "test", n, seed=seed)
    x, y, _ = next(dataset_batches(subject, data, n))
    display = subject.to_display(x)
    return [InputImage(str(i), x[i:i + 1], display[i], int(y[i])) for i in range(n)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a.ravel())).astype(float)
    rb = np.argsort(np.argsort(b.ravel())).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


# --------------------------------------------------------------------------------------
# Filters and max-activating patches
# --------------------------------------------------------------------------------------


def test_filters_are_the_first_kernels_with_zero_at_grey(fm):
    f = ex.filters(fm)
    w = fm.model.features.c1.weight.detach()
    assert f.layer == "features.c1" and f.images.shape == (6, 5, 5, 1)
    np.testing.assert_allclose(f.weights, w.numpy())
    # Each kernel scaled by its largest magnitude: that weight lands on 0 or 1, zero on 0.5.
    scaled = (w / w.flatten(1).abs().amax(1).view(-1, 1, 1, 1)) * 0.5 + 0.5
    np.testing.assert_allclose(f.images[..., 0], scaled[:, 0].numpy(), atol=1e-6)
    assert np.all(np.isclose(f.images.reshape(6, -1), 0).any(1)
                  | np.isclose(f.images.reshape(6, -1), 1).any(1))
    rgb = ex.filters(ex.load_subject("resnet20", num_classes=10))
    assert rgb.layer == "conv1" and rgb.images.shape == (16, 3, 3, 3)


def test_patch_box_and_crop_by_hand():
    # A 5x5 convolution with padding 2: unit (0, 0) sees pixels -2..2.
    f = Field((5.0, 5.0), (1.0, 1.0), (0.5, 0.5))
    assert patch_box(f, 0, 0, (28, 28)) == (-2, -2, 3, 3)
    # LeNet's S4 at 28 px: size 16, stride 4, unit 0 centred at 6: pixels -2..13.
    s4 = Field((16.0, 16.0), (4.0, 4.0), (6.0, 6.0))
    assert patch_box(s4, 1, 2, (28, 28)) == (2, 6, 18, 22)
    # A field wider than the image is the whole image along that axis.
    assert patch_box(Field((37.0, 37.0), (2.0, 2.0), (0.5, 0.5)), 3, 3, (28, 28)) == \
        (0, 0, 28, 28)
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1) / 16
    c = crop(image, (-1, 2, 2, 5))
    assert c.shape == (3, 3, 1)
    np.testing.assert_allclose(c[1:, :2, 0], image[:2, 2:, 0])
    assert np.all(c[0] == 0.5) and np.all(c[:, 2] == 0.5)


def _activations(subject, layer, x):
    out = {}
    module = dict(subject.model.named_modules())[layer]
    h = module.register_forward_hook(lambda _m, _i, o: out.__setitem__("a", o.detach()))
    with torch.no_grad():
        subject.model(x)
    h.remove()
    return out["a"]


def test_top_patch_is_the_channel_maximum_over_the_dataset(fm):
    tops = ex.top_patches(fm, "fashion-mnist", ["features.s2", "features.s4"],
                          channels=[0, 3, 5], k=5, split="test", limit=400)
    # Independently: every image of the same sample through the model, normalised by hand.
    data, original = ex.sample_dataset(fm, "fashion-mnist", "test", 400)
    x = (data.images.float() / 255 - fm.mean[0]) / fm.std[0]
    for layer, tp in tops.items():
        act = _activations(fm, layer, x)[:, tp.channels]            # (images, ch, h, w)
        per_image = act.flatten(2).amax(2)                          # (images, ch)
        assert tp.values.shape == (3, 5)
        for c in range(3):
            best = per_image[:, c].topk(5)
            np.testing.assert_allclose(tp.values[c], best.values.numpy(), rtol=1e-5)
            assert set(tp.indices[c].tolist()) == set(original[best.indices].tolist())
            for r in range(5):
                pos = int((original == int(tp.indices[c, r])).nonzero()[0, 0])
                row, col = tp.units[c, r]
                assert float(act[pos, c, row, col]) == pytest.approx(tp.values[c, r], rel=1e-5)
                assert tp.labels[c, r] == int(data.targets[pos])


@pytest.mark.parametrize("name,layer,size", [("lenet5", "features.s4", 28),
                                             ("resnet20", "layer1", 28),
                                             ("resnet20", "layer2", 56)])
def test_patch_holds_everything_the_unit_sees(name, layer, size, fm_train):
    """Noise outside the patch's box leaves the unit's activation unchanged: the crop is the
    whole receptive field (LeNet: valid convolutions and pooling; resnet20: 'same' padding,
    stride 2 in layer2, whose 37 px field fits in a 56 px image)."""
    torch.manual_seed(0)
    subject = ex.load_subject(name, num_classes=10, in_chans=1, small_input=True,
                              img_size=size)
    subject.mean, subject.std = (0.286,), (0.353,)
    sample = fm_train.subset(torch.arange(64))
    tp = ex.top_patches(subject, sample, [layer], channels=[1, 2], k=3)[layer]
    assert tp.field.size[0] < size
    g = torch.Generator().manual_seed(1)
    for c, ch in enumerate(tp.channels):
        for r in range(3):
            x = next(dataset_batches(subject, sample.subset([int(tp.indices[c, r])])))[0]
            top, left, bottom, right = tp.boxes[c, r]
            inside = torch.zeros(size, size, dtype=torch.bool)
            inside[max(top, 0):bottom, max(left, 0):right] = True
            assert 0 < inside.float().mean() < 1
            noisy = torch.where(inside, x, torch.randn(x.shape, generator=g) * 3)
            row, col = tp.units[c, r]
            a = _activations(subject, layer, torch.cat([x, noisy]))[:, ch, row, col].tolist()
            assert a[0] == pytest.approx(tp.values[c, r], rel=1e-5)
            assert a[1] == pytest.approx(a[0], rel=1e-5, abs=1e-6)
            # The patch shows those pixels, un-normalised, grey beyond the image.
            pixels = subject.to_display(x)[0]
            np.testing.assert_allclose(tp.patches[c, r], crop(pixels, tp.boxes[c, r]),
                                       atol=1e-5)


# --------------------------------------------------------------------------------------
# Attribution maps against hand computations and the papers' properties
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgb_resnet():
    torch.manual_seed(0)
    subject = ex.load_subject("resnet20", num_classes=10)
    return subject, ex.load_images(subject, ["skimage:coffee"])[0]


def test_gradcam_equals_the_formula(rgb_resnet):
    subject, image = rgb_resnet
    a = ex.attribute(subject, image, "gradcam", target=3)
    assert a.layer == "layer3" and a.raw.shape == (8, 8)
    # By hand (1610.02391 eq. 1-2): weights = spatial mean of d score / d A, ReLU of the sum.
    model, store = subject.model, {}
    h = model.layer3.register_forward_hook(lambda _m, _i, o: store.__setitem__("a", o))
    score = model(image.tensor)[0, 3]
    h.remove()
    grad, = torch.autograd.grad(score, store["a"])
    cam = F.relu((grad.mean((2, 3), keepdim=True) * store["a"]).sum(1))[0].detach()
    np.testing.assert_allclose(a.raw, cam.numpy(), rtol=1e-4, atol=1e-7)
    # Upsampled by the receptive field: unit (i, j) sits at pixel (4i, 4j) (start 0.5, jump 4).
    np.testing.assert_allclose(a.map[::4, ::4], cam.numpy(), rtol=1e-4, atol=1e-7)
    plain = ex.attribute(subject, image, "gradcam", target=3, align="resize")
    assert plain.map.shape == (32, 32) and not np.allclose(plain.map, a.map)


def test_saliency_is_the_largest_absolute_gradient(rgb_resnet):
    subject, image = rgb_resnet
    a = ex.attribute(subject, image, "saliency", target=1)
    x = image.tensor.clone().requires_grad_(True)
    subject.model(x)[0, 1].backward()
    np.testing.assert_allclose(a.map, x.grad[0].abs().amax(0).numpy(), rtol=1e-5, atol=1e-8)
    # SmoothGrad without noise is the saliency map.
    s = ex.attribute(subject, image, "smoothgrad", target=1, noise=0.0, samples=3)
    np.testing.assert_allclose(s.map, a.map, rtol=1e-4, atol=1e-8)


def test_integrated_gradients_add_up_to_the_score_change(rgb_resnet):
    """Completeness (1703.01365, proposition 1): the attributions sum to F(x) - F(black)."""
    subject, image = rgb_resnet
    # A random ReLU network's path is kinked: the sum converges slowly in the steps.
    a = ex.attribute(subject, image, "ig", target=2, steps=256)
    with torch.no_grad():
        black = subject.normalise(torch.zeros_like(image.tensor))
        change = float(subject.model(image.tensor)[0, 2] - subject.model(black)[0, 2])
    assert a.raw.sum() == pytest.approx(change, rel=0.02, abs=1e-3)


def test_occlusion_is_the_score_drop_under_a_grey_square(rgb_resnet):
    subject, image = rgb_resnet
    a = ex.attribute(subject, image, "occlusion", target=4, window=6, stride=3)
    x = image.tensor
    hidden = x.clone()
    hidden[..., :6, :6] = 0.0                         # the mean colour: grey
    with torch.no_grad():
        drop = float(subject.model(x)[0, 4] - subject.model(hidden)[0, 4])
    # Pixel (0, 0) lies under the first window only.
    assert a.map[0, 0] == pytest.approx(drop, rel=1e-4, abs=1e-6)


def test_saliency_and_gradcam_change_when_the_weights_are_randomised(fm):
    """Adebayo et al.'s model-randomisation test: a map that explains the model must change
    when the model's weights are re-initialised (fully, or only the classifier)."""
    images = _images(fm, 12)

    def maps(subject, method):
        return [ex.attribute(subject, im, method, target=im.label).map for im in images]

    def randomised(top_only: bool):
        model = copy.deepcopy(fm.model)
        torch.manual_seed(0)
        for m in ([model.output] if top_only else model.modules()):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return ex.subject_from_module(model, classes=fm.classes, mean=fm.mean, std=fm.std)

    full, top = randomised(False), randomised(True)
    for method, limit in (("saliency", 0.4), ("gradcam", 0.4)):
        trained = maps(fm, method)
        again = maps(fm, method)
        assert all(np.array_equal(a, b) for a, b in zip(trained, again))
        corr = np.mean([_spearman(a, b) for a, b in zip(trained, maps(full, method))])
        assert corr < limit, (method, corr)
    corr = np.mean([_spearman(a, b) for a, b in zip(maps(fm, "saliency"),
                                                     maps(top, "saliency"))])
    assert corr < 0.75, corr


CANVAS = 40


def _on_canvas(data: ImageData, n: int, seed: int):
    """n garments pasted at random places on a black 40 px canvas, with their offsets: the
    background then says nothing about the class."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n]
    offsets = torch.randint(0, CANVAS - 28 + 1, (n, 2), generator=g)
    canvas = torch.zeros(n, 1, CANVAS, CANVAS, dtype=torch.uint8)
    for i, (r, c) in enumerate(offsets.tolist()):
        canvas[i, :, r:r + 28, c:c + 28] = data.images[idx[i]]
    return ImageData("fashion-mnist-canvas", "train", data.classes, data.targets[idx],
                     images=canvas, in_chans=1), offsets


def test_gradcam_and_saliency_mass_falls_on_the_garment(fm_train):
    """On a network trained on garments placed anywhere on a larger black canvas, Grad-CAM's
    mass lies on the garment's pixels far beyond their share of the image, and most of the
    saliency and Grad-CAM mass lies within the garment's 28 px frame. (On plain 28 px
    Fashion-MNIST the background next to the garment is its silhouette, and evidence: there
    a trained LeNet's saliency mass on the garment only matches its area, and Grad-CAM's
    is below it.)"""
    from archlab.train import fit

    train, _ = _on_canvas(fm_train, 3000, 0)
    result = fit("lenet5", train, _recipe(epochs=5, small_input=True), verbose=False)
    pre = result.info["preprocess"]
    test, offsets = _on_canvas(load_dataset("fashion-mnist", "test"), 40, 1)

    def mass(model):
        subject = ex.subject_from_module(model, image_size=CANVAS, mean=pre["mean"],
                                         std=pre["std"], classes=test.classes)
        x, y, _ = next(dataset_batches(subject, test, 40))
        display = subject.to_display(x)
        out = {"saliency": [], "gradcam": []}
        for i in range(40):
            image = InputImage(str(i), x[i:i + 1], display[i], int(y[i]))
            garment = display[i][..., 0] > 0.05
            frame = np.zeros_like(garment)
            r, c = offsets[i].tolist()
            frame[r:r + 28, c:c + 28] = True
            for method in out:
                m = ex.attribute(subject, image, method, target=int(y[i])).map
                total = max(float(m.sum()), 1e-12)      # an all-zero map has no mass
                out[method].append(((m * garment).sum() / total, garment.mean(),
                                    (m * frame).sum() / total))
        return {k: np.array(v) for k, v in out.items()}, subject

    trained, subject = mass(result.model)
    cam, sal = trained["gradcam"], trained["saliency"]
    assert np.mean(cam[:, 0] / cam[:, 1]) > 1.3
    assert np.mean(cam[:, 0] > cam[:, 1]) >= 0.8
    frame_area = 28 * 28 / CANVAS ** 2
    assert np.mean(cam[:, 2]) > 0.6 and np.mean(sal[:, 2]) > 0.6 > frame_area
    # Localisation is learnt: a randomly initialised LeNet's Grad-CAM does not find it.
    torch.manual_seed(5)
    random_net = archlab.create_model("lenet5", num_classes=10, in_chans=1, small_input=True)
    untrained, _ = mass(random_net)
    ucam = untrained["gradcam"]
    assert np.mean(ucam[:, 0] / ucam[:, 1]) < np.mean(cam[:, 0] / cam[:, 1]) - 0.3


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------


def test_rollout_of_uniform_attention_by_hand():
    """Zero query/key/value weights make every attention row uniform (1/T); with the
    identity added and rows renormalised each layer is (U + I)/2, and L of them multiply to
    (I + (2^L - 1) U) / 2^L: the class token gives each patch (1 - 2^-L) / T."""
    model = archlab.create_model("vit_tiny_patch4_32", num_classes=10, depth=3)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
    subject = ex.subject_from_module(model)
    image = ex.load_images(subject, ["skimage:astronaut"])[0]
    tokens = 1 + 64
    maps = ex.attention_maps(subject, image.tensor)
    assert maps.shape == (3, 3, 8, 8)
    np.testing.assert_allclose(maps, 1 / tokens, rtol=1e-5)
    a = ex.attribute(subject, image, "rollout")
    np.testing.assert_allclose(a.raw, (1 - 2 ** -3) / tokens, rtol=1e-5)


def test_rollout_of_one_layer_is_half_its_mean_attention():
    torch.manual_seed(0)
    model = archlab.create_model("deit_tiny_distilled_patch4_32", num_classes=10, depth=1)
    subject = ex.subject_from_module(model)
    image = ex.load_images(subject, ["skimage:chelsea"])[0]
    probs = model.forward_attention(image.tensor)[0][0]        # (heads, tokens, tokens)
    expected = probs.mean(0)[0, 2:] / 2                          # class row, after 2 prefixes
    a = ex.attribute(subject, image, "rollout")
    np.testing.assert_allclose(a.raw, expected.reshape(8, 8).numpy(), rtol=1e-5, atol=1e-7)
    mx = ex.attribute(subject, image, "rollout", head_fusion="max").raw
    fused = probs.amax(0) + torch.eye(66)
    np.testing.assert_allclose(mx, (fused[0, 2:] / fused[0].sum()).reshape(8, 8).numpy(),
                               rtol=1e-5, atol=1e-7)


def test_an_average_pooled_vit_reads_the_mean_of_its_patch_rows():
    """Without a class token the head reads the mean of the patch tokens, so attention and
    rollout read the mean of the patch rows: with one layer, by hand."""
    torch.manual_seed(0)
    model = archlab.create_model("vit_tiny_patch4_32", num_classes=10, depth=1,
                                 global_pool="avg", class_token=False)
    subject = ex.subject_from_module(model)
    image = ex.load_images(subject, ["skimage:chelsea"])[0]
    probs = model.forward_attention(image.tensor)[0][0]        # (heads, 64, 64)
    att = ex.attribute(subject, image, "attention")
    np.testing.assert_allclose(att.raw[0], probs.mean(1).reshape(3, 8, 8).numpy(), rtol=1e-5)
    roll = ex.attribute(subject, image, "rollout")
    fused = (probs.mean(0) + torch.eye(64)) / 2
    np.testing.assert_allclose(roll.raw, fused.mean(0).reshape(8, 8).numpy(), rtol=1e-5,
                               atol=1e-7)


def test_attention_on_a_photograph_with_a_vit():
    torch.manual_seed(0)
    subject = ex.load_subject("vit_tiny_patch16_224", num_classes=10)
    image = ex.load_images(subject, ["skimage:astronaut"])[0]
    att = ex.attribute(subject, image, "attention")
    assert att.raw.shape == (12, 3, 14, 14) and att.map.shape == (224, 224)
    # Each class-token row is a distribution over all 197 tokens: its patches take < 1.
    sums = att.raw.sum((-1, -2))
    assert np.all(sums <= 1 + 1e-5) and np.all(sums > 0.5)
    roll = ex.attribute(subject, image, "rollout")
    assert roll.raw.shape == (14, 14) and np.isfinite(roll.map).all()


def test_real_photographs_with_an_imagenet_layout_cnn():
    torch.manual_seed(0)
    subject = ex.load_subject("resnet18", img_size=64)
    assert subject.num_classes == 1000 and "tabby" in subject.classes
    photos = ex.load_images(subject, ["skimage:cat", "skimage:coffee", "skimage:camera"])
    for image, methods in zip(photos, (("saliency", "gradcam"), ("occlusion",),
                                       ("smoothgrad",))):
        assert image.tensor.shape == (1, 3, 64, 64) and image.display.shape == (64, 64, 3)
        for method in methods:
            a = ex.attribute(subject, image, method, target="coffee mug", samples=8)
            assert a.map.shape == (64, 64) and np.isfinite(a.map).all()
            assert a.target_name == "coffee mug" and a.layer in (None, "layer4")


# --------------------------------------------------------------------------------------
# Error analysis
# --------------------------------------------------------------------------------------


def test_error_analysis_agrees_with_evaluate(fm_run, fm):
    from archlab.train import evaluate

    err = ex.error_analysis(fm, "fashion-mnist", top=12)
    reference = evaluate(fm_run, "fashion-mnist", device="cpu").metrics
    np.testing.assert_array_equal(err.confusion, np.array(reference.confusion))
    assert err.count == 10_000 and err.accuracy == pytest.approx(reference.top1)
    assert err.loss == pytest.approx(reference.loss, rel=1e-4)
    losses = [t.loss for t in err.top_losses]
    assert len(losses) == 12 and losses == sorted(losses, reverse=True)
    for t in err.top_losses:
        assert t.loss == pytest.approx(-math.log(t.prob_actual), rel=1e-4)
        assert t.actual != t.predicted and t.prob_predicted >= t.prob_actual
    actual, predicted, count = err.most_confused(1)[0]
    off = err.confusion - np.diag(np.diag(err.confusion))
    assert count == off.max()
    assert off[err.classes.index(actual), err.classes.index(predicted)] == count


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_bad_input_is_named_with_what_would_work(fm, tmp_path, rgb_resnet):
    vit = ex.load_subject("vit_tiny_patch4_32", num_classes=10)
    cnn, image = rgb_resnet
    with pytest.raises(FileNotFoundError, match=r"nowhere\.png does not exist.*skimage:"):
        ex.load_images(fm, [tmp_path / "nowhere.png"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        ex.load_images(fm, [broken])
    with pytest.raises(ExplainError, match=r"shape \(5, 5, 7\)"):
        ex.load_images(fm, [np.zeros((5, 5, 7))])
    with pytest.raises(ExplainError, match="image 0: .*built for 1 input channels, got 3"):
        ex.load_images(fm, [torch.zeros(1, 3, 28, 28)])
    with pytest.raises(ExplainError, match="no attention layers.*gradcam"):
        ex.attribute(cnn, image, "attention")
    with pytest.raises(ExplainError, match="Grad-CAM.*rollout"):
        ex.attribute(vit, ex.load_images(vit, ["skimage:coffee"])[0], "gradcam")
    with pytest.raises(ExplainError, match="no layer 'layer9'.*layer1, layer2, layer3"):
        ex.attribute(cnn, image, "gradcam", layer="layer9")
    with pytest.raises(ExplainError, match=r"'head' outputs \(1, 10\).*layer3"):
        ex.attribute(cnn, image, "gradcam", layer="head")
    with pytest.raises(ExplainError, match="unknown method 'lime'.*occlusion"):
        ex.attribute(cnn, image, "lime")
    with pytest.raises(ExplainError, match="'Trousers'.*Trouser"):
        ex.attribute(fm, _images(fm, 1)[0], "saliency", target="Trousers")
    with pytest.raises(ExplainError, match="Closest names: .*resnet20"):
        ex.load_subject("resnet21")
    with pytest.raises(ExplainError, match="patches needs a dataset"):
        ex.explain(fm.model, methods="patches", data=None)
    with pytest.raises(ExplainError, match="attention does not apply"):
        ex.explain(fm, ["skimage:coffee"], methods=["attention"])
    with pytest.raises(ExplainError, match=r"16 channels \(0 to 15\).*\[40\]"):
        ex.top_patches(fm, "fashion-mnist", ["features.s4"], channels=[40], limit=10)


# --------------------------------------------------------------------------------------
# The command and its pictures
# --------------------------------------------------------------------------------------


def test_cli_explain_writes_every_picture_of_a_trained_run(fm_run, tmp_path, capsys):
    from PIL import Image

    from archlab.cli import main

    out = tmp_path / "explain"
    assert main(["explain", str(fm_run), "--out", str(out), "--limit", "300"]) == 0
    pictures = ex.list_pictures(out)
    kinds = [p.kind for p in pictures]
    assert kinds.count("filters") == 1 and kinds.count("patches") == 2
    assert kinds.count("attribution") == 4
    assert "confusion" in kinds and "top_losses" in kinds
    page = (out / "index.html").read_text()
    for p in pictures:
        assert f"src='{p.file}'" in page
        with Image.open(out / p.file) as img:
            assert img.size[0] > 100 and img.size[1] > 100
    manifest = json.loads((out / "explain.json").read_text())
    assert manifest["errors"]["count"] == 10_000 and manifest["errors"]["most_confused"]
    assert str(out / "index.html") in capsys.readouterr().out
    assert main(["explain", str(fm_run), str(tmp_path / "missing.png"), "--out",
                 str(out)]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err


def test_cli_explain_attention_of_a_vit_on_a_photo(tmp_path, capsys):
    from archlab.cli import main

    out = tmp_path / "vit"
    assert main(["explain", "vit_tiny_patch4_32", "skimage:astronaut", "--num-classes", "10",
                 "--method", "attention,rollout", "--out", str(out)]) == 0
    kinds = sorted(p.kind for p in ex.list_pictures(out))
    assert kinds == ["attention", "attribution"]
    assert main(["explain", "resnet20", "skimage:coffee", "--method", "rollout", "--out",
                 str(out)]) == 2
    assert "no attention layers" in capsys.readouterr().err


def test_explain_returns_arrays_without_writing(fm):
    result = ex.explain(fm, methods=["filters", "gradcam", "errors"], num_images=2,
                        data="fashion-mnist")
    assert result.out_dir is None and result.pictures == []
    assert result.filters.images.shape == (6, 5, 5, 1)
    assert [a.method for a in result.attributions] == ["gradcam", "gradcam"]
    assert result.attributions[0].map.shape == (28, 28) and result.errors.count == 10_000


# --------------------------------------------------------------------------------------
# Runs of every kind explain as `archlab eval` evaluates them
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """Tiny runs on 256 digits, one epoch or two: a plain LeNet-5 (also the teacher), one
    fine-tuned from saved weights (a TransferModel with a new head), one distilled from the
    plain run, and a ResNet-20 trained at 16 then 32 px."""
    from archlab.models.weights import save_state_dict

    root = tmp_path_factory.mktemp("digits-runs")
    digits = archlab.load_dataset("digits")
    digits = digits.subset(torch.arange(256))
    torch.manual_seed(0)
    body = archlab.create_model("lenet5", num_classes=10, in_chans=1, small_input=True)
    save_state_dict(body.state_dict(), root / "lenet5-random.safetensors")
    recipes = {
        "plain": ("lenet5", _recipe(epochs=1, image_size=28, small_input=True)),
        "fine-tuned": ("lenet5", _recipe(epochs=1, image_size=28, small_input=True,
                                         pretrained=str(root / "lenet5-random.safetensors"),
                                         fine_tune=True, freeze_epochs=1)),
        "distilled": ("lenet5", _recipe(epochs=1, image_size=28, small_input=True,
                                        distill="hard", teacher=str(root / "plain"))),
        "progressive": ("resnet20", _recipe(epochs=2, image_size=32, small_input=True, progressive={
            "start_size": 16, "end_size": 32, "stages": 2})),
    }
    for name, (model, recipe) in recipes.items():
        archlab.fit(model, digits, recipe, run_dir=root / name, verbose=False)
    return root


@pytest.mark.parametrize("kind", ["fine-tuned", "distilled", "progressive"])
def test_every_kind_of_run_explains_as_it_evaluates(digits_runs, kind, tmp_path):
    from archlab.train import TransferModel, evaluate, load_trained

    run = digits_runs / kind
    model, info = load_trained(run)
    subject = ex.load_subject(run)
    assert type(subject.model) is type(model)
    assert isinstance(subject.model, TransferModel) == (kind == "fine-tuned")
    pre = info["preprocess"]
    assert subject.image_size == pre["image_size"] == (32 if kind == "progressive" else 28)
    assert subject.classes == info["classes"] and subject.in_chans == pre["in_chans"] == 1
    for name, value in model.state_dict().items():
        torch.testing.assert_close(subject.model.state_dict()[name], value, rtol=0, atol=0)
    out = tmp_path / "explain"
    result = archlab.explain(str(run), methods="filters,gradcam,errors", data="digits",
                             num_images=2, out_dir=out)
    reference = evaluate(run, "digits", device="cpu").metrics
    np.testing.assert_array_equal(result.errors.confusion, np.array(reference.confusion))
    assert [a.method for a in result.attributions] == ["gradcam", "gradcam"]
    kinds = [p.kind for p in ex.list_pictures(out)]
    assert kinds == ["filters", "attribution", "attribution", "confusion", "top_losses"]


def test_both_names_of_explain_are_the_function(digits_runs, tmp_path):
    from archlab.explain import explain

    assert explain is archlab.explain and callable(archlab.explain)
    model, _ = archlab.load_trained(digits_runs / "plain")
    result = archlab.explain(model, ["skimage:camera"], methods="saliency")
    assert result.attributions[0].map.shape == (28, 28)
    again = explain(model, ["skimage:camera"], methods="saliency")
    np.testing.assert_allclose(again.attributions[0].map, result.attributions[0].map)


def test_the_page_escapes_what_it_is_given_and_fetches_nothing(digits_runs, tmp_path):
    subject = ex.load_subject(digits_runs / "plain")
    subject.name = "<script>alert('x')</script>"
    out = tmp_path / "page"
    result = ex.explain(subject, methods="filters,errors", data="digits", out_dir=out)
    page = (out / "index.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert f"accuracy {result.errors.accuracy:.2%} on {result.errors.count:,} images" in page
    actual, predicted, count = result.errors.most_confused(1)[0]
    assert f"<tr><td>{actual}</td><td>{predicted}</td><td>{count}</td></tr>" in page
