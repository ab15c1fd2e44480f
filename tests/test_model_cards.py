"""A card states no cost that archlab's own counts contradict.

Every number a card's key idea gives about parameters, weights or cost (a count, "N M", "N×
fewer", "N% more") is found by a pattern below and must have a check here that computes it
from archlab's models and formulas; a number quoted from a paper is marked as the paper's
("the paper says ...") and is then not archlab's to check. A new card with an unchecked cost
claim fails `test_every_cost_claim_is_checked`.
"""
from __future__ import annotations

import re

import pytest
import torch

import archlab
from archlab.analysis.calc import separable_cost, stacked_convs
from archlab.analysis.profile import costs_of
from peers import count_params

# A number, not the tail of a name (JFT-300M, ResNet-50).
_NUM = r"(?<![\w-])\d+(?:,\d{3})*(?:\.\d+)?"
# What a cost claim looks like in a sentence.
COST_CLAIM = re.compile(
    rf"{_NUM}\s+(?:weights\s+)?instead\s+of\s+{_NUM}"
    rf"|{_NUM}\s*(?:-\s*\d+\s*)?×\s*(?:fewer|cheaper|more|less|smaller|larger)"
    rf"|{_NUM}\s*M\b"
    rf"|{_NUM}\s+(?:trainable\s+)?(?:parameters|weights)"
    rf"|{_NUM}\s*%\s+more\s+(?:computation|parameters)")

# A sentence (up to its end) that quotes the paper: its numbers are the paper's.
QUOTED = re.compile(r"the paper says[^.;]*")


def _count(name: str, **kw) -> int:
    with torch.device("meta"):
        return count_params(archlab.create_model(name, **kw))


def _macs(name: str) -> int:
    with torch.device("meta"):
        model = archlab.create_model(name)
    return costs_of(model, model.card.input_size)[1]


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def _googlenet() -> list[str]:
    ours, alexnet = _count("googlenet", aux_logits=False), _count("alexnet")
    return [_millions(ours), f"{alexnet / ours:.1f}× fewer", _millions(alexnet)]


def _senet() -> list[str]:
    extra_macs = _macs("seresnet50") / _macs("resnet50") - 1
    extra_params = _count("seresnet50") / _count("resnet50") - 1
    assert 0 < extra_macs < 0.01
    return [f"{round(extra_params * 100, -1):.0f}% more parameters", "1% more computation"]


def _separable() -> list[str]:
    # 1/N + 1/9 for the pointwise widths MobileNet v1 uses (64 to 1024 channels).
    ratios = [1 / separable_cost(c, c, 3)["ratio"] for c in (64, 128, 256, 512, 1024)]
    return [f"{round(min(ratios))}-{round(max(ratios))}× cheaper"]


def _vgg() -> list[str]:
    two, three = stacked_convs(3, 2), stacked_convs(3, 3)
    return [f"{two['stack_weights']} weights instead of {two['single_weights']}",
            f"{three['stack_weights']} instead of {three['single_weights']}"]


# name of the card's author variant -> what its claims must read, computed.
CHECKS = {
    "googlenet": _googlenet,
    "lenet5": lambda: [f"{_count('lenet5', num_classes=10, in_chans=1):,} parameters"],
    # Up to F6: the 10-class output layer (84·10 weights and 10 biases) is the paper's RBF.
    "lenet5_original": lambda: [
        f"{_count('lenet5_original', num_classes=10, in_chans=1) - 850:,} trainable parameters"],
    "seresnet50": _senet,
    "mobilenet_v1_100": _separable,
    "vgg11": _vgg,
    "vgg_d": lambda: [_vgg()[1].replace(" instead", " weights instead")],
}


def _claims(text: str) -> list[str]:
    text = QUOTED.sub("", text)
    return [re.sub(r"\s+", " ", m.group(0)) for m in COST_CLAIM.finditer(text)]


def _cards_by_idea() -> dict[str, list[str]]:
    by_idea: dict[str, list[str]] = {}
    for name in archlab.list_models():
        by_idea.setdefault(archlab.model_card(name).key_idea, []).append(name)
    return by_idea


def test_every_cost_claim_is_checked():
    unchecked = []
    for idea, names in _cards_by_idea().items():
        if _claims(idea) and not set(names) & set(CHECKS):
            unchecked.append(f"{names[0]}: {_claims(idea)}")
    assert not unchecked, "cost claims with no check in tests/test_model_cards.py: " \
        + "; ".join(unchecked)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_card_claims_equal_archlabs_counts(name):
    claims = _claims(archlab.model_card(name).key_idea)
    computed = CHECKS[name]()
    assert claims, f"{name}'s card no longer states a cost: drop its check"
    assert sorted(claims) == sorted(computed), (
        f"{name}'s card says {claims}; archlab's counts give {computed}")


def test_a_quoted_paper_number_is_not_a_claim():
    assert _claims("22 layers and, the paper says, 12× fewer parameters than AlexNet; ours "
                   "is 9.2× fewer") == ["9.2× fewer"]
