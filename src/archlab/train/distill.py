"""Knowledge distillation, as DeiT (2012.12877) trains with a CNN teacher.

The teacher is frozen: eval mode, no gradients, never a part of the student's checkpoint.
It sees the very batch the student sees, augmentation and mixup included (DeiT: the
teacher's targets are those of the augmented image, not of the clean one).

    loss = (1 - alpha) * CE(student, labels) + alpha * distill

- soft (Hinton et al. 1503.02531): distill = tau^2 * KL(softmax(teacher / tau) ||
  softmax(student / tau)), averaged over the images; tau^2 keeps the gradients' scale
  independent of the temperature. (DeiT's code divides the summed KL by the number of
  logits, N * classes, instead of N: a factor of `classes` smaller. We keep Hinton's form.)
- hard (DeiT's choice): distill = CE(student, argmax teacher): the teacher's decision as a
  label, which DeiT found better than soft targets, with alpha = 0.5.

A distilled DeiT student returns (class logits, distillation logits) in training: the class
head learns from the labels and the distillation head from the teacher, so hard
distillation is 0.5 * CE(cls, y) + 0.5 * CE(dist, argmax teacher). Any other student puts
both terms on its one output (auxiliary heads, if it has them, stay with the labels).

Preprocessing: a teacher that archlab trained carries its normalisation and image size, and
the student's batch is converted to them (un-normalise, re-normalise, resize). A teacher
given as a module or a registered name is assumed to take the student's batch as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from archlab.analysis.speed import autocast
from archlab.train.losses import classification_loss, split_output, unwrap
from archlab.train.plugin import Plugin

KINDS = ("soft", "hard")


def soft_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, tau: float = 1.0
                           ) -> torch.Tensor:
    """tau^2 * mean over images of KL(softmax(teacher/tau) || softmax(student/tau))."""
    s = F.log_softmax(student.float() / tau, dim=1)
    t = F.log_softmax(teacher.float() / tau, dim=1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * tau * tau


def hard_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the teacher's predicted class."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=1))


def distillation_loss(output: torch.Tensor | tuple, target: torch.Tensor,
                      teacher_logits: torch.Tensor, kind: str = "hard", alpha: float = 0.5,
                      tau: float = 1.0, model: nn.Module | None = None,
                      label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, the student's main logits): the label loss and the distillation loss mixed
    by `alpha`; a distilled DeiT's second output takes the distillation term."""
    if kind not in KINDS:
        raise ValueError(f"distillation kind must be one of {', '.join(KINDS)}, got {kind!r}")
    logits, others = split_output(output)
    net = unwrap(model) if model is not None else None
    if net is not None and getattr(net, "distilled", False) and len(others) == 1:
        # DeiT: the class token's head learns from the labels, the distillation token's
        # head from the teacher.
        base = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
        student_kd = others[0]
    else:
        base, _ = classification_loss(output, target, model, label_smoothing)
        student_kd = logits
    if kind == "soft":
        kd = soft_distillation_loss(student_kd, teacher_logits, tau)
    else:
        kd = hard_distillation_loss(student_kd, teacher_logits)
    return (1.0 - alpha) * base + alpha * kd, logits


# --------------------------------------------------------------------------------------
# The teacher
# --------------------------------------------------------------------------------------


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def load_teacher(teacher: nn.Module | str | Path, *, num_classes: int | None = None,
                 classes: Sequence[str] | None = None, in_chans: int | None = None,
                 small_input: bool = False, log=print
                 ) -> tuple[nn.Module, dict[str, Any] | None]:
    """(frozen teacher, its preprocessing or None) from a module, a run directory or model
    file written by `archlab train`, or a registered name (built untrained: give its
    weights through a run directory to make it useful)."""
    if isinstance(teacher, nn.Module):
        return freeze_teacher(teacher), None
    if not isinstance(teacher, (str, Path)):
        raise TypeError(f"a teacher is a module, a run directory or a model name, not "
                        f"{type(teacher).__name__}")
    path = Path(teacher)
    if path.exists():
        from archlab.train.evaluate import load_trained

        model, info = load_trained(path)
        if classes is not None and info.get("classes") and list(info["classes"]) != list(classes):
            raise ValueError(f"the teacher {teacher} was trained on classes {info['classes']}, "
                             f"the student learns {list(classes)}: distil from a teacher "
                             "trained on the same classes")
        return freeze_teacher(model), info.get("preprocess")
    from archlab.models import create_model, list_models

    if str(teacher) not in list_models():
        raise ValueError(f"teacher {str(teacher)!r} is neither a file or run directory nor a "
                         "registered model name (see `archlab models`)")
    log(f"note: the teacher {teacher} is built with random weights; pass a run directory "
        "that trained it to distil anything")
    model = create_model(str(teacher), num_classes=num_classes or 1000,
                         in_chans=in_chans or 3, small_input=small_input)
    return freeze_teacher(model), None


class Distiller:
    """The frozen teacher and the mixing of its targets into the student's loss."""

    def __init__(self, teacher: nn.Module, kind: str = "hard", alpha: float = 0.5,
                 tau: float = 1.0, student_preprocess: dict[str, Any] | None = None,
                 teacher_preprocess: dict[str, Any] | None = None,
                 precision: str = "fp32") -> None:
        if kind not in KINDS:
            raise ValueError(f"distill must be one of {', '.join(KINDS)}, got {kind!r}")
        self.teacher = freeze_teacher(teacher)
        self.kind, self.alpha, self.tau, self.precision = kind, alpha, tau, precision
        self.convert = None
        if student_preprocess and teacher_preprocess:
            s, t = student_preprocess, teacher_preprocess
            same_norm = list(s["mean"]) == list(t["mean"]) and list(s["std"]) == list(t["std"])
            same_size = int(s["image_size"]) == int(t["image_size"])
            if len(t["mean"]) != len(s["mean"]):
                raise ValueError(f"the teacher takes {len(t['mean'])} channels, the student's "
                                 f"images have {len(s['mean'])}")
            if not (same_norm and same_size):
                self.convert = (torch.tensor(s["mean"]).view(1, -1, 1, 1),
                                torch.tensor(s["std"]).view(1, -1, 1, 1),
                                torch.tensor(t["mean"]).view(1, -1, 1, 1),
                                torch.tensor(t["std"]).view(1, -1, 1, 1),
                                int(t["image_size"]))

    def teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch in the teacher's normalisation and size."""
        if self.convert is None:
            return x
        ms, ss, mt, st, size = (v.to(x.device) if torch.is_tensor(v) else v
                                for v in self.convert)
        x = (x.float() * ss + ms - mt) / st
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.teacher.training:  # a caller's model.train() must never reach the teacher
            self.teacher.eval()
        with autocast(x.device.type, self.precision):
            out, _ = split_output(self.teacher(self.teacher_input(x)))
        return out.float()

    def loss(self, output, target: torch.Tensor, x: torch.Tensor, model: nn.Module | None,
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        return distillation_loss(output, target, self.teacher_logits(x), self.kind,
                                 self.alpha, self.tau, model, label_smoothing)


def for_trainer(trainer, teacher: nn.Module | str | Path | None) -> Distiller:
    """The Distiller of a run: the recipe's teacher (or the module passed to fit), put on
    the run's device, its preprocessing matched to the student's."""
    r = trainer.recipe
    teacher = teacher if teacher is not None else r.teacher
    if teacher is None:
        raise ValueError(f"distill={r.distill!r} needs a teacher: a run directory that "
                         "archlab trained (--teacher runs/resnet20-digits), or a module")
    module, pre = load_teacher(teacher, num_classes=trainer.data.num_classes,
                               classes=trainer.data.classes, in_chans=trainer.data.in_chans,
                               small_input=trainer.model_kwargs.get("small_input", False),
                               log=trainer.log)
    module.to(trainer.device)
    if pre is None:
        trainer.log("note: the teacher takes the student's batch as it is (same size and "
                    "normalisation assumed)")
    return Distiller(module, r.distill, r.distill_alpha, r.distill_tau,
                     trainer.preprocess.as_dict(), pre, trainer.settings.precision)


class Distill(Plugin):
    """The trainer's plugin: loads the teacher at setup, and gives the distillation loss
    on the very batch the student saw."""

    def __init__(self, teacher: nn.Module | str | Path | None = None) -> None:
        self.teacher = teacher
        self.distiller: Distiller | None = None

    def on_setup(self, trainer) -> None:
        self.distiller = for_trainer(trainer, self.teacher)

    def loss(self, trainer, output, target: torch.Tensor, x: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.distiller.loss(output, target, x, trainer.model,
                                   trainer.recipe.label_smoothing)
