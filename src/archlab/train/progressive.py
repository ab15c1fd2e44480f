"""Progressive learning (EfficientNetV2, 2104.00298) and fine-tuning at a higher resolution
(FixRes 1906.06423; DeiT's 384 px fine-tuning).

Progressive learning: small images early (cheap epochs), large ones late, and regularisation
that grows with the size, since a small network or a small image needs little of it and a
large image much (the paper's Algorithm 1): the N epochs are cut into M stages and stage i
trains at

    size_i = size_0 + (size_e - size_0) * i / (M - 1)
    phi_i  = phi_0  + (phi_e  - phi_0)  * i / (M - 1)      (RandAugment magnitude,
                                                             dropout, mixup alpha)

The recipe's `progressive` field is either that mapping

    progressive: {start_size: 16, end_size: 32, stages: 4,
                  randaugment_m: [5, 15], dropout: [0.1, 0.3], mixup: [0, 0.2]}

(end_size defaults to the run's image size; the regularisation keys are optional), or a
list of [first epoch, size] pairs ([[0, 16], [3, 24], [6, 32]]). In-memory batches are
resized on the device, so nothing is decoded again; for image files the workers crop at
the run's size and the device resizes, and RandAugment's magnitude (applied in the workers)
does not follow the plan. Validation and the saved preprocessing use the run's image size:
the recipe's image_size, else the plan's last size when it names one (the scale the weights
learn last), else the data's.
The settings are a function of the epoch alone, so a resumed run picks them up.

`fine_tune_at_resolution(run, data, image_size)` (train/entry.py) continues a trained run at a larger size:
a transformer is rebuilt for the new grid with its position embeddings resized once,
bicubically (class and distillation tokens kept), and then learned at the new size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from archlab.models import create_model, load_state_dict
from archlab.train.losses import unwrap
from archlab.train.plugin import Plugin

_SCHEDULED = ("randaugment_m", "dropout", "mixup")


@dataclass
class ProgressivePlan:
    start_size: int | None = None
    end_size: int | None = None
    stages: int = 4
    steps: list[tuple[int, int]] | None = None      # [(first epoch, size)], the list form
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe) -> "ProgressivePlan":
        spec = recipe.progressive
        if isinstance(spec, (list, tuple)):
            try:
                steps = sorted((int(e), int(s)) for e, s in spec)
            except (TypeError, ValueError):
                raise ValueError(f"recipe: progressive as a list holds [epoch, size] pairs, "
                                 f"got {spec!r}") from None
            if not steps or steps[0][0] != 0 or any(s < 1 for _, s in steps):
                raise ValueError(f"recipe: progressive's [epoch, size] pairs must start at "
                                 f"epoch 0 with positive sizes, got {spec!r}")
            return cls(steps=steps)
        if not isinstance(spec, dict):
            raise ValueError(f"recipe: progressive is a mapping {{start_size, end_size, "
                             f"stages, ...}} or a list of [epoch, size], got {spec!r}")
        known = {"start_size", "end_size", "stages", *_SCHEDULED}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"recipe: progressive has unknown key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        if "start_size" not in spec:
            raise ValueError("recipe: progressive needs start_size (the first stage's side)")
        plan = cls(start_size=int(spec["start_size"]),
                   end_size=int(spec["end_size"]) if spec.get("end_size") else None,
                   stages=int(spec.get("stages", 4)))
        if plan.stages < 1 or plan.start_size < 1:
            raise ValueError(f"recipe: progressive needs stages >= 1 and start_size >= 1, got "
                             f"{spec!r}")
        for key in _SCHEDULED:
            if key in spec:
                value = spec[key]
                if not (isinstance(value, (list, tuple)) and len(value) == 2):
                    raise ValueError(f"recipe: progressive {key} is [start, end], got {value!r}")
                plan.ranges[key] = (float(value[0]), float(value[1]))
        return plan

    def stage(self, epoch: int, total_epochs: int) -> tuple[int, int]:
        """(stage index, number of stages) for `epoch` (0-based): N/M epochs per stage."""
        if self.steps is not None:
            k = max(i for i, (e, _) in enumerate(self.steps) if epoch >= e)
            return k, len(self.steps)
        m = min(self.stages, max(total_epochs, 1))
        return min(epoch * m // max(total_epochs, 1), m - 1), m

    def settings(self, epoch: int, total_epochs: int, final_size: int) -> dict[str, Any]:
        """{'image_size': side, and the scheduled regularisation} for `epoch`."""
        i, m = self.stage(epoch, total_epochs)
        if self.steps is not None:
            return {"image_size": self.steps[i][1]}
        t = i / (m - 1) if m > 1 else 1.0
        end = self.end_size or final_size
        out: dict[str, Any] = {"image_size": int(round(self.start_size
                                                       + (end - self.start_size) * t))}
        for key, (a, b) in self.ranges.items():
            out[key] = a + (b - a) * t
        if "randaugment_m" in out:
            out["randaugment_m"] = int(round(out["randaugment_m"]))
        return out

    def last_size(self) -> int | None:
        """The side of the last stage when the plan names it (end_size, or the list's last
        size); None when it ends at the run's own size."""
        return self.steps[-1][1] if self.steps is not None else self.end_size

    def sizes(self, total_epochs: int, final_size: int) -> list[int]:
        return [self.settings(e, total_epochs, final_size)["image_size"]
                for e in range(total_epochs)]


def head_dropouts(model: nn.Module) -> list[nn.Dropout]:
    """The dropout layers of the classifier head (EfficientNetV2 schedules the final
    layer's dropout): every nn.Dropout under a module named `head`."""
    out = []
    for name, m in model.named_modules():
        parts = name.split(".")
        if isinstance(m, nn.Dropout) and "head" in parts[:-1]:
            out.append(m)
    return out


def apply(trainer, plan: ProgressivePlan, epoch: int) -> dict[str, Any]:
    """Set the trainer's batch pipeline (size, augmentation) and head dropout for `epoch`."""
    s = plan.settings(epoch, trainer.recipe.total_epochs, trainer.image_size)
    size = max(s["image_size"], getattr(unwrap(trainer.model), "min_input_size", 1))
    pipeline = trainer.train_pipeline
    pipeline.image_size = size
    augment = pipeline.augment
    if augment is not None:
        if "randaugment_m" in s:
            augment.randaugment_m = s["randaugment_m"]
        if "mixup" in s:
            augment.mixup = s["mixup"]
    if "dropout" in s:
        for m in head_dropouts(unwrap(trainer.model)):
            m.p = s["dropout"]
    s["image_size"] = size
    return s


class Progressive(Plugin):
    """The trainer's plugin: logs the plan, and sets every epoch's size and regularisation
    before its first batch (a function of the epoch alone, so a resumed run agrees)."""

    def __init__(self, plan: ProgressivePlan) -> None:
        self.plan = plan

    def on_setup(self, trainer) -> None:
        trainer.log(describe(self.plan, trainer.recipe.total_epochs, trainer.image_size))

    def on_epoch_start(self, trainer, epoch: int) -> None:
        apply(trainer, self.plan, epoch)


# --------------------------------------------------------------------------------------
# FixRes / DeiT-384: continue a trained run at a larger image size
# --------------------------------------------------------------------------------------


def model_at_resolution(name: str, model_kwargs: dict[str, Any], weights: dict, image_size: int
                        ) -> tuple[nn.Module, dict[str, Any]]:
    """(model, kwargs) of registered `name` loaded with `weights`; a transformer is built
    for `image_size` and its position embeddings resized to the new patch grid."""
    kwargs = dict(model_kwargs)
    model = create_model(name, **kwargs)
    if hasattr(model, "pos_embedding") and hasattr(model, "patch_embed"):
        # ViT/DeiT: the embeddings are stored for one grid; store them for the new one,
        # resized once (DeiT fine-tunes them at 384 px from there).
        kwargs["img_size"] = image_size
        model = create_model(name, **kwargs)
    load_state_dict(model, weights, "archlab")
    return model, kwargs


def describe(plan: ProgressivePlan, total_epochs: int, final_size: int) -> str:
    sizes = plan.sizes(total_epochs, final_size)
    return "progressive sizes per epoch: " + " ".join(str(s) for s in sizes)


def parse_steps(text: str) -> list[tuple[int, int]]:
    """'0:16,3:24,6:32' -> [(0, 16), (3, 24), (6, 32)] (the CLI's form of the list)."""
    try:
        return [(int(e), int(s)) for e, s in (item.split(":") for item in text.split(","))]
    except ValueError:
        raise ValueError(f"--progressive takes EPOCH:SIZE,... (e.g. 0:16,3:24) or "
                         f"START-END (e.g. 16-32), got {text!r}") from None


def parse_cli(text: str) -> dict[str, Any] | list[tuple[int, int]]:
    """The CLI's --progressive: 'START-END[xSTAGES]' (16-32x4) or 'EPOCH:SIZE,...'."""
    if ":" in text:
        return parse_steps(text)
    sizes, _, stages = text.partition("x")
    start, sep, end = sizes.partition("-")
    try:
        out: dict[str, Any] = {"start_size": int(start)}
        if sep:
            out["end_size"] = int(end)
        if stages:
            out["stages"] = int(stages)
    except ValueError:
        raise ValueError(f"--progressive takes START-END[xSTAGES] (e.g. 16-32x4) or "
                         f"EPOCH:SIZE,... (e.g. 0:16,3:24), got {text!r}") from None
    return out

