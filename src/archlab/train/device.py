"""Where a run computes, and the switches the device decides: bf16 autocast, channels_last
and torch.compile are on for CUDA and off elsewhere unless the recipe says otherwise (the
CPU gains nothing from them and bf16 there is slow)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is CUDA, else Apple's MPS, else the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch sees no CUDA GPU; use "
                           "--device cpu")
    return device


def auto_amp(device: torch.device, amp: bool | None = None) -> bool:
    """bf16 autocast: as asked, else on for a CUDA device that supports bf16."""
    if amp is not None:
        return amp
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class Switches:
    """The speed switches of a run, each as the recipe set it or as the device decides."""

    amp: bool
    channels_last: bool
    compile: bool

    @classmethod
    def for_device(cls, device: torch.device, amp: bool | None = None,
                   channels_last: bool | None = None, compile: bool | None = None
                   ) -> "Switches":
        cuda = device.type == "cuda"
        return cls(auto_amp(device, amp),
                   channels_last if channels_last is not None else cuda,
                   compile if compile is not None else cuda)

    def names(self) -> list[str]:
        """The switches that are on, as the run log names them."""
        return [name for name, on in (("bf16", self.amp), ("channels_last", self.channels_last),
                                      ("compiled", self.compile)) if on]
