"""Model kwargs given as strings (a CLI's `--set "model_kwargs={act: tanh}"`, a protocol):
every family that takes an activation resolves its name through the one table in
models/layers.py, and refuses an unknown name with the list of known ones."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from archlab.models import create_model, list_families, list_models
from archlab.models.layers import ACTIVATIONS, ScaledTanh, get_act

# family -> its smallest variant (small_input=True, 10 classes) and its activation argument.
WITH_ACT = {
    "alexnet": ("alexnet", "act"),
    "bn_inception": ("bn_inception", "act"),
    "convnext": ("convnext_tiny", "act"),
    "deit": ("deit_tiny_distilled_patch4_32", "act"),
    "efficientnet": ("efficientnet_lite0", "act"),
    "inception_v4": ("inception_v4", "act"),
    "lenet": ("lenet5_original", "act"),
    "mobilenet": ("mobilenet_v1_025", "act"),
    "regnet": ("regnetx_002", "act"),
    "resnet": ("plain20", "act"),
    "vgg": ("vgg11", "act"),
    "vit": ("vit_tiny_patch4_32", "act"),
    "xception": ("xception", "act"),
}
# Families without an activation argument, and why.
WITHOUT_ACT = {
    "googlenet": "its Inception modules' ReLUs are built by a dozen branch helpers that take "
                 "no activation; the family has never had an `act` argument",
    "inception": "Inception v3 shares GoogLeNet's branch helpers (no activation argument); "
                 "its `norm` choice is not an activation",
}


def test_every_family_is_listed_here():
    assert set(WITH_ACT) | set(WITHOUT_ACT) == set(list_families())
    assert not set(WITH_ACT) & set(WITHOUT_ACT)


@pytest.mark.parametrize("family", sorted(WITH_ACT))
def test_activation_by_name_builds_runs_and_is_used(family):
    name, arg = WITH_ACT[family]
    torch.manual_seed(0)
    model = create_model(name, small_input=True, num_classes=10, **{arg: "tanh"}).eval()
    tanhs = [m for m in model.modules() if isinstance(m, nn.Tanh)]
    assert tanhs, f"{name} built with {arg}='tanh' holds no Tanh"
    calls = []
    for m in tanhs:
        m.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert calls, f"{name}'s Tanh modules never ran"


@pytest.mark.parametrize("family", sorted(WITH_ACT))
def test_unknown_activation_names_the_known_ones(family):
    name, arg = WITH_ACT[family]
    with pytest.raises(ValueError, match=r"unknown activation 'nope'; choose one of .*tanh"):
        create_model(name, small_input=True, num_classes=10, **{arg: "nope"})


@pytest.mark.parametrize("family", sorted(WITHOUT_ACT))
def test_families_without_an_activation_refuse_it(family):
    with pytest.raises(TypeError, match="act"):
        create_model(list_models(family=family)[0], small_input=True, num_classes=10,
                     act="tanh")


def test_the_table_holds_the_names_used_across_families():
    for n in ("relu", "relu6", "gelu", "silu", "swish", "tanh", "sigmoid", "hardswish",
              "leaky_relu", "elu", "identity", "scaled_tanh"):
        assert n in ACTIVATIONS
    assert isinstance(get_act("scaled_tanh"), ScaledTanh)
    assert isinstance(get_act("Tanh"), nn.Tanh)  # names are case-insensitive
    assert isinstance(get_act(nn.Tanh), nn.Tanh)  # a class still works
    assert isinstance(get_act(None), nn.Identity)
    assert get_act("relu", inplace=True).inplace and not get_act("relu").inplace
    with pytest.raises(ValueError, match="nn.Module class"):
        get_act(42)
