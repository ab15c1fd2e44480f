"""What the parity tests share: the peers (archlab.models.peers builds them), counts, random
norm statistics and the tolerance of equal logits."""
from __future__ import annotations

import torch
from torch import nn

from archlab.models.peers import OURS_KWARGS, PEER_INPUT_SIZE, build_peer  # noqa: F401


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
