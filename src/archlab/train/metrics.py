"""What a classifier got right: loss, top-1 and top-5 accuracy, per-class accuracy and the
confusion matrix, accumulated batch by batch on the device; when asked, the predicted and
true class of every image too, in the loader's order (what a paired comparison of two
models on the same test images needs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class Meter:
    """Accumulates predictions of one pass over a dataset; `keep_predictions` also keeps
    each image's predicted and true class (on the device until `result()`)."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu",
                 keep_predictions: bool = False) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top5 = torch.zeros((), dtype=torch.long, device=device)
        self.n = 0
        self._kept: tuple[list[torch.Tensor], list[torch.Tensor]] | None = (
            ([], []) if keep_predictions else None)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor,
               loss_sum: torch.Tensor | None = None) -> None:
        pred = logits.argmax(1)
        k = self.num_classes
        self.confusion += torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
        if k > 5:
            top = logits.topk(5, dim=1).indices
            self.top5 += (top == labels[:, None]).any(1).sum()
        if loss_sum is not None:
            self.loss_sum += loss_sum.double()
        self.n += len(labels)
        if self._kept is not None:
            self._kept[0].append(pred)
            self._kept[1].append(labels)

    def _kept_tensors(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(predicted classes, true classes) as int64 CPU tensors, or (None, None)."""
        if self._kept is None:
            return None, None
        return tuple(torch.cat(parts).long().cpu() if parts else torch.zeros(0, dtype=torch.long)
                     for parts in self._kept)

    def result(self, classes: list[str] | None = None) -> "Metrics":
        cm = self.confusion.cpu()
        n = max(self.n, 1)
        per_class_n = cm.sum(1)
        correct = cm.diagonal()
        per_class = [(c / t).item() if t else None for c, t in zip(correct, per_class_n)]
        predictions, targets = self._kept_tensors()
        return Metrics(
            n=self.n, loss=float(self.loss_sum) / n,
            top1=correct.sum().item() / n,
            top5=self.top5.item() / n if self.num_classes > 5 else None,
            per_class=per_class, confusion=cm.tolist(),
            classes=list(classes) if classes else [str(i) for i in range(self.num_classes)],
            predictions=predictions, targets=targets)


@dataclass
class Metrics:
    n: int
    loss: float
    top1: float
    top5: float | None
    per_class: list[float | None] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    # Per image, in the loader's order (the dataset's: eval loaders never shuffle), when
    # the Meter kept them: predicted and true classes, int64 on the CPU. Not in as_dict().
    predictions: torch.Tensor | None = field(default=None, repr=False, compare=False)
    targets: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "loss": self.loss, "top1": self.top1, "top5": self.top5,
                "per_class": dict(zip(self.classes, self.per_class)),
                "confusion": self.confusion, "classes": self.classes}

    def per_class_table(self) -> list[tuple[str, int, int, str]]:
        """(class, images, correct, accuracy) rows."""
        rows = []
        for name, row, acc in zip(self.classes, self.confusion, self.per_class):
            i = self.classes.index(name)
            rows.append((name, sum(row), row[i], "-" if acc is None else f"{acc:.2%}"))
        return rows

    def confusion_text(self, width: int = 6) -> str:
        """The confusion matrix: rows are true classes, columns predicted ones."""
        k = len(self.classes)
        labels = [str(i) for i in range(k)]
        w = max(width, *(len(str(v)) + 1 for r in self.confusion for v in r))
        lines = ["true \\ predicted".ljust(18) + "".join(lab.rjust(w) for lab in labels)]
        for i, row in enumerate(self.confusion):
            name = f"{i} {self.classes[i]}"[:17].ljust(18)
            lines.append(name + "".join(str(v).rjust(w) for v in row))
        return "\n".join(lines)
