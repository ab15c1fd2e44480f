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
# archlab name -> create_model overrides that make it the peer's network.
OURS_KWARGS: dict[str, dict] = {
    # timm's MobileNet v1 uses ReLU6 like TF-slim's release; the paper (and our default) ReLU.
    "mobilenet_v1_100": dict(act="relu6"),
}


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

            peer = EfficientNet.from_name(name, **kwargs)
            # Its default swish is a custom autograd function whose float rounding differs
            # from x·sigmoid(x) by an ulp, which random deep nets amplify past 1e-5; the plain
            # form is the same function and matches ours bit for bit.
            peer.set_swish(memory_efficient=False)
            return peer
    raise ValueError(source)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm layer random statistics and affine parameters, and every all-zero or
    layer-scale parameter random values, so that a parity test also checks that running
    means, variances, scales, shifts and zero-initialised heads land in the right place
    (peers zero-initialise some of them, which would hide a swapped branch)."""
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
    for name, p in model.named_parameters():
        # Zero-initialised heads and tiny layer scales (ConvNeXt's 1e-6) would let a wrongly
        # mapped tensor pass unseen: make them random too.
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("gamma", "layer_scale"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.75)
        elif p.ndim >= 1 and not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@torch.no_grad()
def calibrate_norms(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every batch norm's running statistics to those of the batch `x`.

    Random running statistics make a deep network's output nearly independent of its
    input (the signal dies over dozens of blocks), so a parity test would compare little
    more than the heads; statistics measured on real activations keep every block alive.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly its statistics
    # Only the norms learn statistics; the model itself stays in eval (no auxiliary heads,
    # no dropout, no drop-path).
    was_training = model.training
    model.eval()
    for m in norms:
        m.train()
    model(x)
    model.train(was_training)
    for m, (momentum, training) in zip(norms, saved):
        m.momentum = momentum
        m.train(training)
    return model


def logits_close(ours: torch.Tensor, theirs: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(1.0, theirs.abs().max().item())
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol * scale)
