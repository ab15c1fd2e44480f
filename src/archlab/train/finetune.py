"""Transfer learning as fastai's `fine_tune` runs it, and as the course's comparison article
uses it (REFERENCE.md, "Recipes").

1. Cut the pretrained network at its last pooling layer: the body is `forward_features`.
2. Put a new head on it, Kaiming-initialised: fastai's pooled MLP (concat of adaptive
   average and max pooling, BN, dropout 0.25, Linear(2C, 512, no bias), ReLU, BN, dropout
   0.5, Linear(512, n, no bias)), or a plain linear classifier on the average pool.
3. Phase 1, `freeze_epochs` of one-cycle with the body frozen: only the head (and, as fastai
   does by default, the body's normalisation layers) learns, so that a random head does not
   wreck the pretrained features with large gradients.
4. Phase 2, `epochs` of one-cycle with everything unfrozen and *discriminative* learning
   rates (ULMFiT, 1801.06146): early layers hold generic features and move least. fastai's
   `lr=slice(lo, hi)` spreads lo..hi geometrically over the n layer groups: group i gets
   lo * (hi / lo) ** (i / (n - 1)).

Layer groups are the stem, one group per `feature_info` stage, and the head. Each
`feature_info` entry names the module whose output ends a stage; a parameter belongs to the
first stage whose module it precedes or lies in (in module order), so no family needs its
own list. Body parameters that `forward_features` never uses (VGG's and AlexNet's hidden
fully connected layers, the auxiliary heads of GoogLeNet and Inception) stay frozen.

The two phases are one run of the trainer: its schedule knows where phase 2 starts, the
optimizer is rebuilt at the boundary, and a checkpoint written in either phase resumes in it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from archlab.models import ImageClassifier, create_model
from archlab.train.losses import unwrap
from archlab.train.optim import build_optimizer
from archlab.train.plugin import Plugin
from archlab.train.schedules import Schedule

HEADS = ("concat", "linear")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
          nn.modules.instancenorm._InstanceNorm)


# --------------------------------------------------------------------------------------
# The new head
# --------------------------------------------------------------------------------------


class AdaptiveConcatPool2d(nn.Module):
    """Average and max pooling side by side (fastai): the max keeps the strongest response
    of a feature anywhere in the image, the average how much of it there is."""

    def __init__(self, size: int = 1) -> None:
        super().__init__()
        self.avg, self.max = nn.AdaptiveAvgPool2d(size), nn.AdaptiveMaxPool2d(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.max(x), self.avg(x)], dim=1)


def transfer_head(num_features: int, num_classes: int, kind: str = "concat",
                  tokens: bool = False, hidden: int = 512,
                  drop_rates: tuple[float, float] = (0.25, 0.5)) -> nn.Sequential:
    """fastai's `create_head` (kind='concat') or a plain linear classifier ('linear').

    With `tokens` the features are already one vector per image (a transformer's class
    token), so there is nothing to pool and the concat head starts at its first BN.
    """
    if kind not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {kind!r}")
    layers: list[nn.Module] = []
    if kind == "linear":
        if not tokens:
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        layers.append(nn.Linear(num_features, num_classes))
    else:
        nf = num_features
        if not tokens:
            layers += [AdaptiveConcatPool2d(1), nn.Flatten(1)]
            nf = 2 * num_features
        layers += [nn.BatchNorm1d(nf), nn.Dropout(drop_rates[0]),
                   nn.Linear(nf, hidden, bias=False), nn.ReLU(inplace=True),
                   nn.BatchNorm1d(hidden), nn.Dropout(drop_rates[1]),
                   nn.Linear(hidden, num_classes, bias=False)]
    head = nn.Sequential(*layers)
    for m in head.modules():
        if isinstance(m, nn.Linear):
            # fastai's apply_init(head, kaiming_normal_): fan-in, gain sqrt(2) for the ReLU.
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return head


class TransferModel(ImageClassifier):
    """A pretrained body (any archlab model, cut at `forward_features`) under a new head.

    It keeps the model contract: `feature_info` is the body's with its module names under
    `body.`, so the explain tools and `forward_intermediates` work on it unchanged.
    """

    def __init__(self, body: ImageClassifier, num_classes: int, head: str = "concat") -> None:
        super().__init__()
        if not isinstance(body, ImageClassifier):
            raise TypeError(f"fine-tuning needs an archlab model (forward_features, "
                            f"feature_info), not a {type(body).__name__}")
        self.body = body
        self.head_kind = head
        self.num_classes, self.in_chans = num_classes, body.in_chans
        self.num_features = body.num_features
        self.min_input_size = body.min_input_size
        self.tokens = _returns_tokens(body)
        self.head = transfer_head(body.num_features, num_classes, head, self.tokens)
        self.feature_info = [{**f, "module": f"body.{f['module']}"} for f in body.feature_info]
        for attr in ("card", "model_name"):
            if hasattr(body, attr):
                setattr(self, attr, getattr(body, attr))
        self.unused = _unused_parameters(body)
        for p in self.unused:
            p.requires_grad_(False)
        self.frozen_bn_eval = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.tokens:
            x = self.body.forward_head(x, pre_logits=True)  # class token, patch mean, DeiT's two
        return self.head[:-1](x) if pre_logits else self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head[-1]

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = transfer_head(self.num_features, num_classes, self.head_kind, self.tokens)

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.body, "no_weight_decay", lambda: ())()
        return {f"body.{n}" for n in inner}

    def train(self, mode: bool = True) -> "TransferModel":
        super().train(mode)
        if mode and self.frozen_bn_eval:
            # frozen_bn='frozen' (fastai's BnFreeze): the frozen body's batch norms keep the
            # pretrained running statistics instead of drifting to the new data's.
            for m in self.body.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def _returns_tokens(body: ImageClassifier) -> bool:
    """Whether forward_features gives tokens (N, T, D) rather than a map (N, C, H, W)."""
    return hasattr(body, "patch_embed") and hasattr(body, "num_prefix_tokens")


def _unused_parameters(body: ImageClassifier) -> list[nn.Parameter]:
    """Body parameters that forward_features never reaches: found by one backward pass on
    a small input (eval mode, so no statistic moves), not by a list per family."""
    side = max(32, body.min_input_size)
    p0 = next(body.parameters(), None)
    if p0 is None:
        return []
    was_training = body.training
    flags = [p.requires_grad for p in body.parameters()]
    body.eval()
    try:
        for p in body.parameters():
            p.requires_grad_(True)
            p.grad = None
        x = torch.zeros(1, body.in_chans, side, side, device=p0.device, dtype=p0.dtype)
        with torch.enable_grad():
            out = body.forward_features(x)
            out.float().square().sum().backward()
        unused = [p for p in body.parameters() if p.grad is None]
    finally:
        for p, flag in zip(body.parameters(), flags):
            p.grad = None
            p.requires_grad_(flag)
        body.train(was_training)
    return unused


# --------------------------------------------------------------------------------------
# Layer groups, freezing, discriminative learning rates
# --------------------------------------------------------------------------------------


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """[(name, parameters)] from the input to the output: 'stem', then one group per
    `feature_info` stage (named by its module), then 'head'. Empty groups are dropped."""
    model = unwrap(model)
    if isinstance(model, TransferModel):
        body, head_params = model.body, list(model.head.parameters())
        skip = {id(p) for p in model.unused}
    else:
        body, skip = model, set()
        classifier = body.get_classifier()
        heads = classifier if isinstance(classifier, (tuple, list)) else [classifier]
        head_params = [p for h in heads for p in h.parameters()]
    info = getattr(body, "feature_info", None)
    if not info:
        raise ValueError(f"{type(body).__name__} has no feature_info: cannot split it into "
                         "layer groups")
    order = {id(m): i for i, (_, m) in enumerate(body.named_modules())}
    modules = dict(body.named_modules())
    starts, ends = [], []
    for f in info:
        m = modules[f["module"]]
        starts.append(order[id(m)])
        ends.append(max(order[id(d)] for d in m.modules()))
    # Boundaries: the stem ends where the first stage starts; stage i ends with its module.
    names = ["stem"] + [f["module"] for f in info]
    limits = [starts[0] - 1] + ends
    groups: list[list[nn.Parameter]] = [[] for _ in names]
    head_ids = {id(p) for p in head_params}
    seen: set[int] = set()
    for mod in body.modules():
        for p in mod.parameters(recurse=False):
            if id(p) in seen or id(p) in skip or id(p) in head_ids:
                continue
            seen.add(id(p))
            pos = order[id(mod)]
            k = next((i for i, lim in enumerate(limits) if pos <= lim), len(limits) - 1)
            groups[k].append(p)
    out = [(n, g) for n, g in zip(names, groups) if g]
    out.append(("head", head_params))
    return out


def spread_lrs(lo: float, hi: float, n: int) -> list[float]:
    """fastai's even_mults: n rates from lo to hi in a geometric progression."""
    if n == 1:
        return [hi]
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def freeze_body(model: TransferModel, frozen: bool, frozen_bn: str = "train") -> None:
    """Freeze (or unfreeze) the body. frozen_bn: 'train' keeps the norms' scales and
    shifts learning and their statistics moving (fastai's train_bn, its default), 'stats'
    freezes the parameters but lets batch-norm statistics move, 'frozen' freezes both."""
    unused = {id(p) for p in model.unused}
    norm_params = {id(p) for m in model.body.modules() if isinstance(m, _NORMS)
                   for p in m.parameters(recurse=False)}
    for p in model.body.parameters():
        if id(p) in unused:
            continue
        p.requires_grad_(not frozen or (frozen_bn == "train" and id(p) in norm_params))
    for p in model.head.parameters():
        p.requires_grad_(True)
    model.frozen_bn_eval = frozen and frozen_bn == "frozen"
    model.train(model.training)


class Phase:
    """One phase of a fine-tuning run: its epochs and whether the body is frozen."""

    def __init__(self, name: str, start_epoch: int, epochs: int, frozen: bool,
                 lrs: tuple[float, float]) -> None:
        self.name, self.start_epoch, self.epochs = name, start_epoch, epochs
        self.frozen, self.lrs = frozen, lrs

    def __repr__(self) -> str:
        return (f"Phase({self.name}, epochs {self.start_epoch}..{self.start_epoch + self.epochs}"
                f", lr {self.lrs[0]:g}..{self.lrs[1]:g})")


def phases(recipe) -> list[Phase]:
    """Phase 1 (frozen, the recipe's lr on the head and a tenth of it on the body's
    trainable norms, as fastai's slice(lr) gives), then phase 2 (unfrozen, `unfrozen_lr`;
    by default fastai's fine_tune: slice(lr / 200, lr / 2))."""
    lr = recipe.peak_lr
    out = []
    if recipe.freeze_epochs:
        out.append(Phase("frozen", 0, recipe.freeze_epochs, True, (lr / 10, lr)))
    lo, hi = recipe.unfrozen_lr or (lr / 200, lr / 2)
    out.append(Phase("unfrozen", recipe.freeze_epochs, recipe.epochs, False, (lo, hi)))
    return out


def phase_at(recipe, epoch: int) -> Phase:
    found = phases(recipe)
    for p in reversed(found):
        if epoch >= p.start_epoch:
            return p
    return found[0]


def group_lrs(model: nn.Module, phase: Phase) -> list[tuple[str, list[nn.Parameter], float]]:
    """(name, parameters, learning rate) per layer group for `phase`: spread over all
    groups when unfrozen; frozen, the head gets the top rate and the rest the lowest."""
    groups = layer_groups(model)
    lo, hi = phase.lrs
    if phase.frozen:
        rates = [lo] * (len(groups) - 1) + [hi]
    else:
        rates = spread_lrs(lo, hi, len(groups))
    return [(n, g, r) for (n, g), r in zip(groups, rates)]


class PhasedSchedule:
    """The recipe's schedule restarted at every phase, with that phase's top rate; per
    group rates follow through each optimizer group's `lr_scale`."""

    def __init__(self, recipe, steps_per_epoch: int) -> None:
        self.kind = f"fine-tune {recipe.schedule}"
        self.steps_per_epoch = steps_per_epoch
        self.total = recipe.total_epochs * steps_per_epoch
        self.phases = phases(recipe)
        self.schedules = [
            Schedule(recipe.schedule, p.epochs * steps_per_epoch, p.lrs[1], steps_per_epoch,
                     recipe.pct_start, recipe.div, recipe.div_final, recipe.moms,
                     recipe.warmup_epochs, recipe.min_lr, recipe.milestones, recipe.gamma)
            for p in self.phases]

    def _at(self, step: int) -> tuple[Schedule, int]:
        k = 0
        for i, p in enumerate(self.phases):
            if step >= p.start_epoch * self.steps_per_epoch:
                k = i
        return self.schedules[k], step - self.phases[k].start_epoch * self.steps_per_epoch

    def __call__(self, step: int) -> tuple[float, float | None]:
        sched, local = self._at(min(step, self.total - 1))
        return sched(local)

    def apply(self, optimizer, step: int) -> float:
        sched, local = self._at(min(step, self.total - 1))
        return sched.apply(optimizer, local)


def prepare(model: nn.Module, num_classes: int, head: str = "concat") -> TransferModel:
    """The model cut at its features under a new `head` (a TransferModel stays as it is)."""
    if isinstance(model, TransferModel):
        return model
    return TransferModel(model, num_classes, head)


def enter_phase(model: nn.Module, recipe, epoch: int
                ) -> tuple[Phase, list[tuple[str, list[nn.Parameter], float]]]:
    """Freeze or unfreeze for the phase of `epoch`; return it and the groups' rates."""
    net = unwrap(model)
    phase = phase_at(recipe, epoch)
    freeze_body(net, phase.frozen, recipe.frozen_bn)
    return phase, group_lrs(net, phase)


def describe(model: nn.Module, recipe) -> list[str]:
    """One line per phase: its epochs and each layer group's rate (for the run log)."""
    lines = []
    for p in phases(recipe):
        groups = group_lrs(unwrap(model), p)
        rates = ", ".join(f"{n} {r:.2g}" for n, g, r in groups)
        lines.append(f"  {p.name}: {p.epochs} epochs; lr per layer group: {rates}"
                     + (f" (body frozen; norms: {recipe.frozen_bn})" if p.frozen else ""))
    return lines


# --------------------------------------------------------------------------------------
# The trainer's plugin
# --------------------------------------------------------------------------------------


class FineTune(Plugin):
    """Fine-tuning in the trainer: the new head at setup, the phase's freezing and
    optimizer (one pair of groups per layer group, its rate as `lr_scale` of the top rate),
    the switch to phase 2 at its first epoch, and the phase again on resume."""

    def __init__(self) -> None:
        self.phase: Phase | None = None

    def on_model(self, trainer, net: nn.Module) -> nn.Module:
        # Cut at forward_features, under a new head for the data's classes.
        return prepare(net, trainer.data.num_classes, trainer.recipe.head)

    def on_setup(self, trainer) -> None:
        trainer.schedule = PhasedSchedule(trainer.recipe, trainer.steps_per_epoch)
        self.enter(trainer, 0)

    def enter(self, trainer, epoch: int) -> None:
        """Freeze or unfreeze for the phase of `epoch` and build its optimizer."""
        self.phase, groups = enter_phase(trainer.model, trainer.recipe, epoch)
        top = self.phase.lrs[1]
        trainer.optimizer = build_optimizer(trainer.model, trainer.recipe,
                                            [(g, rate / top) for _, g, rate in groups])
        trainer.params = [p for p in trainer.model.parameters() if p.requires_grad]
        trainer.log(f"fine-tuning, phase {self.phase.name} from epoch {epoch + 1}: "
                    f"{sum(p.numel() for p in trainer.params):,} trainable parameters")

    def on_train_epoch_end(self, trainer) -> None:
        r = trainer.recipe
        if trainer.epoch < r.total_epochs and \
                phase_at(r, trainer.epoch).name != self.phase.name:
            # Phase 2 starts: unfreeze, and a new optimizer with the spread rates; the
            # checkpoint that follows holds it, so a resumed run continues in phase 2.
            self.enter(trainer, trainer.epoch)

    def on_resume(self, trainer, state: dict[str, Any], tensors) -> None:
        self.enter(trainer, state["epoch"])  # the optimizer of the checkpoint's phase


def rebuild(info: dict[str, Any]) -> nn.Module:
    """The untrained network a run's `info` describes, with its transfer head when the run
    fine-tuned (what `load_trained` needs before loading a fine-tuned run's weights)."""
    model = create_model(info["model"], **info["model_kwargs"])
    recipe = info.get("recipe") or {}
    if recipe.get("fine_tune"):
        model = TransferModel(model, info["model_kwargs"].get("num_classes", model.num_classes),
                              recipe.get("head", "concat"))
    return model
