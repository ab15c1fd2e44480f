"""One epoch of training: the steps (forward, the loss, backward, clipping, the optimizer,
the plugins' and callbacks' hooks), then the epoch's row (train and validation metrics,
times), the saved weights, the checkpoint and the metrics files.

A stop asked mid-epoch leaves the sums so far in `trainer._partial`, which the checkpoint
holds, so that a resumed epoch ends with the row the uninterrupted one would have had.
Every step's loss and images right go to the step curve (train/step_curve.py) when the
loop reads them to check the loss: on the CPU every step, on a GPU every 16.
"""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from archlab.train import checkpoint as ckpt
from archlab.train import run_log
from archlab.train.progress import ProgressBar
from archlab.train.step_curve import grad_norms

_EMPTY = {"loss_sum": 0.0, "correct": 0, "seen": 0, "data_time": 0.0, "elapsed": 0.0,
          "skipped": 0}


class EpochRunner:
    """Runs the trainer's epochs, one per `run()`."""

    def __init__(self, trainer) -> None:
        self.t = trainer

    def run(self) -> dict[str, Any] | None:
        """Train epoch `trainer.epoch` (or the rest of it); its row, or None if stopped."""
        t = self.t
        e = t.epoch
        partial = t._partial if t.batch_in_epoch else None
        t.notify("on_epoch_start", e)        # e.g. this epoch's image size and regularisation
        if partial is not None:
            t.train_loader.set_epoch(e, t.batch_in_epoch, t.resume_rng["augment"])
            ckpt.set_rng_states(t.resume_rng)
        else:
            t.batch_in_epoch = 0
            t.train_loader.set_epoch(e)
            t.reseed(e)
        acc = partial or dict(_EMPTY)
        sums = self._steps(acc)
        if sums is None:
            return None
        return self._end(acc, *sums)

    def _steps(self, acc: dict[str, Any]):
        """The epoch's steps: (loss sum, correct, seen, data time, elapsed, the last step's
        learning rate), or None when a stop was asked (the sums so far then go to
        trainer._partial). A time budget spent ends the epoch early."""
        t, r = self.t, self.t.recipe
        loss_sum = torch.zeros((), dtype=torch.float64, device=t.device)
        correct = torch.zeros((), dtype=torch.long, device=t.device)
        seen, data_time, elapsed = 0, 0.0, 0.0
        window: list[tuple] = []  # check_finite's
        check_every = 1 if t.device.type == "cpu" else 16
        bar = ProgressBar(t.steps_per_epoch, f"epoch {t.epoch + 1}{t.epochs_label}",
                          enabled=r.progress and t.verbose, start=t.batch_in_epoch)
        model = t.ddp_model()
        model.train()
        t_last = time.perf_counter()
        for x, y, labels in t.train_loader:
            t_data = time.perf_counter()
            data_time += t_data - t_last
            lr = t.schedule.apply(t.optimizer, t.schedule_step())
            with t.settings.autocast(t.device.type):
                output = model(x)
            loss, logits = t.loss(output, y, x)   # a distiller's teacher sees this batch
            t.optimizer.zero_grad(set_to_none=True)
            # fp16 scales the loss so that small gradients do not flush to zero (a no-op in
            # the other precisions); the norms and clipping read the unscaled gradient.
            t.scaler.scale(loss).backward()
            if t.scaler.is_enabled() and (t.grad_groups or r.clip_grad):
                t.scaler.unscale_(t.optimizer)
            # The gradient as backpropagation left it, before clipping changes it.
            norms = grad_norms(t.grad_groups) if t.grad_groups else None
            if r.clip_grad:
                nn.utils.clip_grad_norm_(t.params, r.clip_grad)
            t.scaler.step(t.optimizer)
            t.scaler.update()
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(labels)
                hits = (logits.detach().argmax(1) == labels).sum()
                correct += hits
            window.append((t.step, loss.detach(), hits, len(labels), norms))
            seen += len(labels)
            t.step += 1
            t.batch_in_epoch += 1
            if len(window) >= check_every or t.batch_in_epoch == t.steps_per_epoch:
                t.check_finite(window, lr)
                window = []
            now = time.perf_counter()
            elapsed += now - t_last
            t_last = now
            if bar.enabled:
                bar.update(1, len(labels),
                           lambda loss=loss, lr=lr: f"loss {loss.item():.4f} lr {lr:.3g}")
            t.notify("on_step_end")
            if t.budget is not None and t.budget.spent():  # the run's last step
                t.check_finite(window, lr)
                break
            if t.stopping() and t.batch_in_epoch < t.steps_per_epoch:
                t.check_finite(window, lr)
                t._partial = {
                    "loss_sum": acc["loss_sum"] + float(loss_sum), "seen": acc["seen"] + seen,
                    "correct": acc["correct"] + int(correct),
                    "data_time": acc["data_time"] + data_time,
                    "elapsed": acc["elapsed"] + elapsed, "skipped": 0}
                t.train_time += elapsed
                bar.close()
                return None
        bar.close()
        return loss_sum, correct, seen, data_time, elapsed, lr

    def _end(self, acc: dict[str, Any], loss_sum: torch.Tensor, correct: torch.Tensor,
             seen: int, data_time: float, elapsed: float, lr: float) -> dict[str, Any]:
        """Count the epoch, evaluate, save: the row of metrics."""
        t = self.t
        if t.dist is not None:  # the global batch's loss and accuracy, not one slice's
            sums = t.dist.sum(torch.stack([loss_sum.double(), correct.double(),
                                           torch.tensor(seen, dtype=torch.float64,
                                                        device=loss_sum.device)]))
            loss_sum, correct, seen = sums[0], sums[1].long(), int(sums[2])
        t._partial = None
        t.batch_in_epoch = 0
        t.epoch += 1
        t.notify("on_train_epoch_end")      # e.g. fine-tuning's phase 2 starts here
        t.train_time += elapsed
        total_seen = acc["seen"] + seen
        epoch_time = acc["elapsed"] + elapsed
        row: dict[str, Any] = {
            "epoch": t.epoch, "step": t.step, "lr": lr,
            "train_loss": (acc["loss_sum"] + float(loss_sum)) / max(total_seen, 1),
            "train_top1": (acc["correct"] + int(correct)) / max(total_seen, 1),
        }
        t0 = time.perf_counter()
        mark = t.budget.elapsed() if t.budget is not None else 0.0
        if t.val_loader is not None:
            m = t.evaluate()
            row.update(val_loss=m.loss, val_top1=m.top1)
            if m.top5 is not None:
                row["val_top5"] = m.top5
        row.update(epoch_time=epoch_time, eval_time=time.perf_counter() - t0,
                   train_time=t.train_time,
                   images_per_s=total_seen / epoch_time if epoch_time else None,
                   data_frac=(acc["data_time"] + data_time) / epoch_time if epoch_time else None,
                   skipped=len(getattr(t.train_loader, "skipped", {})))
        t.history.append(row)
        t.save_outputs(row.get("val_top1"))
        t.save_checkpoint()
        if t.run_dir is not None:
            run_log.write_metrics(t.run_dir, t.history)
            run_log.write_steps(t.run_dir, t.step_curve.rows)
        if t.budget is not None:  # the next epoch's end keeps this much time back
            t.budget.reserve = t.budget.elapsed() - mark
        t.log(run_log.epoch_line(row, t.epochs_label))
        return row
