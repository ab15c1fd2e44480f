"""The trainer: `fit(model, data, recipe)`.

One loop, readable top to bottom: batches from the data's loader, the loss from losses.py
(or a plugin's), the optimizer (train/optim.py), the schedule applied before every step,
gradient clipping, validation after every epoch, and then a checkpoint that loses nothing.
What the recipe adds on top (fine-tuning phases, progressive resizing, distillation, staged
deepening, an EMA of the weights) are plugins (train/plugin.py, chosen in train/plugins.py);
the loop only calls their hooks.

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

import json
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from archlab._io import write_atomic
from archlab.data import BatchPipeline, ImageData, Issues, epoch_seed, eval_transform, make_loader
from archlab.models.pretrained_cfg import cfg_from_run
from archlab.train import checkpoint as ckpt
from archlab.train import distributed, run_log, run_setup
from archlab.train.budget import TimeBudget
from archlab.train.device import resolve_device, run_settings, set_deterministic
from archlab.train.epoch import EpochRunner
from archlab.train.eval_loop import run_eval
from archlab.train.losses import classification_loss, unwrap
from archlab.train.metrics import Metrics
from archlab.train.optim import build_optimizer
from archlab.train.plugins import plugins_for
from archlab.train.recipe import Recipe
from archlab.train.schedules import Schedule
from archlab.train.signals import stop_on_signals
from archlab.train.step_curve import StepCurve, grad_norm_groups


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a checkpoint was written."""

    def __init__(self, message: str, run_dir: Path | None) -> None:
        super().__init__(message)
        self.run_dir = run_dir


@dataclass
class FitResult:
    model: nn.Module                  # the weights to use (the EMA when on)
    history: list[dict[str, Any]]
    run_dir: Path | None
    info: dict[str, Any]
    best: dict[str, Any] | None = None
    test: Metrics | None = None
    issues: Issues = field(default_factory=Issues)
    # every recipe.curve_every steps: {step, epoch (fractional), train_loss, train_error}
    step_history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Everything a run needs, set up once; `run()` trains. Use `fit()` for the one call.

    Callbacks are objects with any of `on_step_end(trainer)` and
    `on_epoch_end(trainer, row)` (or any other hook of train/plugin.py);
    `trainer.request_stop()` ends the run after the current step with a checkpoint, as
    SIGINT does. `plugins` are added to those the recipe asks for.
    """

    def __init__(self, model: nn.Module | str | None, data: ImageData | str | None,
                 recipe: Recipe | str | None = None, *, val_data: ImageData | None = None,
                 test_data: ImageData | str | None = None,
                 run_dir: str | Path | None = None, resume: bool = False,
                 callbacks: Sequence[Any] = (), verbose: bool = True,
                 root: str | Path | None = None, teacher: nn.Module | None = None,
                 plugins: Sequence[Any] = (), tracking: dict[str, Any] | None = None) -> None:
        created = TimeBudget.clock()      # a time budget counts from here (train/budget.py)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # Where the loggers file the run: {'experiment': name, 'tags': {...}} (a study's).
        self.tracking = dict(tracking or {})
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
            model, data, test_data, recipe, root = run_setup.resume_inputs(
                self, model, data, test_data, root)
        if data is None:
            raise ValueError("no data: pass a dataset or its spec ('fashion-mnist', a folder, "
                             "a CSV)")
        recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe or Recipe()
        model = model if model is not None else recipe.model
        if model is None:
            raise ValueError("no model: pass one, or name it in the recipe (model: resnet20)")
        self.recipe = r = recipe
        if r.threads:
            torch.set_num_threads(r.threads)
        self._setup_device()
        self.budget = self._time_budget(created)
        self.plugins = plugins_for(r, teacher) + list(plugins)

        run_setup.setup_data(self, data, val_data, test_data, root)
        net = run_setup.setup_model(self, model)
        stats = run_setup.setup_preprocess(self, net)
        net.to(self.device)
        self._choose_speed(net)
        run_setup.setup_loaders(self, stats)
        if self.dist is not None and r.sync_bn:
            net = distributed.convert_sync_batchnorm(net, self.device)
            net.to(self.device)
        # channels_last, and depthwise layers kept in fp32 under bf16 on a CPU (speed.py).
        replace(self.settings, compile=False).prepare(net, "train")
        self.model = net
        self.optimizer = build_optimizer(net, r)
        self.schedule = Schedule.from_recipe(r, self.steps_per_epoch)
        self.total_steps = r.total_epochs * self.steps_per_epoch
        self.notify("on_setup")               # may replace the optimizer and schedule
        self.train_model = torch.compile(net) if self.settings.compile else net
        self.params = [p for p in net.parameters() if p.requires_grad]

        self.epoch, self.step, self.batch_in_epoch = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.train_time = 0.0
        self._partial: dict[str, Any] | None = None
        self.grad_groups = grad_norm_groups(net, r.grad_norms)
        self.step_curve = StepCurve(r.curve_every, self.steps_per_epoch,
                                    [column for column, _ in self.grad_groups])
        if self.resume_state is not None:
            ckpt.restore_trainer(self, weights, train_tensors)

    def _setup_device(self) -> None:
        """The device, the process group under torchrun (rank 0 alone prints, writes and
        evaluates)."""
        r = self.recipe
        self.device = resolve_device(r.device)
        self.dist = distributed.setup(r.device)
        if self.dist is not None:
            self.device = self.dist.device
            if not self.dist.is_main:
                self.verbose, self.run_dir = False, None
        if self.device.type == "cuda":
            set_deterministic(r.deterministic)

    def _time_budget(self, created: float) -> TimeBudget | None:
        """The wall-time budget of a recipe with budget_minutes, resumed with the time the
        killed run had spent."""
        minutes = self.recipe.budget_minutes
        if minutes is None:
            return None
        if self.dist is not None:
            raise ValueError("budget_minutes with several processes: each one's clock would "
                             "end its run at a different step; set epochs instead")
        recorded = self.resume_state.get("budget") if self.resume_state else None
        if recorded:
            return TimeBudget.resumed(recorded, minutes, origin=created)
        return TimeBudget(minutes, origin=created)

    def _choose_speed(self, net: nn.Module) -> None:
        """The speed settings (train/device.py): the recipe's, the rest measured on a copy
        of `net` before the first step, or those recorded when a resumed run started."""
        r = self.recipe
        recorded = self.resume_state.get("speed") if self.resume_state else None
        run_steps = (None if self.budget is not None
                     else len(self.train_data) // r.batch_size * r.total_epochs)
        self.speed = run_settings(r, net, self.device, self.image_size,
                                  self.preprocess.in_chans, run_steps,
                                  several_processes=self.dist is not None, recorded=recorded)
        self.settings = self.speed.settings
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.settings.precision == "fp16")

    # -- the schedule's clock -----------------------------------------------------------
    def schedule_step(self) -> int:
        """The step the schedule is at: the step count, or under a time budget the share
        of the budget spent times the schedule's steps (train/budget.py)."""
        if self.budget is None:
            return self.step
        return min(int(self.budget.fraction() * self.schedule.total), self.schedule.total - 1)

    def finished(self) -> bool:
        """Whether the run has trained all it was asked: its epochs, or its time (at least
        one step, should choosing the speed settings have spent a tiny budget)."""
        if self.budget is not None:
            return self.step > 0 and self.budget.spent()
        return self.epoch >= self.recipe.total_epochs

    def off_the_clock(self):
        """A context whose time a budget does not count (a callback's own measurements)."""
        return self.budget.paused() if self.budget is not None else nullcontext()

    @property
    def epochs_label(self) -> str:
        """What follows an epoch's number: '/10', or the budget's seconds spent and all."""
        if self.budget is not None:
            return f" ({self.budget.elapsed():.0f} of {self.budget.seconds:.0f} s)"
        return f"/{self.recipe.total_epochs}"

    # -- hooks -----------------------------------------------------------------------------
    def notify(self, hook: str, *args: Any) -> None:
        """Call `hook(trainer, *args)` on every plugin, then every callback, that has it."""
        for obj in (*self.plugins, *self.callbacks):
            fn = getattr(obj, hook, None)
            if fn is not None:
                fn(self, *args)

    def plugin(self, kind: type) -> Any:
        """The plugin of class `kind`, or None."""
        return next((p for p in self.plugins if isinstance(p, kind)), None)

    def loss(self, output, target: torch.Tensor, x: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) of a batch: the first plugin's that gives one, else the
        classification loss (label smoothing, auxiliary heads, soft targets)."""
        for plugin in self.plugins:
            fn = getattr(plugin, "loss", None)
            out = fn(self, output, target, x) if fn is not None else None
            if out is not None:
                return out
        return classification_loss(output, target, self.model, self.recipe.label_smoothing)

    # -- helpers -------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "run.log", "a") as f:
                f.write(message + "\n")

    def request_stop(self) -> None:
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def stopping(self) -> bool:
        """Whether to stop now: with several processes, what they all agreed at the last
        check of the loss, so that none is left waiting for the others."""
        return self._stop if self.dist is None else self._stop_agreed

    def ddp_model(self) -> nn.Module:
        """The model to train: under DistributedDataParallel with several processes (built
        again when fine-tuning changes which parameters train), compiled when compiling."""
        if self.dist is None:
            return self.train_model
        wrapped = self.dist.wrap(self.model)
        if wrapped is not getattr(self, "_ddp_wrapped", None):
            self._ddp_wrapped = wrapped
            self.train_model = torch.compile(wrapped) if self.settings.compile else wrapped
        return self.train_model

    def eval_loader(self, data: ImageData, batch_size: int | None = None):
        pipeline = BatchPipeline(self.image_size, self.preprocess.mean, self.preprocess.std,
                                 None, data.in_memory, channels_last=self.settings.channels_last)
        transform = None if data.in_memory else eval_transform(self.image_size,
                                                               self.recipe.crop_pct)
        return make_loader(data, batch_size or 2 * self.recipe.batch_size, pipeline,
                           transform=transform, device=self.device, shuffle=False,
                           drop_last=False, seed=self.recipe.seed, workers=self.recipe.workers,
                           strict=self.recipe.strict)

    @property
    def eval_model(self) -> nn.Module:
        """The weights to evaluate and save: a plugin's (the EMA) or the trained ones."""
        for plugin in self.plugins:
            fn = getattr(plugin, "eval_model", None)
            model = fn(self) if fn is not None else None
            if model is not None:
                return model
        return self.model

    def evaluate(self, data: ImageData | None = None) -> Metrics:
        """Metrics of the current (EMA) weights on `data` (default: the validation split)."""
        loader = self.eval_loader(data) if data is not None else self.val_loader
        if loader is None:
            raise ValueError("no validation data (val_fraction is 0)")
        m = run_eval(self.eval_model, loader, self.data.num_classes, self.data.classes,
                     self.device, self.settings.precision)
        if data is not None:
            self._extra_loaders.append(loader)
        return m

    def info(self) -> dict[str, Any]:
        """What inference needs to rebuild and use the model (stored with the weights)."""
        return {"model": self.model_name, "model_kwargs": self.model_kwargs,
                "classes": self.data.classes, "preprocess": self.preprocess.as_dict(),
                "dataset": self.data_spec, "epoch": self.epoch, "step": self.step,
                "ema": self.eval_model is not self.model, "stem": self.stem,
                "recipe": self.recipe.to_dict(), "speed": self.speed.as_dict()}

    def save_checkpoint(self) -> None:
        if self.run_dir is not None:
            ckpt.save_trainer(self)

    def save_outputs(self, metric: float | None) -> None:
        """model.safetensors, and best.safetensors when `metric` is the best so far."""
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
            for line in run_log.summary_lines(self):
                self.log(line)
            if self.run_dir is not None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                r.to_yaml(self.run_dir / "recipe.yaml")
        try:
            self.notify("on_fit_start")
            if self.budget is not None:
                self.budget.begin()
            epochs = EpochRunner(self)
            with stop_on_signals(self, active=self.run_dir is not None or self.dist is not None):
                while not self.finished():
                    row = None if self.stopping() else epochs.run()
                    if row is None:  # stopped mid-epoch, or between two epochs
                        self._interrupted()
                    self.notify("on_epoch_end", row)
            result = self._finish()
        except BaseException as e:  # the loggers mark their runs, then it goes on up
            self.notify("on_fit_end", None,
                        "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
        self.notify("on_fit_end", result.test, "finished")
        return result

    def _interrupted(self) -> None:
        self.save_checkpoint()
        msg = (f"stopped at step {self.step} (epoch {self.epoch + 1}, batch "
               f"{self.batch_in_epoch})")
        if self.run_dir is not None:
            msg += f"; checkpoint saved: resume with --resume {self.run_dir}"
        self.log(msg)
        raise TrainingInterrupted(msg, self.run_dir)

    def _finish(self) -> FitResult:
        test = None
        if self.test_data is not None:
            test = self.evaluate(self.test_data)
            self.log(run_log.held_out_line(test))
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
        info = self.info()
        # The model that leaves carries the run's preprocessing, not its card's.
        unwrap(self.eval_model).pretrained_cfg = cfg_from_run(info)
        return FitResult(self.eval_model, self.history, self.run_dir, info, self.best,
                         test, issues, list(self.step_curve.rows))

    def issues_now(self) -> Issues:
        """Problems of the data so far: at load, and files skipped or converted by loaders."""
        out = Issues()
        out.extend(self.issues)
        for loader in (self.train_loader, self.val_loader, *self._extra_loaders):
            if loader is not None:
                out.extend(loader.issues)
        return out

    def check_finite(self, window: list[tuple], lr: float) -> None:
        """Read `window` [(step, loss, images right, images, gradient norms or None)] from
        the device in one go (the loop's only wait for it); stop, naming the step, when a
        loss is not finite, else add the steps to the step curve (this process's images
        under torchrun)."""
        if not window:
            return
        rows = [torch.stack([w[1] for w in window]).float(),
                torch.stack([w[2] for w in window]).float()]
        if self.grad_groups:    # (steps, groups) -> one row per group
            rows += list(torch.stack([w[4] for w in window]).float().T)
        read = torch.stack(rows).cpu()
        values = read[0]
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
        extras = read[2:].T.tolist() if self.grad_groups else None
        self.step_curve.add([w[0] for w in window], read[0].tolist(), read[1].tolist(),
                            [w[3] for w in window], extras)

    def reseed(self, epoch: int) -> None:
        """The global RNG (dropout, drop-path) of a fresh epoch: (seed, epoch, rank)."""
        torch.manual_seed(epoch_seed(self.recipe.seed, epoch, 3)
                          + (self.dist.rank if self.dist else 0))


def fit(model: nn.Module | str | None, data: ImageData | str, recipe: Recipe | str | None = None,
        **kwargs: Any) -> FitResult:
    """Train `model` (a registered name or a module) on `data` (an ImageData or a dataset
    spec) with `recipe` (a Recipe, a preset name or a YAML path).

    Keyword arguments: val_data, test_data, run_dir (checkpoints and metrics go there;
    None keeps everything in memory), resume (continue the run in run_dir), callbacks,
    plugins, verbose, root (where named datasets are looked for), teacher (a module to
    distil from, when the recipe's distill is on), tracking (for the recipe's MLflow
    logger: {'experiment': name, 'tags': {name: value}}). Returns a FitResult with the
    trained model, the per-epoch history and the test metrics when there is a test split.
    """
    threads = torch.get_num_threads()
    try:
        return Trainer(model, data, recipe, **kwargs).run()
    finally:
        torch.set_num_threads(threads)  # a recipe's `threads` holds for its run only
