"""ConvNeXt: what the generic tests do not see.

The peers initialise layer scale to 1e-6, so with their own weights every block is nearly
the identity and a parity test would not notice a broken block; here the layer scales are
random. Also: layer-scale init, stochastic depth (a hand computation per sample), the
small-input stem.
"""
from __future__ import annotations

import pytest
import torch

import archlab
from archlab.models.weights import load_state_dict
from archlab.models.convnext import ConvNeXtBlock
from peers import build_peer, logits_close, randomize_norms


@torch.no_grad()
def _random_layer_scales(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith(("layer_scale", "gamma")):
            p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return randomize_norms(model, seed)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_logits_equal_peer_with_live_blocks(source):
    torch.manual_seed(0)
    peer = _random_layer_scales(build_peer(source, "convnext_tiny")).eval()
    model = archlab.create_model("convnext_tiny").eval()
    load_state_dict(model, peer.state_dict(), source)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits_close(model(x), peer(x))
        # The blocks matter: with them switched off the logits change.
        for block in model.modules():
            if isinstance(block, ConvNeXtBlock):
                block.layer_scale.zero_()
        assert not torch.allclose(model(x), peer(x), atol=1e-3)


def test_layer_scale_init():
    model = archlab.create_model("convnext_tiny")
    scales = [b.layer_scale for b in model.modules() if isinstance(b, ConvNeXtBlock)]
    assert len(scales) == 18
    assert all(torch.equal(s, torch.full_like(s, 1e-6)) for s in scales)
    assert [s.numel() for s in scales[:3]] == [96] * 3
    with torch.device("meta"):
        no_scale = archlab.create_model("convnext_tiny", layer_scale_init=0)
    assert all(b.layer_scale is None for b in no_scale.modules()
               if isinstance(b, ConvNeXtBlock))


def test_stochastic_depth_rates_rise_linearly():
    with torch.device("meta"):
        model = archlab.create_model("convnext_small")
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, "drop_prob") else 0.0
             for b in model.modules() if isinstance(b, ConvNeXtBlock)]
    assert len(rates) == 36 and rates[0] == 0.0
    assert rates[-1] == pytest.approx(0.4)
    assert rates[18] == pytest.approx(0.4 * 18 / 35)


def test_stochastic_depth_only_in_training():
    torch.manual_seed(0)
    block = ConvNeXtBlock(8, drop_path=0.5, layer_scale_init=1.0)
    x = torch.randn(64, 8, 5, 5)
    with torch.no_grad():
        block.eval()
        full = block(x)
        block.train()
        out = block(x)
    branch = full - x
    # Per sample: the branch is dropped (output = input) or kept and scaled by 1 / (1 - p).
    dropped = torch.isclose(out, x, atol=1e-6).flatten(1).all(1)
    kept = torch.isclose(out, x + 2 * branch, atol=1e-5).flatten(1).all(1)
    assert bool((dropped | kept).all())
    assert 10 < int(dropped.sum()) < 54  # about half of 64
    block.eval()
    with torch.no_grad():
        assert torch.equal(block(x), full)


def test_small_input_stem_keeps_resolution():
    model = archlab.create_model("convnext_tiny", small_input=True, num_classes=10).eval()
    with torch.no_grad():
        _, stages = model.forward_intermediates(torch.randn(1, 3, 32, 32))
    assert [t.shape[-1] for t in stages] == [32, 16, 8, 4]
    assert model.min_input_size == 8
    assert archlab.create_model("convnext_tiny").min_input_size == 32
