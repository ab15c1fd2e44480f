"""What a trained network gets wrong: the confusion matrix, the pairs of classes it confuses
most, and the images it is most wrong about (the largest losses), as fastai's
ClassificationInterpretation shows them. The top losses are where label noise, ambiguous
images and the network's blind spots are found.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from archlab.explain.datasets import dataset_batches, sample_dataset
from archlab.explain.maps import class_scores
from archlab.explain.subject import ExplainError, Subject


@dataclass
class TopLoss:
    index: int                  # position in the dataset
    image: np.ndarray           # (H, W, C) in [0, 1], as the model saw it
    actual: str
    predicted: str
    loss: float                 # cross-entropy of the actual class
    prob_actual: float
    prob_predicted: float


@dataclass
class ErrorAnalysis:
    data: str
    classes: list[str]
    confusion: np.ndarray       # (classes, classes) counts: rows actual, columns predicted
    loss: float                 # mean cross-entropy
    top_losses: list[TopLoss]
    skipped: list[str] = field(default_factory=list)    # files that could not be decoded

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.count, 1))

    def most_confused(self, n: int = 10, min_count: int = 1) -> list[tuple[str, str, int]]:
        """(actual, predicted, count) of the largest off-diagonal cells, largest first."""
        cm = self.confusion.copy()
        np.fill_diagonal(cm, 0)
        order = np.argsort(-cm, axis=None, kind="stable")
        pairs = [(self.classes[i], self.classes[j], int(cm[i, j]))
                 for i, j in zip(*np.unravel_index(order, cm.shape))]
        return [p for p in pairs if p[2] >= min_count][:n]


def error_analysis(subject: Subject, data: Any, split: str | None = None,
                   limit: int | None = None, top: int = 16, batch_size: int = 256,
                   seed: int = 0) -> ErrorAnalysis:
    """Run `subject` over `data` (default split: test) and collect its errors."""
    data, original = sample_dataset(subject, data, split, limit, seed)
    if data.num_classes != subject.num_classes:
        raise ExplainError(f"{data.name} has {data.num_classes} classes but {subject.name} "
                           f"outputs {subject.num_classes}: analyse it on the data it was "
                           f"trained on{f' ({subject.dataset})' if subject.dataset else ''}")
    if subject.classes and list(subject.classes) != list(data.classes):
        raise ExplainError(f"{data.name}'s classes {data.classes} are not {subject.name}'s "
                           f"{subject.classes}")
    k = data.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    loss_sum, skipped = 0.0, []
    heap: list[tuple[float, int, TopLoss]] = []     # the `top` largest losses, smallest first
    forward = class_scores(subject.model)
    with torch.no_grad():
        for x, y, pos in dataset_batches(subject, data, batch_size, skipped):
            logits = forward(x).float()
            losses = F.cross_entropy(logits, y, reduction="none").cpu()
            probs = logits.softmax(1).cpu()
            pred = probs.argmax(1)
            y = y.cpu()
            confusion += torch.bincount(y * k + pred, minlength=k * k).view(k, k)
            loss_sum += float(losses.double().sum())
            worst = losses.topk(min(top, len(losses))).indices
            display = None
            for i in worst.tolist():
                item = (float(losses[i]), int(pos[i]))
                if len(heap) == top and item <= heap[0][:2]:
                    continue
                if display is None:
                    display = subject.to_display(x)
                entry = TopLoss(int(original[pos[i]]), display[i], data.classes[int(y[i])],
                                data.classes[int(pred[i])], item[0], float(probs[i, y[i]]),
                                float(probs[i, pred[i]]))
                if len(heap) == top:
                    heapq.heapreplace(heap, (*item, entry))
                else:
                    heapq.heappush(heap, (*item, entry))
    n = int(confusion.sum())
    if n == 0:
        raise ExplainError(f"{data.name}: no image could be read" +
                           (f" ({skipped[0]})" if skipped else ""))
    top_losses = [e for _, _, e in sorted(heap, key=lambda t: (-t[0], t[1]))]
    return ErrorAnalysis(data.spec.get("spec", data.name) if data.spec else data.name,
                         list(data.classes), confusion.numpy(), loss_sum / n, top_losses,
                         skipped)
