"""What a classifier got right: loss, top-1 and top-5 accuracy, per-class accuracy and the
confusion matrix, accumulated batch by batch on the device."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


class Meter:
    """Accumulates predictions of one pass over a dataset."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.top5 = torch.zeros((), dtype=torch.long, device=device)
        self.n = 0

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

    def result(self, classes: list[str] | None = None) -> "Metrics":
        cm = self.confusion.cpu()
        n = max(self.n, 1)
        per_class_n = cm.sum(1)
        correct = cm.diagonal()
        per_class = [(c / t).item() if t else None for c, t in zip(correct, per_class_n)]
        return Metrics(
            n=self.n, loss=float(self.loss_sum) / n,
            top1=correct.sum().item() / n,
            top5=self.top5.item() / n if self.num_classes > 5 else None,
            per_class=per_class, confusion=cm.tolist(),
            classes=list(classes) if classes else [str(i) for i in range(self.num_classes)])


@dataclass
class Metrics:
    n: int
    loss: float
    top1: float
    top5: float | None
    per_class: list[float | None] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

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
