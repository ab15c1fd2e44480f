"""The contract every registered model keeps, checked for all of them.

Counts against REFERENCE.md and against the peer built in the test; logits against the peer
whose state dict was converted; forward and backward at a small size; the model contract.
"""
from __future__ import annotations

import pytest
import torch

import archlab
from archlab.models.weights import load_state_dict
from peers import (OURS_KWARGS, PEER_INPUT_SIZE, build_peer, calibrate_norms, count_params,
                   logits_close, randomize_norms)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL = archlab.list_models()
WITH_PEERS = [(n, src) for n in ALL for src in archlab.model_card(n).peers]


def _reference_params(name: str) -> int:
    card = archlab.model_card(name)
    if card.params:
        return card.params
    with torch.device("meta"):
        return count_params(archlab.create_model(name))


# Logits parity builds two full models with random weights on the CPU. A family's scaled
# variants share every line of code and every key-map rule, so the logits are compared for
# every variant up to 30M parameters and, above that, for the smallest variant of each
# (family, peer) pair; every variant's count and key layout are still checked on meta.
PARITY_ALL_UP_TO = 30_000_000
_smallest: dict[tuple[str, str], tuple[int, str]] = {}
for _name, _src in WITH_PEERS:
    _key = (archlab.model_card(_name).family, _src)
    _smallest[_key] = min(_smallest.get(_key, (1 << 62, "")), (_reference_params(_name), _name))
# Variants whose key map differs from their smallest sibling's: batch norm shifts VGG's
# torchvision indices; Inception-ResNet-v2 shares a paper, not a layout, with Inception-v4.
PARITY_ALSO = {"vgg11_bn", "inception_resnet_v2"}
PARITY = [(n, src) for n, src in WITH_PEERS
          if _reference_params(n) <= PARITY_ALL_UP_TO or n in PARITY_ALSO
          or _smallest[(archlab.model_card(n).family, src)][1] == n]


def _meta_model(name: str, **kw):
    with torch.device("meta"):
        return archlab.create_model(name, **{**OURS_KWARGS.get(name, {}), **kw})


@pytest.mark.parametrize("name", ALL)
def test_card_is_complete(name):
    card = archlab.model_card(name)
    assert card.paper and card.year >= 1989 and card.family
    assert len(card.key_idea) > 40, "the key idea is a sentence or two for a student"
    assert len(card.mean) == len(card.std) == 3
    assert card.input_size[0] == 3 and card.input_size[1] >= 28


@pytest.mark.parametrize("name", [n for n in ALL if archlab.model_card(n).params])
def test_reference_parameter_count(name):
    assert count_params(_meta_model(name)) == archlab.model_card(name).params


@pytest.mark.parametrize("name,source", WITH_PEERS)
def test_count_equals_peer_and_its_checkpoint_is_recognised(name, source):
    from archlab.models.weights import detect_source

    peer = build_peer(source, archlab.model_card(name).peers[source], device="meta")
    model = _meta_model(name)
    assert count_params(model) == count_params(peer)
    assert detect_source(model, peer.state_dict()) == source


def _parity_size(model) -> int:
    fixed = getattr(model, "img_size", None)
    if fixed:
        return fixed if isinstance(fixed, int) else fixed[0]
    return max(model.min_input_size, 64)


@pytest.mark.parametrize("name,source", PARITY)
def test_logits_equal_peer_after_conversion(name, source):
    card = archlab.model_card(name)
    meta = _meta_model(name)
    torch.manual_seed(0)
    size = PEER_INPUT_SIZE.get((source, card.peers[source])) or _parity_size(meta)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    peer = randomize_norms(build_peer(source, card.peers[source]))
    peer = calibrate_norms(peer, torch.randn(4, 3, size, size)).eval()
    model = archlab.create_model(name, **OURS_KWARGS.get(name, {})).eval()
    report = load_state_dict(model, peer.state_dict(), source)
    assert report.source == source and not report.reset and not report.adapted
    with torch.no_grad():
        theirs = peer(x)
        # The comparison means something only if the logits depend on the image.
        assert (theirs[0] - theirs[1]).abs().max() > 1e-3 * theirs.abs().max()
        logits_close(model(x), theirs)


# Above this, a real forward and backward is initialisation and gradient memory more than
# arithmetic (seconds to minutes on 2 cores); the larger variants run it on the meta device,
# which checks every shape and that every parameter receives a gradient, without the
# numbers. As for the logits, the smallest variant of each family runs it for real whatever
# its size, so every family's code computes finite gradients once.
REAL_BACKWARD_UP_TO = 30_000_000
_smallest_of_family: dict[str, tuple[int, str]] = {}
for _name in ALL:
    _family = archlab.model_card(_name).family
    _smallest_of_family[_family] = min(_smallest_of_family.get(_family, (1 << 62, "")),
                                       (_reference_params(_name), _name))
# A thousand layers: seconds each on the CPU, for the blocks resnet110 and preact_resnet164
# already run.
DEPTH_GIANTS = {"resnet1202", "preact_resnet1001"}
REAL_BACKWARD = ({n for n in ALL if _reference_params(n) <= REAL_BACKWARD_UP_TO}
                 | {name for _, name in _smallest_of_family.values()}) - DEPTH_GIANTS


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_small_input_grayscale(name):
    card = archlab.model_card(name)
    torch.manual_seed(0)
    device = "cpu" if name in REAL_BACKWARD else "meta"
    with torch.device(device):
        model = archlab.create_model(name, num_classes=10, in_chans=1, small_input=True)
    size = card.small_input_size
    model.train()
    out = model(torch.randn(2, 1, size, size, device=device))
    # In training, auxiliary (GoogLeNet, Inception) and distillation (DeiT) heads come too.
    outs = out if isinstance(out, tuple) else (out,)
    assert outs[0].shape == (2, 10)
    sum(o.float().pow(2).mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter takes part in the loss"
    if device == "cpu":
        assert all(torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size, device=device)).shape == (1, 10)


@pytest.mark.parametrize("name", ALL)
def test_contract_at_default_size(name):
    """Shapes at the card's resolution, on the meta device: features, head, intermediates."""
    card = archlab.model_card(name)
    model = _meta_model(name).eval()
    x = torch.empty(2, *card.input_size, device="meta")
    features, stages = model.forward_intermediates(x)
    assert len(stages) == len(model.feature_info) >= 1
    for info, t in zip(model.feature_info, stages):
        assert t.shape[1] == info["num_chs"] or t.shape[-1] == info["num_chs"], info
        if t.ndim == 4:
            # Padded networks land on input/stride; unpadded ones (LeNet, Inception v3) lose
            # a border, so the stride is an upper bound on the map's size.
            assert t.shape[-1] <= card.input_size[-1] / info["reduction"] + 1, info
    assert model.forward_head(features).shape == (2, 1000)
    hidden = getattr(model, "head_hidden_size", model.num_features)
    assert model.forward_head(features, pre_logits=True).shape[-1] == hidden
    with torch.device("meta"):
        model.reset_classifier(7)
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", ALL)
def test_too_small_input_names_the_minimum(name):
    model = _meta_model(name).eval()  # batch norm in training refuses a 1x1 map of batch 1
    m = model.min_input_size
    with torch.no_grad():
        model(torch.empty(1, 3, m, m, device="meta"))  # the minimum itself runs
    if m > 1:
        with pytest.raises(ValueError, match=f"at least {m}x{m}"):
            model(torch.empty(1, 3, m - 1, m - 1, device="meta"))
