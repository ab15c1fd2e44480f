"""What a class looks like to the network: Simonyan et al.'s class-model images (1312.6034,
section 2 and figure 1).

Find the image I that maximises the class score S_c(I) - λ‖I‖², by gradient ascent on the
pixels with the weights fixed, from the mean image. The score is the one before the
softmax: maximising the probability can be done by pushing the other classes down,
maximising the score only by finding evidence for the class. The L2 term keeps the image
from growing without bound along the directions the score rises in.

Raw ascent finds high-frequency patterns that excite the network and look like nothing to
us. The usual regularisers of Yosinski et al. (1506.06579), which the course shows, make
them readable: the image is shifted by a few random pixels (jitter) before each step, so
that the ascent cannot rely on a pattern at one exact position, and every few steps it is
blurred a little, which damps the high frequencies that nothing in a photograph carries.
Pixels stay within the range an image can have. Each step moves by `lr` times the
gradient divided by its root mean square (in normalised units, the data's standard
deviation), so the step size does not depend on the scale of a network's scores.

Everything random comes from `seed`: the same parameters give the same image.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from archlab.explain.maps import class_scores
from archlab.explain.subject import ExplainError, Subject


@dataclass(frozen=True)
class AscentParams:
    """The gradient ascent of a class-model image."""

    steps: int = 200           # gradient steps
    lr: float = 0.1            # step, in normalised pixel units (RMS of the step)
    l2: float = 0.01           # λ of S_c(I) - λ‖I‖² (I normalised: zero is the mean image)
    jitter: int = 2            # random shift of up to this many pixels before each step
    blur_every: int = 4        # a Gaussian blur every this many steps (0: never)
    blur_sigma: float = 0.5    # its standard deviation, in pixels
    init_std: float = 0.1      # the start: the mean image plus this much Gaussian noise
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"steps": self.steps >= 1, "lr": self.lr > 0, "l2": self.l2 >= 0,
                  "jitter": self.jitter >= 0, "blur_every": self.blur_every >= 0,
                  "blur_sigma": self.blur_sigma > 0, "init_std": self.init_std >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            given = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ExplainError(f"class-model ascent: {given} out of range (steps >= 1, lr > 0, "
                               "blur_sigma > 0, the rest >= 0)")

    @classmethod
    def parse(cls, given: "AscentParams | dict[str, Any] | str | None") -> "AscentParams":
        """Parameters from an AscentParams, a dict, or 'steps=400,l2=0.02' (the CLI's)."""
        if given is None or isinstance(given, AscentParams):
            return given or cls()
        if isinstance(given, str):
            pairs = [p.split("=", 1) for p in given.replace(" ", ",").split(",") if p]
            if any(len(p) != 2 for p in pairs):
                raise ExplainError(f"class-model ascent {given!r}: give KEY=VALUE pairs, "
                                   "e.g. steps=400,l2=0.02")
            given = dict(pairs)
        types = {f.name: f.type for f in fields(cls)}
        unknown = [k for k in given if k not in types]
        if unknown:
            raise ExplainError(f"class-model ascent has no parameter {', '.join(unknown)}; "
                               f"it has {', '.join(types)}")
        try:
            return cls(**{k: (int if types[k] == "int" else float)(v) for k, v in given.items()})
        except (TypeError, ValueError) as e:
            raise ExplainError(f"class-model ascent {given}: {e}") from None


@dataclass
class ClassModel:
    """The image found for one class, and its scores."""

    target: int
    target_name: str
    image: np.ndarray          # (H, W, C) in [0, 1]: the pixels the model was given
    tensor: torch.Tensor       # (1, C, H, W), normalised
    logits: np.ndarray         # (classes,): the scores of the final image, unshifted
    start_score: float         # the class's score at the start
    history: np.ndarray        # (steps,): the class's score at each step, on the shifted image
    params: dict[str, Any]

    @property
    def score(self) -> float:
        return float(self.logits[self.target])

    @property
    def runner_up(self) -> int:
        """The class with the highest score but the target's."""
        others = self.logits.copy()
        others[self.target] = -np.inf
        return int(others.argmax())


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of each channel, the border reflected."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"),
                 g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"),
                    g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _pixel_range(subject: Subject, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values of black and white, per channel: the range of an image."""
    zero = torch.zeros(1, subject.in_chans, 1, 1, device=device)
    return subject.normalise(zero), subject.normalise(zero + 1)


def class_model_images(subject: Subject, classes: Sequence[int | str],
                       params: AscentParams | dict[str, Any] | str | None = None
                       ) -> list[ClassModel]:
    """One class-model image per class in `classes` (indices or names), all optimised in one
    batch; each is the one it would be alone, to rounding (the shifts are shared)."""
    p = AscentParams.parse(params)
    if not classes:
        raise ExplainError("class-model images need at least one class (classes=, --classes)")
    targets = torch.tensor([subject.class_index(c) for c in classes], device=subject.device)
    forward = class_scores(subject.model)
    n, size = len(targets), subject.image_size
    g = torch.Generator().manual_seed(p.seed)
    noise = torch.randn(1, subject.in_chans, size, size, generator=g) * p.init_std
    x = noise.expand(n, -1, -1, -1).clone().to(subject.device)
    low, high = _pixel_range(subject, x.device)
    x = torch.max(torch.min(x, high), low)
    with torch.no_grad():
        start = forward(x).float().gather(1, targets[:, None])[:, 0]
    history = torch.zeros(p.steps, n)
    for step in range(p.steps):
        dy, dx = (torch.randint(-p.jitter, p.jitter + 1, (2,), generator=g).tolist()
                  if p.jitter else (0, 0))
        x.requires_grad_(True)
        scores = forward(torch.roll(x, (dy, dx), (2, 3))).float()
        score = scores.gather(1, targets[:, None])[:, 0]
        objective = score - p.l2 * x.pow(2).flatten(1).sum(1)
        grad, = torch.autograd.grad(objective.sum(), x)
        history[step] = score.detach().cpu()
        with torch.no_grad():
            rms = grad.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
            x = x.detach() + p.lr * grad / rms
            if p.blur_every and (step + 1) % p.blur_every == 0:
                x = _blur(x, p.blur_sigma)
            x = torch.max(torch.min(x, high), low)
    with torch.no_grad():
        logits = forward(x).float().cpu().numpy()
    display = subject.to_display(x)
    return [ClassModel(int(t), subject.class_name(int(t)), display[i], x[i:i + 1].detach(),
                       logits[i], float(start[i]), history[:, i].numpy(), asdict(p))
            for i, t in enumerate(targets.tolist())]
