"""The same architecture in a peer library (torchvision, timm, efficientnet-pytorch,
pretrainedmodels), built with random weights: what the parity tests compare logits with and
`archlab bench` times archlab against. The peers are optional: `pip install 'archlab[test]'`
brings them.

A family whose peer needs constructor arguments to be the same network as archlab's
registered variant names them in PEER_KWARGS; archlab-side overrides go in OURS_KWARGS.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from archlab.models.registry import model_card

SOURCES = ("torchvision", "timm", "efficientnet-pytorch", "pretrainedmodels")

# (source, peer name) -> kwargs for the peer's constructor.
PEER_KWARGS: dict[tuple[str, str], dict[str, Any]] = {
    ("torchvision", "googlenet"): dict(aux_logits=True, init_weights=True),
    ("torchvision", "inception_v3"): dict(aux_logits=True, init_weights=True),
    # timm's ViT-L/32 is the head-less ImageNet-21k backbone by default.
    ("timm", "vit_large_patch32_224"): dict(num_classes=1000),
    # efficientnet-pytorch pads statically for the image size it is built for (B1's 240 px
    # gives odd maps that 64 px does not); image_size=None is its dynamic 'same' padding,
    # equal to the static one at that size and to ours at every size.
    **{("efficientnet-pytorch", f"efficientnet-b{i}"): dict(image_size=None) for i in range(8)},
    # timm's efficientnet_b5..b7 and efficientnetv2_s/m keep PyTorch's batch-norm eps;
    # torchvision's (and TensorFlow's) use 1e-3.
    **{("timm", n): dict(bn_eps=1e-3) for n in (
        "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnetv2_s",
        "efficientnetv2_m")},
}
# (source, peer name) -> the only input side the peer runs at: the port of BN-Inception
# ends in a fixed 7×7 average pool.
PEER_INPUT_SIZE: dict[tuple[str, str], int] = {("pretrainedmodels", "bninception"): 224}
# archlab name -> create_model overrides that make it the peer's network.
OURS_KWARGS: dict[str, dict[str, Any]] = {
    # timm's MobileNet v1 uses ReLU6 like TF-slim's release; the paper (and our default) ReLU.
    "mobilenet_v1_100": dict(act="relu6"),
}


class _WidthArithmeticOnCpu(TorchFunctionMode):
    """torchvision's RegNets compute their stage widths with tensors (torch.arange,
    torch.tensor) and read them back with .tolist(), which a meta tensor cannot do. Inside
    torch.device("meta"), this sends those two factories to the CPU when a call names no
    device at all; layers always name one (device=None when unset), so every parameter and
    buffer still lands on the meta device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.arange, torch.tensor) and "device" not in kwargs:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def build_peer(source: str, name: str, device: str | torch.device = "cpu",
               **kwargs: Any) -> nn.Module:
    """The peer's network `name` from `source`, random weights; `kwargs` go to its
    constructor after PEER_KWARGS (a ViT's image size, a number of classes)."""
    kwargs = {**PEER_KWARGS.get((source, name), {}), **kwargs}
    try:
        with torch.device(device):
            if source == "torchvision":
                import torchvision

                on_meta = torch.device(device).type == "meta" and name.startswith("regnet")
                with _WidthArithmeticOnCpu() if on_meta else nullcontext():
                    return torchvision.models.get_model(name, weights=None, **kwargs)
            if source == "timm":
                import timm

                return timm.create_model(name, pretrained=False, **kwargs)
            if source == "efficientnet-pytorch":
                from efficientnet_pytorch import EfficientNet

                peer = EfficientNet.from_name(name, **kwargs)
                # Its default swish is a custom autograd function whose float rounding
                # differs from x·sigmoid(x) by an ulp, which random deep nets amplify past
                # 1e-5; the plain form is the same function and matches ours bit for bit.
                peer.set_swish(memory_efficient=False)
                return peer
            if source == "pretrainedmodels":
                import pretrainedmodels

                return pretrainedmodels.__dict__[name](pretrained=None, **kwargs)
    except ImportError as e:
        raise RuntimeError(f"comparing with {source} needs it installed ({e.name} is "
                           f"missing): pip install {source}") from None
    raise ValueError(f"unknown peer library {source!r}; choose one of {', '.join(SOURCES)}")


def peer_of(name: str, source: str) -> str:
    """The peer's name for archlab's registered `name`, with a clear error when it has none."""
    peers = model_card(name).peers
    if source not in peers:
        raise ValueError(f"{name} has no {source} counterpart; it has "
                         f"{', '.join(peers) or 'none'} (archlab model cards, `peers`)")
    return peers[source]
