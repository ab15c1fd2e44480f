"""Staged deepening (VGG 1409.1556, section 3.1): the copied layers equal the source, the
others are untouched, VGG's rule picks A's first four convolutions and the three fully
connected layers, ResNet blocks are copied block by block, mismatches are reported."""
from __future__ import annotations

import pytest
import torch

from archlab import create_model
from archlab.cli import main
from archlab.train import Recipe, fit
from archlab.train.deepen import deepen
from archlab.train import Trainer

NARROW = {"widths": [8, 16, 32], "stem_width": 8}


def layer_tensors(model, layer):
    return {k: v for k, v in model.state_dict().items() if k.rpartition(".")[0] == layer}


def check_copied_and_untouched(source, before, after, report):
    src = source.state_dict()
    for layer in report.copied:
        for key, value in layer_tensors(after, layer).items():
            assert torch.equal(value, src[key]), key
    for layer in report.random:
        for key, value in layer_tensors(after, layer).items():
            assert torch.equal(value, before[key]), key
    assert set(report.copied).isdisjoint(report.random)


@pytest.mark.parametrize("bn", [False, True])
def test_vgg_a_to_d_copies_the_first_four_convs_and_the_classifier(bn):
    torch.manual_seed(0)
    suffix = "_bn" if bn else ""
    a = create_model(f"vgg11{suffix}", num_classes=10, small_input=True)
    d = create_model(f"vgg16{suffix}", num_classes=10, small_input=True)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    _, report = deepen(a, d)
    assert report.rule == "vgg"
    convs = ["features.conv1_1", "features.conv2_1", "features.conv3_1", "features.conv3_2"]
    bns = [c.replace("conv", "bn") for c in convs] if bn else []
    fcs = ["classifier.fc6", "classifier.fc7", "classifier.fc8"]
    assert sorted(report.copied) == sorted(convs + bns + fcs)
    assert "features.conv1_2" in report.random and "features.conv4_1" in report.random
    check_copied_and_untouched(a, before, d, report)
    # The copy changed D: its conv1_1 was D's own random draw before.
    assert not torch.equal(d.features.conv1_1.weight, before["features.conv1_1.weight"])
    assert report.copied_params == sum(
        p.numel() for n, p in a.named_parameters()
        if n.rpartition(".")[0] in report.copied)


def test_vgg_rule_all_copies_every_layer_of_a():
    torch.manual_seed(0)
    a = create_model("vgg11", num_classes=10, small_input=True)
    e = create_model("vgg19", num_classes=10, small_input=True)
    before = {k: v.clone() for k, v in e.state_dict().items()}
    _, report = deepen(a, e, rule="all")
    assert {"features.conv4_2", "features.conv5_2", "features.conv5_1"} <= set(report.copied)
    assert len(report.copied) == 8 + 3                      # all of A's 11 weight layers
    assert "features.conv5_4" in report.random
    check_copied_and_untouched(a, before, e, report)


def test_resnet_blocks_copied_block_by_block_start_as_the_shallow_function():
    torch.manual_seed(0)
    r20 = create_model("resnet20", num_classes=10, in_chans=1, **NARROW)
    with torch.no_grad():                                   # as if trained: nothing trivial
        for m in r20.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    r32 = create_model("resnet32", num_classes=10, in_chans=1, zero_init_last=True, **NARROW)
    before = {k: v.clone() for k, v in r32.state_dict().items()}
    _, report = deepen(r20, r32)
    assert report.rule == "all"
    for s in (1, 2, 3):
        for j in range(3):
            assert f"layer{s}.{j}.conv1" in report.copied and f"layer{s}.{j}.bn2" in report.copied
        for j in (3, 4):
            assert f"layer{s}.{j}.conv1" in report.random
    assert {"conv1", "bn1", "head.fc"} <= set(report.copied)
    check_copied_and_untouched(r20, before, r32, report)
    # The extra blocks start as identities (zero-initialised last norm): same function.
    x = torch.randn(4, 1, 16, 16)
    torch.testing.assert_close(r32.eval()(x), r20.eval()(x))


def test_mismatches_are_reported_and_left_at_init():
    torch.manual_seed(0)
    a = create_model("vgg11", num_classes=10, small_input=True)
    d = create_model("vgg16", num_classes=100, small_input=True)
    before = d.classifier.fc8.weight.clone()
    _, report = deepen(a, d)
    assert "classifier.fc8" not in report.copied and "classifier.fc8" in report.random
    [(layer, why)] = report.mismatched
    assert layer == "classifier.fc8" and "(10, 512) -> (100, 512)" in why
    assert torch.equal(d.classifier.fc8.weight, before)
    assert any("mismatch: classifier.fc8" in line for line in report.summary())


def test_other_families_are_refused_by_name():
    r20 = create_model("resnet20", num_classes=10, **NARROW)
    vgg = create_model("vgg11", num_classes=10, small_input=True)
    with pytest.raises(ValueError, match="no layer of .* fits"):
        deepen(r20, vgg)
    with pytest.raises(ValueError, match="rule 'vgg'"):
        deepen(r20, create_model("resnet32", num_classes=10, **NARROW), rule="vgg")
    with pytest.raises(ValueError, match="rule must be"):
        deepen(r20, vgg, rule="paper")


def test_init_from_a_run_in_the_trainer_and_the_cli(tmp_path, capsys):
    recipe = Recipe(epochs=1, batch_size=64, lr=0.1, model_kwargs=NARROW, threads=1,
                    progress=False, image_size=16)
    shallow = tmp_path / "r20"
    fit("resnet20", "digits", recipe, run_dir=shallow, verbose=False)
    from archlab.train.checkpoint import read_model

    trained = read_model(shallow)[0]
    trainer = Trainer("resnet32", "digits", recipe.replace(init_from=str(shallow)),
                      run_dir=tmp_path / "r32", verbose=False)
    state = trainer.model.state_dict()
    for key in ("conv1.weight", "layer2.2.conv2.weight", "layer3.0.bn1.running_var",
                "head.fc.weight"):
        assert torch.equal(state[key], trained[key]), key
    log = (tmp_path / "r32" / "run.log").read_text()
    assert "layers copied" in log and "at init: layer1.3" in log
    # The CLI: archlab train --model resnet32 --init-from RUN_DIR
    assert main(["train", "--model", "resnet32", "--data", "digits", "--init-from",
                 str(shallow), "--epochs", "1", "--image-size", "16", "--threads", "1",
                 "--set", "model_kwargs={widths: [8,16,32], stem_width: 8}",
                 "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    assert "initialised from" in capsys.readouterr().out
    with pytest.raises(ValueError, match="init_from .* pretrained"):
        Recipe(init_from="x", pretrained="y")
