"""Weights carry their preprocessing: `model.pretrained_cfg` and `transforms_for`, checked
against torchvision's and timm's own evaluation transforms, and a trained run's record
followed through its directory, `archlab convert`, `predict` and `explain`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import archlab
from archlab.models import read_state_dict
from archlab.models.pretrained_cfg import peer_cfg, resize_side
from archlab.train import Recipe, fit, load_trained, predict
from conftest import TINY

skimage_data = pytest.importorskip("skimage.data")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(skimage_data.chelsea())


def test_resnet18_transforms_are_torchvisions(photo):
    ours = archlab.transforms_for(archlab.create_model("resnet18"))(photo)
    theirs = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()(photo)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert (ours - theirs).abs().max() <= 1e-6


def test_named_torchvision_weights_bring_their_own_view(photo):
    # ResNet-50's V2 weights are evaluated from 232 px, not 256: the named weights' cfg says so.
    base = archlab.create_model("resnet50").pretrained_cfg
    cfg = peer_cfg("torchvision", "resnet50", "IMAGENET1K_V2", base)
    assert resize_side(224, cfg["crop_pct"]) == 232 and len(cfg["classes"]) == 1000
    ours = archlab.transforms_for(cfg)(photo)
    theirs = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()(photo)
    assert (ours - theirs).abs().max() <= 1e-6


def test_xception_cfg_and_transforms_are_timms(photo):
    model = archlab.create_model("xception")
    cfg = model.pretrained_cfg
    peer = timm.models.get_pretrained_cfg("legacy_xception")
    assert cfg["input_size"] == tuple(peer.input_size) == (3, 299, 299)
    assert cfg["mean"] == pytest.approx(peer.mean) and cfg["mean"] == (0.5, 0.5, 0.5)
    assert cfg["std"] == pytest.approx(peer.std)
    assert (cfg["interpolation"], cfg["crop_pct"]) == (peer.interpolation, peer.crop_pct)
    config = timm.data.resolve_data_config({}, pretrained_cfg=peer.to_dict())
    theirs = timm.data.create_transform(**config)(photo)
    ours = archlab.transforms_for(model)(photo)
    assert (ours - theirs).abs().max() <= 1e-6


def _peer_views(card):
    """(library, size, crop_pct, interpolation, mean) of every weight set of the peers."""
    for lib, peer in card.peers.items():
        if lib == "torchvision":
            for w in torchvision.models.get_model_weights(peer):
                t = w.transforms()
                yield (f"tv:{w.name}", t.crop_size[0], t.resize_size[0],
                       t.interpolation.value, tuple(t.mean))
        elif lib == "timm":
            p = timm.models.get_pretrained_cfg(peer)
            # timm floors size / crop_pct where torchvision rounds: compare its crop_pct.
            yield (f"timm:{peer}", p.input_size[-1], p.crop_pct, p.interpolation,
                   tuple(p.mean))


# torchvision's GoogLeNet and Inception v3 re-normalise ImageNet-normalised input to [-1, 1]
# inside the network (transform_input); archlab's cards give [-1, 1] directly.
FOLDED_INPUT = {"googlenet", "inception_v3"}


@pytest.mark.parametrize("name", [n for n in archlab.list_models() if archlab.model_card(n).peers])
def test_every_card_evaluates_as_its_weights_source_does(name):
    """A card's resize, interpolation and normalisation are those of one of its peers'
    weights at the card's side (peers at another side are not comparable)."""
    card = archlab.model_card(name)
    views = [v for v in _peer_views(card) if v[1] == card.input_size[1]]
    if name not in FOLDED_INPUT:
        views = [v for v in views if np.allclose(v[4], card.mean, atol=1e-3)]
    if not views:
        pytest.skip(f"no peer weights of {name} at {card.input_size[1]} px and its mean")

    def same(view):
        lib, size, resize_or_crop, interpolation, _ = view
        if lib.startswith("tv:"):
            fits = resize_side(size, card.crop_pct) == resize_or_crop
        else:
            fits = abs(card.crop_pct - resize_or_crop) < 1e-3
        return fits and interpolation == card.interpolation

    assert any(same(v) for v in views), (card.crop_pct, card.interpolation, views)


def test_a_model_without_weights_has_its_cards_view():
    small = archlab.create_model("resnet18", num_classes=10, in_chans=1, small_input=True)
    cfg = small.pretrained_cfg
    assert cfg["input_size"] == (1, 32, 32) and cfg["num_classes"] == 10
    # RGB statistics on one channel: their mean, as the trainer folds them.
    assert cfg["mean"] == pytest.approx((np.mean(archlab.model_card("resnet18").mean),))
    assert cfg["crop_pct"] == 1.0 and "classes" not in cfg   # 32 px images are seen whole


# --------------------------------------------------------------------------------------
# A trained run's preprocessing, wherever its weights go
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    recipe = Recipe(epochs=1, batch_size=64, lr=0.2, model_kwargs=TINY, threads=1,
                    progress=False, image_size=16)
    return fit("resnet20", "digits", recipe, run_dir=root / "run", verbose=False)


@pytest.fixture(scope="module")
def run(fitted):
    return fitted.run_dir


def test_a_run_records_its_preprocessing_and_load_trained_exposes_it(run, fitted):
    model, info = load_trained(run)
    assert fitted.model.pretrained_cfg == model.pretrained_cfg   # fit's model carries it too
    state = json.loads((run / "checkpoint.json").read_text())
    pre = state["preprocess"]
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (1, 16, 16)
    assert cfg["mean"] == pytest.approx(pre["mean"]) and cfg["std"] == pytest.approx(pre["std"])
    assert cfg["crop_pct"] == pre["crop_pct"] and cfg["interpolation"] == "bilinear"
    assert cfg["classes"] == state["classes"] and cfg["num_classes"] == 10
    # The digits' own statistics, not the card's CIFAR ones.
    assert cfg["mean"] != pytest.approx(model.card.mean[:1])
    _, meta = read_state_dict(run / "model.safetensors")
    assert json.loads(meta["pretrained_cfg"])["mean"] == pytest.approx(pre["mean"])
    again = archlab.create_model("resnet20", num_classes=10, in_chans=1, **TINY,
                                 pretrained=str(run / "model.safetensors"))
    assert again.pretrained_cfg == cfg


def test_archlab_convert_keeps_the_runs_preprocessing(run, tmp_path):
    out, name, _ = archlab.convert_file(run / "model.safetensors", tmp_path / "c.safetensors")
    _, meta = read_state_dict(out)
    recorded = json.loads(meta["pretrained_cfg"])
    cfg = load_trained(run)[0].pretrained_cfg
    assert name == "resnet20"
    assert recorded == {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    from archlab.explain.subject import load_subject

    subject = load_subject(out)
    assert subject.mean == pytest.approx(cfg["mean"]) and subject.classes == cfg["classes"]
    assert subject.image_size == 16


def test_predict_and_explain_feed_the_runs_preprocessing(run, tmp_path):
    model, _ = load_trained(run)
    img = Image.fromarray(skimage_data.camera()).resize((40, 30))
    img.save(tmp_path / "camera.png")
    top = predict(run, [tmp_path / "camera.png"], top_k=10, device="cpu",
                  precision="fp32")[0]["top"]
    probs = {t["index"]: t["prob"] for t in top}

    def softmax_with(cfg):
        with torch.no_grad():
            return model(archlab.transforms_for(cfg)(img)[None]).softmax(1)[0]

    ours = softmax_with(model.pretrained_cfg)
    assert max(abs(probs[i] - float(ours[i])) for i in range(10)) < 1e-5
    # The card's normalisation would have given other answers: the check can fail.
    card = {**model.pretrained_cfg, "mean": (0.5,), "std": (0.25,)}
    assert max(abs(probs[i] - float(softmax_with(card)[i])) for i in range(10)) > 1e-3
    from archlab.explain.subject import load_subject

    subject = load_subject(run)
    assert subject.mean == pytest.approx(model.pretrained_cfg["mean"])
    assert subject.std == pytest.approx(model.pretrained_cfg["std"])


def test_pretrainedmodels_bgr_weights_take_archlabs_rgb_view(photo, monkeypatch):
    """BN-Inception's port reads BGR 0..255 minus (104, 117, 128): downloaded by name, its
    weights and cfg are turned into an RGB model that gives the port's logits on archlab's
    own transforms (the download is replaced by the port with random weights)."""
    pretrainedmodels = pytest.importorskip("pretrainedmodels")
    from peers import calibrate_norms, randomize_norms

    torch.manual_seed(0)
    port = randomize_norms(pretrainedmodels.bninception(pretrained=None))
    port = calibrate_norms(port, torch.randn(4, 3, 224, 224) * 60).eval()
    monkeypatch.setattr(pretrainedmodels, "bninception", lambda **kw: port)
    model = archlab.create_model("bn_inception", pretrained="pretrainedmodels:").eval()
    cfg = model.pretrained_cfg
    assert cfg["mean"] == pytest.approx([128 / 255, 117 / 255, 104 / 255])
    assert cfg["std"] == pytest.approx([1 / 255] * 3) and cfg["input_size"] == (3, 224, 224)

    ours = archlab.transforms_for(model)(photo)                 # RGB, normalised by the cfg
    from torchvision.transforms import v2

    port_view = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224),
                            v2.PILToTensor()])
    rgb_255 = port_view(photo).float()
    theirs = rgb_255.flip(0) - torch.tensor([104.0, 117.0, 128.0]).view(3, 1, 1)   # BGR
    with torch.no_grad():
        a, b = model(ours[None]), port(theirs[None])
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
