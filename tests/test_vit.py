"""ViT and DeiT: what the generic tests do not see.

Counts by the paper's formula, parity with torchvision and timm with *every* weight random
(torchvision zero-initialises its head, so the generic parity test cannot see the head or
anything that only changes logits through it), position embeddings resized for a new
resolution (against timm's resampling and DeiT's rule of keeping the class and
distillation tokens), the distilled model's two heads, and attention probabilities.
"""
from __future__ import annotations

import pytest
import torch

import archlab
from archlab.models.weights import load_state_dict, save_state_dict
from archlab.models.registry import model_config
from archlab.models.vit import VisionTransformer, resize_pos_embedding
from peers import count_params, logits_close, randomize_norms

SMALL = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, num_classes=10)


@torch.no_grad()
def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return randomize_norms(model, seed)


def _formula(name: str) -> int:
    """2010.11929 section 3.1, counted by hand: patch projection, class (and distillation)
    token, position embeddings, per block LN + qkv + proj + LN + MLP (12D² + 13D with a 4×
    MLP), final LN, one head per prefix token."""
    cfg = model_config(name)
    d, p, depth = cfg["embed_dim"], cfg["patch_size"], cfg["depth"]
    img = cfg.get("img_size", 224)
    prefix = 2 if cfg.get("distilled") else 1
    patches = (img // p) ** 2
    return (3 * p * p * d + d + prefix * d + (prefix + patches) * d
            + depth * (12 * d * d + 13 * d) + 2 * d + prefix * (d * 1000 + 1000))


@pytest.mark.parametrize("name", archlab.list_models("vit_*") + archlab.list_models("deit_*"))
def test_parameter_count_by_formula(name):
    with torch.device("meta"):
        model = archlab.create_model(name)
    assert count_params(model) == _formula(name)
    assert model.num_tokens == model.num_prefix_tokens + (model.img_size // model.patch_size) ** 2


# -- parity with every weight random ------------------------------------------------------


def test_logits_equal_torchvision_with_random_head():
    from torchvision.models.vision_transformer import VisionTransformer as TvViT

    torch.manual_seed(0)
    peer = _randomize(TvViT(image_size=32, patch_size=4, num_layers=2, num_heads=3,
                            hidden_dim=48, mlp_dim=192, num_classes=10)).eval()
    model = VisionTransformer(**SMALL).eval()
    report = load_state_dict(model, peer.state_dict(), "torchvision")
    assert not report.reset
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        theirs = peer(x)
        assert theirs.abs().max() > 0.1  # the random head is really there
        logits_close(model(x), theirs)


@pytest.mark.parametrize("distilled", [False, True])
def test_logits_equal_timm_with_random_weights(distilled):
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    torch.manual_seed(0)
    cls = VisionTransformerDistilled if distilled else TimmViT
    peer = _randomize(cls(**SMALL)).eval()
    model = VisionTransformer(**SMALL, distilled=distilled).eval()
    load_state_dict(model, peer.state_dict(), "timm")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits_close(model(x), peer(x))
    # Training mode: timm gives both heads when asked to train with distillation.
    if distilled:
        peer.set_distilled_training(True)
        peer.train(), model.train()
        with torch.no_grad():
            for ours, theirs in zip(model(x), peer(x)):
                logits_close(ours, theirs)


@pytest.mark.parametrize("class_token", [True, False])
def test_average_pooled_head_equals_timm(class_token):
    """global_pool='avg': the mean of the patch tokens, LayerNorm after the pooling (timm's
    fc_norm, no final norm); without the class token the position embeddings cover the
    patches only. Every weight random, so a head or norm in the wrong place shows."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    torch.manual_seed(0)
    peer = _randomize(TimmViT(**SMALL, global_pool="avg", class_token=class_token)).eval()
    model = VisionTransformer(**SMALL, global_pool="avg", class_token=class_token).eval()
    report = load_state_dict(model, peer.state_dict(), "timm")
    assert not report.reset
    assert model.num_prefix_tokens == int(class_token)
    assert model.pos_embedding.shape[1] == int(class_token) + 64
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits_close(model(x), peer(x))
        logits_close(model.forward_head(model.forward_features(x), pre_logits=True),
                     peer.forward_head(peer.forward_features(x), pre_logits=True))


@pytest.mark.parametrize("kwargs, message", [
    (dict(global_pool="max"), "'token'.*'avg'"),
    (dict(class_token=False), "keep class_token=True"),
    (dict(distilled=True, global_pool="avg"), "distilled DeiT"),
])
def test_head_options_that_cannot_work_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VisionTransformer(**{**SMALL, **kwargs})


# -- position embeddings at a new resolution ----------------------------------------------


def test_resize_to_the_same_grid_is_the_identity():
    pos = torch.randn(1, 2 + 14 * 14, 32)
    assert torch.equal(resize_pos_embedding(pos, (14, 14), num_prefix_tokens=2), pos)


def test_resize_keeps_prefix_tokens_and_matches_deit_bicubic():
    from timm.layers import resample_abs_pos_embed

    pos = torch.randn(1, 2 + 14 * 14, 32)
    ours = resize_pos_embedding(pos, (24, 24), num_prefix_tokens=2)
    assert ours.shape == (1, 2 + 24 * 24, 32)
    assert torch.equal(ours[:, :2], pos[:, :2])
    # DeiT's fine-tuning at 384 px: bicubic, align_corners=False, no antialiasing.
    theirs = resample_abs_pos_embed(pos, (24, 24), num_prefix_tokens=2, antialias=False)
    torch.testing.assert_close(ours, theirs)


def test_checkpoint_at_224_loads_into_384(tmp_path):
    torch.manual_seed(0)
    small = archlab.create_model("deit_tiny_distilled_patch16_224")
    path = save_state_dict(small.state_dict(), tmp_path / "deit_224.safetensors")
    big = archlab.create_model("deit_tiny_distilled_patch16_224", img_size=384, pretrained=path)
    assert big.img_size == 384 and big.card.input_size == (3, 384, 384)
    assert big.pos_embedding.shape == (1, 2 + 24 * 24, 192)
    before, after = small.pos_embedding.detach(), big.pos_embedding.detach()
    assert torch.equal(after[:, :2], before[:, :2])  # class and distillation tokens kept
    torch.testing.assert_close(after, resize_pos_embedding(before, (24, 24), 2))
    # Everything else is carried over untouched.
    for key, value in small.state_dict().items():
        if key != "pos_embedding":
            assert torch.equal(big.state_dict()[key], value), key
    big.eval()
    with torch.no_grad():
        assert big(torch.randn(1, 3, 384, 384)).shape == (1, 1000)
    # At the same size the checkpoint comes back bit for bit.
    same = archlab.create_model("deit_tiny_distilled_patch16_224", pretrained=path)
    assert all(torch.equal(same.state_dict()[k], v) for k, v in small.state_dict().items())


def test_peer_checkpoint_is_resized_too():
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    peer = _randomize(TimmViT(**SMALL))
    model = VisionTransformer(**{**SMALL, "img_size": 48})
    load_state_dict(model, peer.state_dict(), "timm")
    torch.testing.assert_close(model.pos_embedding.detach(),
                               resize_pos_embedding(peer.pos_embed.detach(), (12, 12)))


def test_other_input_size_runs_with_resized_embeddings():
    """A model built at 32 px runs a 48 px image exactly as a model built at 48 px that was
    given the 32 px weights: the stored embeddings are resized on the fly."""
    torch.manual_seed(0)
    model = _randomize(VisionTransformer(**SMALL)).eval()
    at_48 = VisionTransformer(**{**SMALL, "img_size": 48}).eval()
    load_state_dict(at_48, model.state_dict(), "archlab")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        logits_close(model(x), at_48(x))
        assert model(torch.randn(1, 3, 4, 4)).shape == (1, 10)  # one patch
    assert model.pos_embedding.shape == (1, 1 + 8 * 8, 48)   # stored at img_size


def test_small_input_switches_to_small_patches():
    with torch.device("meta"):
        model = archlab.create_model("vit_base_patch16_224", small_input=True, num_classes=10)
    assert (model.patch_size, model.img_size, model.num_tokens) == (4, 32, 1 + 64)
    assert model.card.input_size == (3, 32, 32)
    assert model.embed_dim == 768 and model.depth == 12  # width and depth kept


# -- DeiT's two heads ---------------------------------------------------------------------


def test_distilled_heads_train_and_eval():
    torch.manual_seed(0)
    model = _randomize(VisionTransformer(**SMALL, distilled=True))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        cls = tokens[:, 0] @ model.head.weight.T + model.head.bias
        dist = tokens[:, 1] @ model.head_dist.weight.T + model.head_dist.bias
        model.train()
        out = model(x)
        assert isinstance(out, tuple) and len(out) == 2
        torch.testing.assert_close(out[0], cls)
        torch.testing.assert_close(out[1], dist)
        assert not torch.allclose(out[0], out[1])
        model.eval()
        torch.testing.assert_close(model(x), (cls + dist) / 2)
    assert model.num_prefix_tokens == 2
    assert model.get_classifier() == (model.head, model.head_dist)
    model.reset_classifier(5)
    assert model.head.out_features == model.head_dist.out_features == 5


# -- attention ----------------------------------------------------------------------------


def test_attention_probabilities():
    torch.manual_seed(0)
    model = _randomize(VisionTransformer(**SMALL, distilled=True)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = model(x)
        assert all(b.attn.attention_probs is None for b in model.blocks)  # nothing stored
        maps = model.forward_attention(x)
        with model.keeping_attention():
            kept = model(x)
    assert not any(b.attn.keep_attention for b in model.blocks)  # switched back off
    torch.testing.assert_close(kept, plain, rtol=1e-5, atol=1e-5)
    tokens = 2 + 8 * 8
    assert len(maps) == model.depth
    for m in maps:
        assert m.shape == (2, model.num_heads, tokens, tokens)
        torch.testing.assert_close(m.sum(-1), torch.ones(2, model.num_heads, tokens))
    # The first layer's probabilities by hand: softmax(q kᵀ / sqrt(d)) of the first block.
    with torch.no_grad():
        h = model.patch_embed(x)
        h = torch.cat([model.class_token.expand(2, -1, -1), model.dist_token.expand(2, -1, -1),
                       h], 1) + model.pos_embedding
        attn = model.blocks[0].attn
        q, k, _ = attn.qkv(model.blocks[0].norm1(h)).reshape(
            2, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        by_hand = (q @ k.transpose(-2, -1) / attn.head_dim ** 0.5).softmax(-1)
    torch.testing.assert_close(maps[0], by_hand)


def test_intermediates_are_the_blocks():
    torch.manual_seed(0)
    model = _randomize(VisionTransformer(**SMALL)).eval()
    with torch.no_grad():
        features, blocks = model.forward_intermediates(torch.randn(2, 3, 32, 32))
    assert [i["module"] for i in model.feature_info] == ["blocks.0", "blocks.1"]
    assert all(t.shape == (2, 65, 48) for t in blocks)
    torch.testing.assert_close(model.norm(blocks[-1]), features)


# -- the kinds of position embedding (2010.11929 appendix D.4) ---------------------------

def _pos_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("pos_embedding"))


@pytest.mark.parametrize("distilled", [False, True])
def test_position_embedding_kinds_have_the_papers_parameter_counts(distilled):
    # SMALL: a 32 px image in 4x4 patches is an 8x8 grid, D = 48.
    counts = {kind: _pos_params(VisionTransformer(**SMALL, distilled=distilled,
                                                  pos_embedding=kind))
              for kind in ("learned", "learned_2d", "sincos", "none")}
    prefix = 1 + int(distilled)
    assert counts == {"learned": (64 + prefix) * 48,     # one D-vector per token
                      "learned_2d": (8 + 8) * 48 // 2,   # a D/2-vector per row and column
                      "sincos": 0, "none": 0}
    # Nothing else differs: the kinds change the position embeddings alone.
    totals = {kind: count_params(VisionTransformer(**SMALL, distilled=distilled,
                                                   pos_embedding=kind)) - n
              for kind, n in counts.items()}
    assert len(set(totals.values())) == 1


def test_learned_2d_concatenates_the_row_and_column_halves():
    model = _randomize(VisionTransformer(**SMALL, pos_embedding="learned_2d"))
    pos = model._pos_embedding_for((8, 8))
    assert pos.shape == (1, 1 + 64, 48) and torch.equal(pos[0, 0], torch.zeros(48))
    r, c = 2, 5
    torch.testing.assert_close(pos[0, 1 + r * 8 + c], torch.cat(
        [model.pos_embedding_rows[r], model.pos_embedding_cols[c]]))


def test_sincos_is_fixed_and_distinguishes_every_patch():
    from archlab.models.vit import sincos_pos_embedding

    pos = sincos_pos_embedding((8, 8), 48)
    assert pos.shape == (1, 64, 48)
    # Patch (0, 0): sin 0 = 0 and cos 0 = 1 on both axes.
    torch.testing.assert_close(pos[0, 0], torch.tensor(([0.0] * 12 + [1.0] * 12) * 2))
    # Patch (1, 0) differs from (0, 0) in its row half only.
    assert torch.equal(pos[0, 8, :24], pos[0, 0, :24]) and not torch.equal(pos[0, 8], pos[0, 0])
    assert torch.unique(pos[0], dim=0).shape[0] == 64
    model = VisionTransformer(**SMALL, pos_embedding="sincos")
    assert "pos_embedding_fixed" not in model.state_dict()   # recomputed, never stored
    with pytest.raises(ValueError, match="divisible by 4"):
        VisionTransformer(**{**SMALL, "embed_dim": 42, "num_heads": 3}, pos_embedding="sincos")


def test_without_position_embeddings_the_encoder_sees_a_bag_of_patches():
    # No embedding: permuting the patches leaves the class token's output unchanged; with
    # one, it changes.
    x = torch.randn(1, 3, 32, 32)
    blocks = x.reshape(1, 3, 8, 4, 8, 4).permute(0, 2, 4, 1, 3, 5).reshape(1, 64, 3, 4, 4)
    shuffled = blocks[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    y = shuffled.reshape(1, 8, 8, 3, 4, 4).permute(0, 3, 1, 4, 2, 5).reshape(1, 3, 32, 32)
    for kind, invariant in (("none", True), ("learned", False)):
        model = _randomize(VisionTransformer(**SMALL, pos_embedding=kind)).eval()
        with torch.no_grad():
            assert torch.allclose(model(x), model(y), atol=1e-5) == invariant, kind


@pytest.mark.parametrize("kind", ["learned_2d", "sincos", "none"])
def test_new_kinds_run_at_another_resolution_and_load_across_sizes(kind):
    torch.manual_seed(0)
    small = VisionTransformer(**SMALL, pos_embedding=kind).eval()
    with torch.no_grad():
        assert small(torch.randn(2, 3, 48, 48)).shape == (2, 10)   # a 12x12 grid on the fly
    big = VisionTransformer(**{**SMALL, "img_size": 48}, pos_embedding=kind)
    load_state_dict(big, small.state_dict(), "archlab")
    if kind == "learned_2d":
        from archlab.models.vit import resize_axis_embedding

        assert big.pos_embedding_rows.shape == (12, 24)
        torch.testing.assert_close(big.pos_embedding_cols.detach(), resize_axis_embedding(
            small.pos_embedding_cols.detach(), 12))
        # The resize keeps a table's values where the grids agree in size.
        assert torch.equal(resize_axis_embedding(small.pos_embedding_rows, 8),
                           small.pos_embedding_rows)


def test_an_unknown_position_embedding_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="pos_embedding='rope'.*learned, learned_2d, sincos"):
        VisionTransformer(**SMALL, pos_embedding="rope")
