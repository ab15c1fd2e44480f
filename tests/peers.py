"""Building the peers (torchvision, timm, efficientnet-pytorch) that archlab is checked against.

A family whose peer needs constructor arguments to be the same network as archlab's
registered variant names them in PEER_KWARGS; archlab-side overrides go in OURS_KWARGS.
"""
from __future__ import annotations

import torch
from torch import nn

# (source, peer name) -> kwargs for the peer's constructor.
PEER_KWARGS: dict[tuple[str, str], dict] = {
    ("torchvision", "googlenet"): dict(aux_logits=True, init_weights=True),
    ("torchvision", "inception_v3"): dict(aux_logits=True, init_weights=True),
}
# archlab name -> create_model overrides that make it the peer's network.
OURS_KWARGS: dict[str, dict] = {}


def build_peer(source: str, name: str, device: str | torch.device = "cpu") -> nn.Module:
    kwargs = PEER_KWARGS.get((source, name), {})
    with torch.device(device):
        if source == "torchvision":
            import torchvision

            return torchvision.models.get_model(name, weights=None, **kwargs)
        if source == "timm":
            import timm

            return timm.create_model(name, pretrained=False, **kwargs)
        if source == "efficientnet-pytorch":
            from efficientnet_pytorch import EfficientNet

            return EfficientNet.from_name(name, **kwargs)
    raise ValueError(source)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer random statistics and affine parameters, so that a parity test
    also checks that running means, variances, scales and shifts land in the right place
    (peers zero-initialise some scales, which would hide a swapped branch)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) or isinstance(
                m, (nn.LayerNorm, nn.GroupNorm)):
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
        elif hasattr(m, "gamma") and isinstance(getattr(m, "gamma"), torch.Tensor):
            m.gamma.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5 + 0.75)  # layer scale
    return model


def logits_close(ours: torch.Tensor, theirs: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(1.0, theirs.abs().max().item())
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol * scale)
