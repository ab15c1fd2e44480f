"""The trainer: `fit(model, data, recipe)`.

One loop, readable top to bottom: batches from the data's loader, the loss from losses.py,
the optimizer (SGD with Nesterov momentum, or AdamW with decoupled weight decay; never any
decay on norms and biases), the schedule applied before every step, gradient clipping, an
EMA of the weights, validation after every epoch, and then a checkpoint that loses nothing.

What it guarantees:

- the same seed and data give the same run on the CPU: the data order and every
  augmentation draw are functions of (seed, epoch, position), the global RNG (dropout,
  drop-path) is reseeded from (seed, epoch) at each epoch;
- a killed run resumes where its last checkpoint left it and ends with the weights the
  uninterrupted run would have had (SIGINT and SIGTERM save a checkpoint mid-epoch first);
- a NaN or infinite loss stops the run naming its step, with the last good checkpoint kept;
- files that cannot be decoded are skipped and listed in run.log (`strict` stops instead).
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from archlab._io import write_atomic
from archlab._text import fmt_time
from archlab.data.loader import epoch_seed, make_loader
from archlab.data import (ImageData, Issues, channel_stats, dataset_splits,
                                  load_dataset)
from archlab.data.split import indices_digest, train_val_split
from archlab.data.transforms import BatchPipeline, eval_transform, file_transform
from archlab.models.registry import create_model
from archlab.train import checkpoint as ckpt
from archlab.train import distributed
from archlab.train import finetune, progressive
from archlab.train.losses import classification_loss, split_output, unwrap
from archlab.train.metrics import Meter, Metrics
from archlab.train.progress import ProgressBar
from archlab.train.recipe import Recipe
from archlab.train.schedules import Schedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a checkpoint was written."""

    def __init__(self, message: str, run_dir: Path | None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


@dataclass
class Preprocess:
    """How images reach the model at evaluation: resize, centre crop, normalise."""

    image_size: int
    mean: list[float]
    std: list[float]
    crop_pct: float = 0.875
    in_chans: int = 3

    def as_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "in_chans": self.in_chans}


@dataclass
class FitResult:
    model: nn.Module                  # the weights to use (the EMA when on)
    history: list[dict[str, Any]]
    run_dir: Path | None
    info: dict[str, Any]
    best: dict[str, Any] | None = None
    test: Metrics | None = None
    issues: Issues = field(default_factory=Issues)


# --------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
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


def param_groups(model: nn.Module, weight_decay: float,
                 layer_lrs: Sequence[tuple[Sequence[nn.Parameter], float]] | None = None
                 ) -> list[dict[str, Any]]:
    """Weight decay on weights only: norms' scales and all biases (one-dimensional
    parameters) are left alone, as are the names a model lists in `no_weight_decay()`
    (position embeddings, class tokens).

    `layer_lrs` [(parameters, lr_scale)] gives every layer group its own pair of groups
    whose `lr_scale` multiplies the schedule's rate (discriminative fine-tuning)."""
    skip = set(getattr(model, "no_weight_decay", lambda: ())())
    if layer_lrs is not None:
        names = {id(p): n for n, p in model.named_parameters()}
        out = []
        for params, scale in layer_lrs:
            params = [p for p in params if p.requires_grad]
            no = [p for p in params if p.ndim <= 1 or names.get(id(p)) in skip]
            yes = [p for p in params if not (p.ndim <= 1 or names.get(id(p)) in skip)]
            out += [{"params": g, "weight_decay": wd, "lr_scale": scale}
                    for g, wd in ((yes, weight_decay), (no, 0.0)) if g]
        return out
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, recipe: Recipe,
                    layer_lrs: Sequence[tuple[Sequence[nn.Parameter], float]] | None = None
                    ) -> torch.optim.Optimizer:
    groups = param_groups(model, recipe.wd, layer_lrs)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.peak_lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    # AdamW: the decay shrinks the weights directly (p -= lr * wd * p), decoupled from
    # the adaptive step (Loshchilov & Hutter 1711.05101), as fastai does.
    return torch.optim.AdamW(groups, lr=recipe.peak_lr, betas=recipe.betas, eps=recipe.eps)


class ModelEMA:
    """An exponential moving average of the weights (Polyak averaging), evaluated instead
    of the raw weights. The decay warms up as min(decay, (1 + t) / (10 + t)) so that the
    first, random weights are forgotten quickly; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        src = unwrap(model)
        ema_p = [p for p in self.module.parameters()]
        torch._foreach_lerp_(ema_p, [p.detach() for p in src.parameters()], 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), src.buffers()):
            b_ema.copy_(b)


@torch.no_grad()
def run_eval(model: nn.Module, loader, num_classes: int, classes: Sequence[str] | None,
             device: torch.device, amp: bool = False, progress: ProgressBar | None = None
             ) -> Metrics:
    """One pass over `loader` in eval mode: loss, top-1/top-5, per-class, confusion."""
    was_training = model.training
    model.eval()
    meter = Meter(num_classes, device)
    try:
        for x, y, labels in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, _ = split_output(model(x))
            logits = logits.float()
            loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
            meter.update(logits, labels, loss)
            if progress is not None:
                progress.update(1, len(labels))
    finally:
        model.train(was_training)
    return meter.result(classes)


def _small_image(size: int | None) -> bool:
    return size is not None and size <= 64


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_atomic(run_dir / "metrics.jsonl",
                      "".join(json.dumps(row) + "\n" for row in history))
    if history:
        keys = list(dict.fromkeys(k for row in history for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in keys})
        write_atomic(run_dir / "metrics.csv", buf.getvalue())


# --------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------


class Trainer:
    """Everything a run needs, set up once; `run()` trains. Use `fit()` for the one call.

    Callbacks are objects with any of `on_step_end(trainer)` and
    `on_epoch_end(trainer, row)`; `trainer.request_stop()` ends the run after the current
    step with a checkpoint, as SIGINT does.
    """

    def __init__(self, model: nn.Module | str | None, data: ImageData | str | None,
                 recipe: Recipe | str | None = None, *, val_data: ImageData | None = None,
                 test_data: ImageData | str | None = None,
                 run_dir: str | Path | None = None, resume: bool = False,
                 callbacks: Sequence[Any] = (), verbose: bool = True,
                 root: str | Path | None = None, teacher: nn.Module | None = None) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        self.verbose = verbose
        self._stop = False
        self._stop_agreed = False          # several processes: the stop they agreed on
        self._extra_loaders: list[Any] = []
        self.resume_state: dict[str, Any] | None = None
        if resume:
            if self.run_dir is None:
                raise ValueError("resume needs the run directory")
            state, weights, train_tensors = ckpt.load_checkpoint(self.run_dir)
            self.resume_state = state
            model, data, test_data, recipe, root = self._resume_inputs(model, data, test_data,
                                                                       root)
        if data is None:
            raise ValueError("no data: pass a dataset or its spec ('fashion-mnist', a folder, "
                             "a CSV)")
        if recipe is None:
            recipe = Recipe()
        elif isinstance(recipe, str):
            recipe = Recipe.load(recipe)
        model = model if model is not None else recipe.model
        if model is None:
            raise ValueError("no model: pass one, or name it in the recipe (model: resnet20)")
        self.recipe = r = recipe
        if r.threads:
            torch.set_num_threads(r.threads)

        # The device decides the switches left at None: on for CUDA, off elsewhere.
        self.device = resolve_device(r.device)
        # Started by torchrun with several processes: DDP (train/distributed.py); rank 0
        # alone prints, writes and evaluates.
        self.dist = distributed.setup(r.device)
        if self.dist is not None:
            self.device = self.dist.device
            if not self.dist.is_main:
                self.verbose, self.run_dir = False, None
        cuda = self.device.type == "cuda"
        self.amp = r.amp if r.amp is not None else (cuda and torch.cuda.is_bf16_supported())
        self.channels_last = r.channels_last if r.channels_last is not None else cuda
        self.compile = r.compile if r.compile is not None else cuda
        if cuda:
            torch.backends.cudnn.benchmark = True

        self._setup_data(data, val_data, test_data, root)
        net = self._setup_model(model)
        stats = self._setup_preprocess(net)
        self._setup_loaders(stats)

        if self.dist is not None and r.sync_bn:
            net = distributed.convert_sync_batchnorm(net, self.device)
        net.to(self.device)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.model = net
        self.phase = None
        if r.fine_tune:
            self.schedule = finetune.PhasedSchedule(r, self.steps_per_epoch)
            self._enter_phase(0)
        else:
            self.optimizer = build_optimizer(net, r)
            self.schedule = Schedule.from_recipe(r, self.steps_per_epoch)
        self.total_steps = r.total_epochs * self.steps_per_epoch
        self.ema = ModelEMA(net, r.ema) if r.ema > 0 else None
        self.progressive = None
        if r.progressive is not None:
            self.progressive = progressive.ProgressivePlan.from_recipe(r)
            self.log(progressive.describe(self.progressive, r.total_epochs, self.image_size))
        self.distiller = None
        if r.distill != "none":
            from archlab.train.distill import for_trainer

            self.distiller = for_trainer(self, teacher)
        self.train_model = torch.compile(net) if self.compile else net
        self.params = [p for p in net.parameters() if p.requires_grad]

        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.train_time = 0.0
        self._partial: dict[str, Any] | None = None
        if self.resume_state is not None:
            self._restore(weights, train_tensors)

    # -- setting up ------------------------------------------------------------------------
    def _resume_inputs(self, model, data, test_data, root):
        """The model, data and recipe of the run being resumed (its recipe wins)."""
        state = self.resume_state
        recipe = Recipe.from_dict(state["recipe"])
        stored_model, stored = state["model"]["name"], state["data"]
        if isinstance(model, str) and stored_model and model != stored_model:
            raise ValueError(f"{self.run_dir} is a run of {stored_model}, not {model}")
        if model is None or isinstance(model, str):
            model = stored_model
        if isinstance(data, str) and data != stored["spec"]:
            raise ValueError(f"{self.run_dir} trained on {stored['spec']!r}, not {data!r}")
        if data is None:
            load = stored.get("load") or {}
            root = root or load.get("root")
            data = load_dataset(stored["spec"], "train", root=root, strict=recipe.strict,
                                image_size=load.get("image_size"), in_chans=load.get("in_chans"))
            if test_data is None and "test" in dataset_splits(stored["spec"]):
                test_data = load_dataset(stored["spec"], "test", root=root,
                                         classes=data.classes, in_chans=data.in_chans,
                                         image_size=load.get("image_size"),
                                         strict=recipe.strict)
        return model, data, test_data, recipe, root

    def _setup_data(self, data, val_data, test_data, root) -> None:
        """Load what is named, hold out the stratified validation split, record the split."""
        r = self.recipe
        spec = data if isinstance(data, str) else None
        if isinstance(data, str):
            data = load_dataset(data, "train", strict=r.strict, root=root)
            if test_data is None and "test" in dataset_splits(spec):
                test_data = spec
        elif not isinstance(data, ImageData):
            raise TypeError(f"data is an ImageData or a dataset spec, not {type(data).__name__}")
        if isinstance(test_data, str):
            test_data = load_dataset(test_data, "test", classes=data.classes, strict=r.strict,
                                     in_chans=data.in_chans, root=root,
                                     image_size=data.spec.get("image_size"))
        self.data, self.test_data = data, test_data
        self.data_spec = spec or data.spec.get("spec") or data.name
        self.issues = Issues()
        self.issues.extend(data.issues)
        if val_data is None:
            train_idx, val_idx = train_val_split(data.targets, r.val_fraction, r.seed,
                                                 r.train_fraction)
            self.val_data = data.subset(val_idx) if len(val_idx) else None
        else:
            train_idx, _ = train_val_split(data.targets, 0.0, r.seed, r.train_fraction)
            val_idx = torch.empty(0, dtype=torch.long)
            self.val_data = val_data
        self.train_data = data.subset(train_idx)
        if len(self.train_data) == 0:
            raise ValueError("no training images left after the validation split")
        self.split_info = {"spec": self.data_spec, "seed": r.seed,
                           "val_fraction": r.val_fraction, "train_fraction": r.train_fraction,
                           "train": len(train_idx), "val": len(val_idx),
                           "train_digest": indices_digest(train_idx),
                           "val_digest": indices_digest(val_idx),
                           "fingerprint": data.fingerprint(),
                           "load": {"image_size": data.spec.get("image_size"),
                                    "in_chans": data.spec.get("in_chans"),
                                    "root": str(root) if root else None}}
        if self.resume_state is not None:
            old = self.resume_state["data"]
            for key in ("train_digest", "val_digest", "fingerprint"):
                if old.get(key) != self.split_info[key]:
                    raise ValueError(
                        f"the data differ from the run being resumed ({key} changed: the "
                        "dataset, its files or the split are not the ones it trained on); "
                        "resume on the same data, or start a new run")

    def _setup_model(self, model: nn.Module | str) -> nn.Module:
        """Build a registered model for the data's classes and channels (or check a module)."""
        r, data = self.recipe, self.data
        num_classes, in_chans = data.num_classes, data.in_chans
        small = r.small_input
        if small is None:
            small = _small_image(r.image_size or (data.image_size if data.in_memory else None))
        if isinstance(model, str):
            self.model_name = model
            torch.manual_seed(r.seed)
            # Resuming, the checkpoint replaces the weights: no need to read `pretrained`.
            pretrained = None if self.resume_state is not None else r.pretrained
            net = create_model(model, num_classes=num_classes, in_chans=in_chans,
                               small_input=small, pretrained=pretrained, **r.model_kwargs)
        else:
            # A module built by the caller: its registered name (if any) is recorded so that
            # `archlab eval` can rebuild it, assuming it was built with these kwargs.
            net, self.model_name = model, getattr(model, "model_name", None)
            if not r.fine_tune and getattr(net, "num_classes", num_classes) != num_classes:
                raise ValueError(f"the model has {net.num_classes} outputs but the data "
                                 f"{num_classes} classes; call model.reset_classifier("
                                 f"{num_classes}) first")
        if r.init_from and self.resume_state is None:
            # VGG's staged training: start from a trained shallower net of the family.
            from archlab.train.deepen import deepen

            for line in deepen(r.init_from, net)[1].summary():
                self.log(line)
        if r.fine_tune:  # cut at forward_features, under a new head for these classes
            net = finetune.prepare(net, num_classes, r.head)
        self.card = getattr(net, "card", None)
        self.model_kwargs = {"num_classes": num_classes, "in_chans": in_chans,
                             "small_input": bool(small), **r.model_kwargs}
        return net

    def _setup_preprocess(self, net: nn.Module) -> dict[str, Any] | None:
        """Image size (the data's own in memory, else the card's) and normalisation (the
        data's statistics from scratch, the card's for pretrained weights)."""
        r, data, card = self.recipe, self.data, self.card
        if r.image_size:
            size = r.image_size
        elif data.in_memory:
            size = data.image_size
        else:
            size = card.input_size[1] if card is not None else 224
        min_size = getattr(net, "min_input_size", 1)
        if size < min_size:
            self.log(f"note: {size} px images are upsampled to {min_size} px, the smallest "
                     f"{self.model_name or 'the model'} takes")
            size = min_size
        self.image_size = size
        norm = r.normalize
        if norm == "auto":
            norm = "model" if r.pretrained else "dataset"
        need_stats = norm == "dataset" or (r.augment == "alexnet" and r.lighting > 0)
        stats = channel_stats(self.train_data) if need_stats else None
        in_chans = data.in_chans
        if norm == "model":
            if card is None:
                raise ValueError("normalize='model' needs a registered model (its card's "
                                 "mean/std)")
            mean, std = list(card.mean), list(card.std)
            if in_chans != len(mean):
                mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
        else:
            mean, std = stats["mean"], stats["std"]
        # Images held in memory are seen whole; files are cut to the centre crop.
        crop_pct = 1.0 if data.in_memory or r.in_memory else r.crop_pct
        self.preprocess = Preprocess(size, mean, std, crop_pct, in_chans)
        return stats

    def _setup_loaders(self, stats: dict[str, Any] | None) -> None:
        r, data, size = self.recipe, self.data, self.image_size
        if r.in_memory and not data.in_memory:
            # Decode the files once, after the split (a skipped file leaves the indices alone).
            self.train_data = self.train_data.to_memory(size, r.strict)
            if self.val_data is not None and not self.val_data.in_memory:
                self.val_data = self.val_data.to_memory(size, r.strict)
            if self.test_data is not None and not self.test_data.in_memory:
                self.test_data = self.test_data.to_memory(size, r.strict)
            for part in (self.train_data, self.val_data, self.test_data):
                for kind in ("skipped (cannot be decoded)", "converted"):
                    for message in (part.issues.items.get(kind, []) if part else []):
                        self.issues.add(kind, message)
        in_memory = self.train_data.in_memory
        augment = r.augmentation(data.hflip)
        eig = (stats["eigval"], stats["eigvec"]) if stats else (None, None)
        self.train_pipeline = BatchPipeline(size, self.preprocess.mean, self.preprocess.std,
                                            augment, in_memory, *eig,
                                            num_classes=data.num_classes,
                                            channels_last=self.channels_last)
        self.train_loader = make_loader(
            self.train_data, r.batch_size, self.train_pipeline,
            transform=None if in_memory else file_transform(augment, size, r.crop_pct),
            device=self.device, shuffle=True, drop_last=True, seed=r.seed, workers=r.workers,
            strict=r.strict)
        if self.dist is not None:  # each process takes its slice of every global batch
            self.train_loader.shard(self.dist.rank, self.dist.world_size)
            if not self.dist.is_main:
                self.val_data = self.test_data = None
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError("no training batches")
        self.val_loader = self.eval_loader(self.val_data) if self.val_data else None

    # -- helpers -------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "run.log", "a") as f:
                f.write(message + "\n")

    def _enter_phase(self, epoch: int) -> None:
        """Fine-tuning: freeze or unfreeze for the phase of `epoch` and build its optimizer,
        one pair of groups per layer group with its rate as `lr_scale` of the top rate."""
        self.phase, groups = finetune.enter_phase(self.model, self.recipe, epoch)
        top = self.phase.lrs[1]
        self.optimizer = build_optimizer(self.model, self.recipe,
                                         [(g, rate / top) for _, g, rate in groups])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.log(f"fine-tuning, phase {self.phase.name} from epoch {epoch + 1}: "
                 f"{sum(p.numel() for p in self.params):,} trainable parameters")

    def request_stop(self) -> None:
        self._stop = True

    def _stopping(self) -> bool:
        """Whether to stop now: with several processes, what they all agreed at the last
        check of the loss, so that none is left waiting for the others."""
        return self._stop if self.dist is None else self._stop_agreed

    def _ddp_model(self) -> nn.Module:
        """The model under DistributedDataParallel (built again when fine-tuning changes
        which parameters train), compiled on top when compiling."""
        wrapped = self.dist.wrap(self.model)
        if wrapped is not getattr(self, "_ddp_wrapped", None):
            self._ddp_wrapped = wrapped
            self.train_model = torch.compile(wrapped) if self.compile else wrapped
        return self.train_model

    def eval_loader(self, data: ImageData, batch_size: int | None = None):
        pipeline = BatchPipeline(self.image_size, self.preprocess.mean, self.preprocess.std,
                                 None, data.in_memory, channels_last=self.channels_last)
        transform = None if data.in_memory else eval_transform(self.image_size,
                                                               self.recipe.crop_pct)
        return make_loader(data, batch_size or 2 * self.recipe.batch_size, pipeline,
                           transform=transform, device=self.device, shuffle=False,
                           drop_last=False, seed=self.recipe.seed, workers=self.recipe.workers,
                           strict=self.recipe.strict)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def evaluate(self, data: ImageData | None = None) -> Metrics:
        """Metrics of the current (EMA) weights on `data` (default: the validation split)."""
        loader = self.eval_loader(data) if data is not None else self.val_loader
        if loader is None:
            raise ValueError("no validation data (val_fraction is 0)")
        m = run_eval(self.eval_model, loader, self.data.num_classes, self.data.classes,
                     self.device, self.amp)
        if data is not None:
            self._extra_loaders.append(loader)
        return m

    def info(self) -> dict[str, Any]:
        """What inference needs to rebuild and use the model (stored with the weights)."""
        return {"model": self.model_name, "model_kwargs": self.model_kwargs,
                "classes": self.data.classes, "preprocess": self.preprocess.as_dict(),
                "dataset": self.data_spec, "epoch": self.epoch, "step": self.step,
                "ema": self.ema is not None, "recipe": self.recipe.to_dict()}

    # -- checkpoints ---------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors, opt_meta = ckpt.split_optimizer_state(self.optimizer.state_dict())
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        state = {
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps, "train_time": self.train_time,
            "model": {"name": self.model_name, "kwargs": self.model_kwargs},
            "classes": self.data.classes, "preprocess": self.preprocess.as_dict(),
            "recipe": self.recipe.to_dict(), "data": self.split_info,
            "optimizer": opt_meta,
            "schedule": {"kind": self.schedule.kind, "total": self.schedule.total,
                         "step": self.step},
            "rng": {**ckpt.rng_states(), "augment": self.train_loader.rng_state()},
            "partial_epoch": self._partial, "history": self.history, "best": self.best,
            "issues": self.issues.as_dict(), "torch": torch.__version__,
        }
        return state, tensors

    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        state, tensors = self._state()
        ckpt.save_checkpoint(self.run_dir, state, unwrap(self.model).state_dict(), tensors)

    def _restore(self, weights: dict[str, torch.Tensor], train: dict[str, torch.Tensor]) -> None:
        s = self.resume_state
        self.model.load_state_dict(weights)
        if self.recipe.fine_tune:  # the optimizer of the phase the checkpoint was written in
            self._enter_phase(s["epoch"])
        self.optimizer.load_state_dict(ckpt.join_optimizer_state(train, s["optimizer"]))
        if self.ema is not None:
            self.ema.module.load_state_dict(
                {k[4:]: v for k, v in train.items() if k.startswith("ema.")})
        self.epoch, self.step = s["epoch"], s["step"]
        self.batch_in_epoch = s["batch_in_epoch"]
        self.train_time = s["train_time"]
        self.history, self.best = s["history"], s["best"]
        self._partial = s.get("partial_epoch")
        self._resume_rng = s["rng"]
        where = (f"epoch {self.epoch + 1}, batch {self.batch_in_epoch}" if self.batch_in_epoch
                 else f"the end of epoch {self.epoch}")
        self.log(f"resuming {self.run_dir} at {where} (step {self.step} of "
                 f"{self.total_steps})")

    def _save_outputs(self, metric: float | None) -> None:
        if self.run_dir is None:
            return
        info = self.info()
        weights = unwrap(self.eval_model).state_dict()
        ckpt.save_model(self.run_dir / ckpt.MODEL_FILE, weights, info)
        if metric is not None and (self.best is None or metric > self.best["val_top1"]):
            self.best = {"epoch": self.epoch, "step": self.step, "val_top1": metric}
            ckpt.save_model(self.run_dir / ckpt.BEST_FILE, weights, info)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> FitResult:
        r = self.recipe
        if self.resume_state is None:
            self.log(f"training {self.model_name or type(self.model).__name__} on "
                     f"{self.train_data.describe()}")
            self.log(f"  {len(self.train_data):,} train / "
                     f"{len(self.val_data) if self.val_data else 0:,} val images, "
                     f"{self.image_size} px, batch {r.batch_size}, {r.total_epochs} epochs of "
                     f"{self.steps_per_epoch} steps, {r.optimizer} lr {r.peak_lr:g} "
                     f"({r.schedule}), augment {r.augment}, device {self.device}"
                     + "".join(f", {name}" for name, on in (
                         ("bf16", self.amp), ("channels_last", self.channels_last),
                         ("compiled", self.compile)) if on))
            for line in self.data.issues.summary():
                self.log(f"  data: {line}")
            if self.dist is not None:
                self.log(f"  {self.dist.describe()}: each takes "
                         f"{r.batch_size // self.dist.world_size} of every batch of "
                         f"{r.batch_size}" + (", batch norm synchronised" if r.sync_bn else ""))
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                r.to_yaml(self.run_dir / "recipe.yaml")
        writer = self._tensorboard()
        with self._signals():
            while self.epoch < r.total_epochs:
                row = None if self._stopping() else self._train_epoch()
                if row is None:  # stopped mid-epoch, or between two epochs
                    self.save_checkpoint()
                    msg = (f"stopped at step {self.step} (epoch {self.epoch + 1}, batch "
                           f"{self.batch_in_epoch})")
                    if self.run_dir is not None:
                        msg += f"; checkpoint saved: resume with --resume {self.run_dir}"
                    self.log(msg)
                    raise TrainingInterrupted(msg, self.run_dir)
                if writer is not None:
                    for k, v in row.items():
                        if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                            writer.add_scalar(k, v, row["epoch"])
                    writer.flush()
                for cb in self.callbacks:
                    if hasattr(cb, "on_epoch_end"):
                        cb.on_epoch_end(self, row)
        if writer is not None:
            writer.close()
        test = None
        if self.test_data is not None:
            test = self.evaluate(self.test_data)
            self.log(f"test: loss {test.loss:.4f}  top-1 {test.top1:.2%}"
                     + (f"  top-5 {test.top5:.2%}" if test.top5 is not None else "")
                     + f"  ({test.n:,} images)")
            if self.run_dir is not None:
                write_atomic(self.run_dir / "test_metrics.json",
                                  json.dumps(test.as_dict(), indent=1))
        issues = self.issues_now()
        if issues:
            self.log("data problems met during the run:")
            for line in issues.summary():
                self.log(f"  {line}")
        if self.dist is not None:  # the others wait for rank 0's evaluation, then all end
            self.dist.barrier()
        return FitResult(self.eval_model, self.history, self.run_dir, self.info(), self.best,
                         test, issues)

    def issues_now(self) -> Issues:
        """Problems of the data so far: at load, and files skipped or converted by loaders."""
        out = Issues()
        out.extend(self.issues)
        for loader in (self.train_loader, self.val_loader, *self._extra_loaders):
            if loader is not None:
                out.extend(loader.issues)
        return out

    def _train_epoch(self) -> dict[str, Any] | None:
        r, e = self.recipe, self.epoch
        partial = self._partial if self.batch_in_epoch else None
        if self.progressive is not None:  # this epoch's image size and regularisation
            progressive.apply(self, e)
        if partial is not None:
            self.train_loader.set_epoch(e, self.batch_in_epoch, self._resume_rng["augment"])
            ckpt.set_rng_states(self._resume_rng)
        else:
            self.batch_in_epoch = 0
            self.train_loader.set_epoch(e)
            torch.manual_seed(epoch_seed(r.seed, e, 3) + (self.dist.rank if self.dist else 0))
        acc = partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "data_time": 0.0,
                          "elapsed": 0.0, "skipped": 0}
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, data_time, elapsed = 0, 0.0, 0.0
        window: list[tuple[int, torch.Tensor]] = []
        check_every = 1 if self.device.type == "cpu" else 16
        bar = ProgressBar(self.steps_per_epoch, f"epoch {e + 1}/{r.total_epochs}",
                          enabled=r.progress and self.verbose)
        bar.count = self.batch_in_epoch
        model = self.train_model if self.dist is None else self._ddp_model()
        model.train()
        it = iter(self.train_loader)
        t_last = time.perf_counter()
        while True:
            try:
                x, y, labels = next(it)
            except StopIteration:
                break
            t_data = time.perf_counter()
            data_time += t_data - t_last
            lr = self.schedule.apply(self.optimizer, self.step)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                output = model(x)
            if self.distiller is not None:  # the teacher sees this same augmented batch
                loss, logits = self.distiller.loss(output, y, x, self.model, r.label_smoothing)
            else:
                loss, logits = classification_loss(output, y, self.model, r.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if r.clip_grad:
                nn.utils.clip_grad_norm_(self.params, r.clip_grad)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, self.step)
            window.append((self.step, loss.detach()))
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(labels)
                correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            self.step += 1
            self.batch_in_epoch += 1
            if len(window) >= check_every or self.batch_in_epoch == self.steps_per_epoch:
                self._check_finite(window, lr)
                window = []
            now = time.perf_counter()
            elapsed += now - t_last
            t_last = now
            if bar.enabled:
                bar.update(1, len(labels),
                           lambda loss=loss, lr=lr: f"loss {loss.item():.4f} lr {lr:.3g}")
            for cb in self.callbacks:
                if hasattr(cb, "on_step_end"):
                    cb.on_step_end(self)
            if self._stopping() and self.batch_in_epoch < self.steps_per_epoch:
                self._check_finite(window, lr)
                self._partial = {
                    "loss_sum": acc["loss_sum"] + float(loss_sum), "seen": acc["seen"] + seen,
                    "correct": acc["correct"] + int(correct),
                    "data_time": acc["data_time"] + data_time,
                    "elapsed": acc["elapsed"] + elapsed, "skipped": 0}
                self.train_time += elapsed
                bar.close()
                return None
        bar.close()
        if self.dist is not None:  # the global batch's loss and accuracy, not one slice's
            sums = self.dist.sum(torch.stack([loss_sum.double(), correct.double(),
                                              torch.tensor(seen, dtype=torch.float64,
                                                           device=loss_sum.device)]))
            loss_sum, correct, seen = sums[0], sums[1].long(), int(sums[2])
        self._partial = None
        self.batch_in_epoch = 0
        self.epoch += 1
        if (r.fine_tune and self.epoch < r.total_epochs
                and finetune.phase_at(r, self.epoch).name != self.phase.name):
            # Phase 2 starts: unfreeze, and a new optimizer with the spread rates; the
            # checkpoint below holds it, so a resumed run continues in phase 2.
            self._enter_phase(self.epoch)
        self.train_time += elapsed
        total_seen = acc["seen"] + seen
        epoch_time = acc["elapsed"] + elapsed
        row: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step, "lr": self.schedule(self.step - 1)[0],
            "train_loss": (acc["loss_sum"] + float(loss_sum)) / max(total_seen, 1),
            "train_top1": (acc["correct"] + int(correct)) / max(total_seen, 1),
        }
        t0 = time.perf_counter()
        if self.val_loader is not None:
            m = self.evaluate()
            row.update(val_loss=m.loss, val_top1=m.top1)
            if m.top5 is not None:
                row["val_top5"] = m.top5
        row.update(epoch_time=epoch_time, eval_time=time.perf_counter() - t0,
                   train_time=self.train_time,
                   images_per_s=total_seen / epoch_time if epoch_time else None,
                   data_frac=(acc["data_time"] + data_time) / epoch_time if epoch_time else None,
                   skipped=len(getattr(self.train_loader, "skipped", {})))
        self.history.append(row)
        self._save_outputs(row.get("val_top1"))
        self.save_checkpoint()
        if self.run_dir is not None:
            _write_metrics(self.run_dir, self.history)
        self.log(self._epoch_line(row))
        return row

    def _check_finite(self, window: list[tuple[int, torch.Tensor]], lr: float) -> None:
        if not window:
            return
        values = torch.stack([v for _, v in window]).float().cpu()
        if self.dist is not None:  # a NaN anywhere, or a stop asked anywhere, is everyone's
            values, self._stop_agreed = self.dist.check(values, self._stop)
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            step = window[int(bad[0])][0]
            kept = (f"the last good checkpoint (epoch {self.history[-1]['epoch']}) is kept in "
                    f"{self.run_dir}" if self.history and self.run_dir is not None
                    else "no checkpoint was written before it")
            msg = (f"the loss became {values[int(bad[0])].item()} at step {step} (epoch "
                   f"{self.epoch + 1}, batch {step - self.epoch * self.steps_per_epoch + 1}, "
                   f"lr {lr:.3g}); training stopped and {kept}. Lower the learning rate, add "
                   "warm-up, or clip gradients (clip_grad: 1.0)")
            self.log(msg)
            raise TrainingDiverged(msg)

    def _epoch_line(self, row: dict[str, Any]) -> str:
        parts = [f"epoch {row['epoch']}/{self.recipe.total_epochs}",
                 f"train loss {row['train_loss']:.4f} acc {row['train_top1']:.2%}"]
        if "val_top1" in row:
            parts.append(f"val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2%}"
                         + (f" top-5 {row['val_top5']:.2%}" if "val_top5" in row else ""))
        parts.append(f"{fmt_time(row['epoch_time'])} ({row['images_per_s']:,.0f} img/s, "
                     f"data {row['data_frac']:.0%})")
        if row.get("skipped"):
            parts.append(f"{row['skipped']} files skipped")
        return "  ".join(parts)

    def _tensorboard(self):
        if not self.recipe.tensorboard or self.run_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.log("note: tensorboard is not installed (pip install tensorboard); metrics "
                     "are in metrics.jsonl and metrics.csv")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    @contextlib.contextmanager
    def _signals(self):
        """SIGINT and SIGTERM finish the current step, save a checkpoint and stop; a second
        SIGINT stops at once."""
        if (self.run_dir is None and self.dist is None) or \
                threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._stop and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop = True
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
                  "(Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

        for s in previous:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def fit(model: nn.Module | str | None, data: ImageData | str, recipe: Recipe | str | None = None,
        **kwargs: Any) -> FitResult:
    """Train `model` (a registered name or a module) on `data` (an ImageData or a dataset
    spec) with `recipe` (a Recipe, a preset name or a YAML path).

    Keyword arguments: val_data, test_data, run_dir (checkpoints and metrics go there;
    None keeps everything in memory), resume (continue the run in run_dir), callbacks,
    verbose, root (where named datasets are looked for), teacher (a module to distil
    from, when the recipe's distill is on). Returns a FitResult with the
    trained model, the per-epoch history and the test metrics when there is a test split.
    """
    threads = torch.get_num_threads()
    try:
        return Trainer(model, data, recipe, **kwargs).run()
    finally:
        torch.set_num_threads(threads)  # a recipe's `threads` holds for its run only
