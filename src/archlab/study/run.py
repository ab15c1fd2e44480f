"""One run of a study: train (or fit the classical baseline), evaluate and measure one
claimed (architecture, seed) pair, and record it.

Each run is measured the same way: top-1/top-5 on the test split, with and without
test-time augmentation; training time (the trainer's, without evaluation); parameters and
MACs at the run's input size (counted on the meta device); inference throughput at a fixed
batch; peak memory (the CUDA allocator's peak on a GPU, the process's peak resident memory
on a CPU, reset for every run on Linux).

With them the run's `result` keeps what a paired comparison of two runs needs: the class
each test image was given, with and without test-time augmentation (study/predictions.py),
the fingerprint of the test set they were judged on, and the learning curve per step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archlab.analysis import profile
from archlab.analysis.speed import device_defaults, has_bf16_units
from archlab.study.data import DataCache
from archlab.study.entry import ModelEntry, card_of
from archlab.study.lease import Heartbeat, LeaseLost, RunWatch, budget_spent
from archlab.study.measure import PeakMemory, measure_throughput
from archlab.study.measures import RunMeasures
from archlab.study.predictions import encode_predictions
from archlab.study.protocol import Protocol
from archlab.study.schema import Run
from archlab.study.store import DEFAULT_LEASE_S, Store


@dataclass
class RunContext:
    """What every run of one process shares: the protocol, the study, the data."""

    protocol: Protocol
    store: Store
    study_dir: Path
    worker: str
    device: str | None
    data: DataCache
    verbose: bool = True
    progress: bool = True
    lease_s: float = DEFAULT_LEASE_S


@dataclass
class Trained:
    """A network after its training (or what the run budget let it finish)."""

    model: torch.nn.Module
    info: dict[str, Any]
    history: list[dict[str, Any]]
    best: Any
    note: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)  # the learning curve per step


def execute_run(run: Run, ctx: RunContext) -> RunMeasures:
    """Train, evaluate and measure one claimed run; record it. Returns its measures."""
    protocol = ctx.protocol
    entry = ModelEntry(**{k: v for k, v in run.entry.items() if k != "path"})
    spec = next((r for r in protocol.runs() if r.key == run.key), None)
    dir_name = spec.dir_name if spec is not None else f"{entry.label}-s{run.seed}-{run.key[:8]}"
    rel_dir = f"runs/{dir_name}"
    run_dir = ctx.study_dir / rel_dir
    ctx.store.set_run_dir(run.key, ctx.worker, rel_dir)
    train, test = ctx.data.get(protocol)
    judged_on = {"fingerprint": test.fingerprint(), "images": len(test)}
    interval = max(1.0, min(30.0, ctx.lease_s / 4))
    heartbeat = Heartbeat(ctx.store, run.key, ctx.worker, interval)
    heartbeat.start()
    t0 = time.perf_counter()
    try:
        if entry.classical:
            measures, history, result = _run_classical(entry, run, protocol, train, test,
                                                       run_dir, ctx)
        else:
            measures, history, result = _run_network(entry, run, protocol, train, test,
                                                     run_dir, ctx, heartbeat)
    finally:
        heartbeat.stop()
    measures.wall_time = time.perf_counter() - t0
    result["family"] = card_of(entry.name).family
    result["test_fingerprint"] = judged_on
    if not ctx.store.finish(run.key, ctx.worker, measures.as_dict(), history, result):
        raise LeaseLost(f"{entry.label} seed {run.seed} was finished by another worker")
    return measures


def _train_network(entry: ModelEntry, run: Run, protocol: Protocol, train, run_dir: Path,
                   ctx: RunContext, heartbeat: Heartbeat, recipe, device) -> Trained:
    """Train (or resume) the run's network; a run the budget stopped keeps what it has."""
    from archlab.train import (TrainingInterrupted, fit, has_checkpoint, load_checkpoint,
                               load_trained)

    watch = RunWatch(ctx.store, run.key, ctx.worker, heartbeat, protocol.run_budget)
    resume = has_checkpoint(run_dir)
    if resume and budget_spent(run_dir, protocol.run_budget):
        model, info = load_trained(run_dir, device)
        state = load_checkpoint(run_dir)[0]
        history = state["history"]
        return Trained(model, info, history, state.get("best"),
                       f"stopped by the run budget after epoch {len(history)} of "
                       f"{recipe.epochs}", state.get("steps", []))
    # With log: [mlflow] in the protocol: one experiment per protocol, a run per pair.
    tracking = {"experiment": protocol.name, "tags": {
        "label": entry.label, "seed": run.seed, "protocol": protocol.name,
        "protocol_hash": protocol.hash, "run_key": run.key}}
    try:
        res = fit(entry.name, train, recipe, run_dir=run_dir, resume=resume,
                  callbacks=[watch], verbose=ctx.verbose, tracking=tracking)
        return Trained(res.model, res.info, res.history, res.best, steps=res.step_history)
    except TrainingInterrupted:
        if watch.lost:
            raise LeaseLost(f"{entry.label} seed {run.seed} was taken over by another "
                            "worker (heartbeat too old); leaving it to them") from None
        if not watch.over_budget:
            raise
        model, info = load_trained(run_dir, device)
        state = load_checkpoint(run_dir)[0]
        return Trained(model, info, watch.history, state.get("best"),
                       f"stopped by the run budget ({protocol.run_budget:g} s) after epoch "
                       f"{len(watch.history)} of {recipe.epochs}", state.get("steps", []))


def unmeasured_settings(recipe, device: torch.device) -> dict[str, Any]:
    """The speed settings a protocol leaves open, fixed by the device alone: a study compares
    under one deterministic protocol, so no timing may decide how a run computes (`archlab
    train` measures them instead): the device's defaults (speed.device_defaults), and on a
    GPU with bf16 units compiled too, a study's runs being long."""
    s = device_defaults(device, recipe.precision, recipe.channels_last)
    fixed: dict[str, Any] = {"precision": s.precision, "channels_last": s.channels_last}
    if recipe.compile is None:
        fixed["compile"] = device.type == "cuda" and has_bf16_units(device)
    return fixed


def _run_network(entry: ModelEntry, run: Run, protocol: Protocol, train, test, run_dir: Path,
                 ctx: RunContext, heartbeat: Heartbeat):
    from archlab.train import evaluate_tta, log_final_metrics, resolve_device, step_columns

    extra: dict[str, Any] = {"progress": ctx.progress}
    if ctx.device:
        extra["device"] = ctx.device
    recipe = protocol.recipe_for(entry, run.seed, **extra)
    device = resolve_device(ctx.device or recipe.device)
    recipe = recipe.replace(**unmeasured_settings(recipe, device))
    memory = PeakMemory(device)
    t = _train_network(entry, run, protocol, train, run_dir, ctx, heartbeat, recipe, device)
    train_peak = memory.read()
    pre = t.info["preprocess"]
    # The test pass and the throughput in the precision the run trained in.
    speed = t.info.get("speed", {})          # absent from runs written before it was kept
    precision = speed.get("precision", "fp32")
    metrics, tta = evaluate_tta(t.model, pre, test, protocol.tta, device,
                                batch_size=max(256, 2 * recipe.batch_size),
                                precision=precision, workers=recipe.workers)
    m = protocol.measure
    size = pre["image_size"]
    throughput = measure_throughput(t.model, (pre["in_chans"], size, size), device,
                                    int(m["throughput_batch"]), float(m["throughput_seconds"]),
                                    precision)
    kwargs = dict(t.info["model_kwargs"])
    in_chans = kwargs.pop("in_chans", pre["in_chans"])
    prof = profile(entry.name, img_size=size, in_chans=in_chans, device="meta",
                   model_kwargs=kwargs)
    last = t.history[-1] if t.history else {}
    measures = RunMeasures(
        epochs_done=len(t.history), train_time=last.get("train_time"), params=prof.params,
        macs=prof.macs, top1=metrics.top1, top5=metrics.top5,
        top1_tta=tta.top1 if tta else None, top5_tta=tta.top5 if tta else None,
        val_top1=last.get("val_top1"), test_loss=metrics.loss, throughput=throughput,
        peak_mem=train_peak, device=_device_name(device), note=t.note)
    log_final_metrics(run_dir, {"test_loss": metrics.loss, "test_top1": metrics.top1,
                                "test_top5": metrics.top5, "test_top1_tta": measures.top1_tta,
                                "test_top5_tta": measures.top5_tta, "throughput": throughput,
                                "params": prof.params, "macs": prof.macs, "peak_mem": train_peak})
    result = {
        "classes": metrics.classes, "confusion": metrics.confusion,
        "per_class": metrics.per_class,
        "confusion_tta": tta.confusion if tta else None, "tta_views": protocol.tta,
        "test_images": metrics.n, "train_images": len(train) and _train_count(train, recipe),
        "image_size": size, "in_chans": pre["in_chans"], "epochs_planned": recipe.epochs,
        "recipe": t.info.get("recipe"), "model_kwargs": t.info["model_kwargs"], "best": t.best,
        "peak_mem_kind": memory.kind if memory.per_run else f"{memory.kind} (process)",
        "throughput_batch": int(m["throughput_batch"]), "speed": speed,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "predictions": _predictions(test, metrics, tta), "steps": step_columns(t.steps),
    }
    return measures, t.history, result


def _predictions(test, metrics, tta=None) -> dict[str, Any]:
    """The encoded classes per test image, checked to be in the test set's order (eval
    loaders never shuffle; a file that could not be decoded leaves fewer predictions)."""
    if metrics.n == len(test) and not torch.equal(metrics.targets, test.targets.long()):
        raise RuntimeError("the test images were not evaluated in the test set's order: "
                           "their predictions cannot be paired with other runs'")
    return encode_predictions(metrics.targets, metrics.predictions,
                              tta.predictions if tta is not None else None)


def _train_count(train, recipe) -> int:
    from archlab.data import train_val_split

    idx, _ = train_val_split(train.targets, recipe.val_fraction, recipe.seed,
                             recipe.train_fraction)
    return len(idx)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _run_classical(entry: ModelEntry, run: Run, protocol: Protocol, train, test,
                   run_dir: Path, ctx: RunContext):
    import numpy as np

    from archlab.classical import create_classical
    from archlab.data import train_val_split
    from archlab.train import Meter

    recipe = protocol.recipe_for(entry, run.seed)
    memory = PeakMemory(torch.device("cpu"))
    kwargs = {"seed": run.seed, **entry.model_kwargs}
    clf = create_classical(entry.name, **kwargs)
    train_idx, val_idx = train_val_split(train.targets, recipe.val_fraction, recipe.seed,
                                         recipe.train_fraction)
    if not train.in_memory or not test.in_memory:
        size = recipe.image_size or clf.config.upscale
        train, test = train.to_memory(size), test.to_memory(size)
    tr = train.subset(train_idx)
    if ctx.verbose:
        print(f"training {entry.label} on {tr.describe()}", flush=True)
    t0 = time.perf_counter()
    clf.fit(tr.images, tr.targets.numpy(), classes=train.classes)
    train_time = time.perf_counter() - t0

    def scores(data) -> tuple[Any, Any]:
        meter = Meter(data.num_classes, keep_predictions=True)
        s = torch.from_numpy(np.ascontiguousarray(clf.decision_function(data.images)))
        meter.update(s, data.targets)
        return meter.result(data.classes), s

    row: dict[str, Any] = {"epoch": 1, "train_time": train_time, "epoch_time": train_time}
    if len(val_idx):
        val_m, _ = scores(train.subset(val_idx))
        row["val_top1"] = val_m.top1
    t1 = time.perf_counter()
    test_m, _ = scores(test)
    throughput = len(test) / (time.perf_counter() - t1)
    peak = memory.read()
    clf.save(run_dir / "sift-bovw.safetensors")
    if ctx.verbose:
        print(f"  {entry.label}: {clf.timings and ', '.join(f'{k} {v:.1f}s' for k, v in clf.timings.items())}"
              + (f"; val top-1 {row['val_top1']:.2%}" if "val_top1" in row else ""), flush=True)
    history = [row]
    measures = RunMeasures(
        epochs_done=1, train_time=train_time, params=clf.num_params, macs=None,
        top1=test_m.top1, top5=test_m.top5, top1_tta=None, top5_tta=None,
        val_top1=row.get("val_top1"), test_loss=None, throughput=throughput, peak_mem=peak,
        device="cpu (OpenCV, scikit-learn)",
        note="no test-time augmentation (not a network)" if protocol.tta else None)
    result = {
        "classes": test_m.classes, "confusion": test_m.confusion, "per_class": test_m.per_class,
        "tta_views": [], "test_images": test_m.n, "train_images": len(tr),
        "image_size": clf.config.upscale, "config": clf.config.__dict__,
        "timings": clf.timings, "peak_mem_kind": memory.kind, "epochs_planned": 1,
        "predictions": _predictions(test, test_m),
    }
    return measures, history, result


__all__ = ["RunContext", "execute_run"]
