"""Running a study: every (architecture, seed) pair of a protocol, recorded in the study
database, resumable, shareable between workers.

    archlab compare                         # quick-tour on Fashion-MNIST
    archlab compare cifar10 --seeds 0 1 2   # a preset, three seeds
    archlab compare my.yaml --db postgresql://lab@db/studies     # then, on other machines:
    archlab compare --worker --db postgresql://lab@db/studies --study /shared/my

A study is a directory (default `studies/<protocol name>`) holding the SQLite database
(`study.db`, unless --db names a PostgreSQL server), one run directory per run (the
trainer's checkpoints and metrics), the report and its CSV. Running the same command again
resumes: finished runs are skipped, an interrupted one continues from its checkpoint.

Each run is measured the same way: top-1/top-5 on the test split, with and without
test-time augmentation; training time (the trainer's, without evaluation); parameters and
MACs at the run's input size (counted on the meta device); inference throughput at a fixed
batch; peak memory (the CUDA allocator's peak on a GPU, the process's peak resident memory
on a CPU, reset for every run on Linux).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from archlab._io import write_atomic
from archlab._text import fmt_time
from archlab.study.protocol import ModelEntry, Protocol, load_protocol, parse_protocol
from archlab.study.store import (DEFAULT_LEASE_S, Run, Store, StoreError, is_url, open_store,
                                 worker_name, _redact)

STUDIES_DIR = Path("studies")
DB_FILE = "study.db"
STUDY_FILE = "study.json"     # where a study kept in PostgreSQL says so


class LeaseLost(RuntimeError):
    """Another worker took this run over (our heartbeat was too old)."""


# --------------------------------------------------------------------------------------
# Where a study lives
# --------------------------------------------------------------------------------------


def resolve_study(study: str | os.PathLike | None, db: str | None,
                  protocol_name: str | None) -> tuple[Path, str]:
    """(study directory, database spec). The directory defaults to studies/<protocol>; the
    database to its study.db, or to the PostgreSQL URL a study.json there names."""
    if study is None and db is not None and not is_url(db):
        study = Path(db).parent
    if study is None:
        if protocol_name is None:
            raise ValueError("which study? give --study DIR (or --db URL)")
        study = STUDIES_DIR / protocol_name
    study_dir = Path(study)
    if db is None:
        info = study_dir / STUDY_FILE
        if info.is_file():
            import json

            db = json.loads(info.read_text()).get("db")
        db = db or str(study_dir / DB_FILE)
    return study_dir, db


def _remember_db(study_dir: Path, db: str) -> None:
    """A PostgreSQL study leaves its URL (without password) in study.json, so that
    `archlab report DIR` finds the database."""
    if not is_url(db):
        return
    import json

    write_atomic(study_dir / STUDY_FILE, json.dumps({"db": _redact(db).replace(":***@", "@")},
                                                    indent=1))


def open_study(study: str | os.PathLike, db: str | None = None) -> tuple[Path, Store]:
    """(directory, store) of an existing study: a directory, a study.db file or a URL."""
    spec = str(study)
    if is_url(spec):
        return Path("."), open_store(spec)
    path = Path(spec)
    if path.is_file():
        return path.parent, open_store(path)
    study_dir, db_spec = resolve_study(path, db, None)
    if not is_url(db_spec) and not Path(db_spec).is_file():
        raise FileNotFoundError(f"{study_dir} holds no study ({DB_FILE} not found); run "
                                "`archlab compare` first, or give the study's --db")
    return study_dir, open_store(db_spec)


# --------------------------------------------------------------------------------------
# Data, loaded once per process
# --------------------------------------------------------------------------------------


class DataCache:
    """The train and test sets of a protocol, loaded once for all its runs."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root
        self._cache: dict[tuple, tuple] = {}

    def get(self, protocol: Protocol):
        from archlab.data import dataset_splits, load_dataset
        from archlab.data.split import stratified_split

        d = protocol.data
        spec = d.get("dataset")
        key = (spec, d.get("root") or self.root, d.get("image_size"), d.get("in_chans"),
               d.get("test_fraction"), d.get("holdout"))
        if key in self._cache:
            return self._cache[key]
        root = d.get("root") or self.root
        kw = dict(root=root, in_chans=d.get("in_chans"))
        size = d.get("image_size")
        if "test" in dataset_splits(spec):
            train = load_dataset(spec, "train", image_size=size, **kw)
            test = load_dataset(spec, "test", image_size=size, classes=train.classes,
                                **{**kw, "in_chans": train.in_chans})
        else:
            # One split only (a plain folder, a CSV): a fixed stratified share is the test
            # set of every run, whatever its seed.
            full = load_dataset(spec, "all", image_size=size, **kw)
            held, rest = stratified_split(full.targets, d.get("holdout") or 0.2, seed=0)
            train, test = full.subset(rest), full.subset(held)
            test.split = "holdout"
        frac = d.get("test_fraction")
        if frac is not None and frac < 1:
            held, _ = stratified_split(test.targets, frac, seed=0)
            test = test.subset(held)
        self._cache[key] = (train, test)
        return train, test


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory of one run: the CUDA allocator's peak on a GPU; on a CPU the process's
    peak resident set (VmHWM), which Linux lets us reset for every run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda-allocated" if device.type == "cuda" else "rss"
        self.per_run = True
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.per_run = False   # the process's peak so far, not this run's

    def read(self) -> int | None:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)


@torch.no_grad()
def measure_throughput(model: torch.nn.Module, input_shape: tuple[int, ...],
                       device: torch.device, batch_size: int = 256, seconds: float = 2.0,
                       amp: bool = False) -> float:
    """Inference images per second at `batch_size` (after one warm-up batch)."""
    from archlab.train.losses import split_output

    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            split_output(model(x))
            sync()
            n, t0 = 0, time.perf_counter()
            while True:
                split_output(model(x))
                n += 1
                sync()
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds or (n >= 2 and elapsed >= seconds / 4 and n >= 10):
                    break
                if n >= 2 and elapsed * (n + 1) / n > 4 * seconds:
                    break
    finally:
        model.train(was_training)
    return n * batch_size / elapsed


# --------------------------------------------------------------------------------------
# Watching a run: heartbeat, lease, per-epoch records, the time budget
# --------------------------------------------------------------------------------------


class Heartbeat(threading.Thread):
    """Refreshes the run's lease every `interval` seconds on its own connection; sets
    `lost` when the run is no longer this worker's."""

    def __init__(self, store: Store, key: str, worker: str, interval: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{key[:8]}")
        self.store, self.key, self.worker, self.interval = store, key, worker, interval
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            store = self.store.clone()
        except Exception:  # noqa: BLE001 - the main connection still records epochs
            return
        try:
            while not self._halt.wait(self.interval):
                try:
                    ok = store.heartbeat(self.key, self.worker)
                except Exception:  # noqa: BLE001 - a passing database hiccup
                    continue
                if not ok:
                    self.lost.set()
                    return
        finally:
            store.close()

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)


class RunWatch:
    """Trainer callback: records each epoch in the study, stops the run when its lease was
    lost or when one more epoch would overrun the protocol's per-run time budget."""

    def __init__(self, store: Store, key: str, worker: str, heartbeat: Heartbeat,
                 budget_s: float | None) -> None:
        self.store, self.key, self.worker = store, key, worker
        self.heartbeat, self.budget_s = heartbeat, budget_s
        self.lost = False
        self.over_budget = False
        self.history: list[dict[str, Any]] = []

    def on_step_end(self, trainer) -> None:
        if self.heartbeat.lost.is_set() and not self.lost:
            self.lost = True
            trainer.request_stop()

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        self.history = list(trainer.history)
        if not self.store.record_history(self.key, self.worker, self.history):
            self.lost = True
            trainer.request_stop()
            return
        if self.budget_s and trainer.epoch < trainer.recipe.epochs:
            per_epoch = trainer.train_time / max(trainer.epoch, 1)
            if trainer.train_time + per_epoch > self.budget_s:
                self.over_budget = True
                trainer.request_stop()


def _budget_spent(run_dir: Path, budget_s: float | None) -> bool:
    """A run stopped by the budget whose result was never recorded: no more training."""
    if not budget_s:
        return False
    import json

    try:
        state = json.loads((run_dir / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return False
    epochs = state.get("epoch") or 0
    if not epochs or state.get("batch_in_epoch"):
        return False
    t = state.get("train_time") or 0.0
    return t + t / epochs > budget_s and epochs < state["recipe"]["epochs"]


# --------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------


@dataclass
class RunContext:
    protocol: Protocol
    store: Store
    study_dir: Path
    worker: str
    device: str | None
    data: DataCache
    verbose: bool = True
    progress: bool = True
    lease_s: float = DEFAULT_LEASE_S


def _family(name: str) -> str:
    from archlab.classical import classical_card, is_classical
    from archlab.models import model_card

    return classical_card(name).family if is_classical(name) else model_card(name).family


def execute_run(run: Run, ctx: RunContext) -> dict[str, Any]:
    """Train, evaluate and measure one claimed run; record it. Returns the values."""
    protocol = ctx.protocol
    entry = ModelEntry(**{k: v for k, v in run.entry.items() if k != "path"})
    spec = next((r for r in protocol.runs() if r.key == run.key), None)
    dir_name = spec.dir_name if spec is not None else f"{entry.label}-s{run.seed}-{run.key[:8]}"
    rel_dir = f"runs/{dir_name}"
    run_dir = ctx.study_dir / rel_dir
    ctx.store.set_run_dir(run.key, ctx.worker, rel_dir)
    train, test = ctx.data.get(protocol)
    interval = max(1.0, min(30.0, ctx.lease_s / 4))
    heartbeat = Heartbeat(ctx.store, run.key, ctx.worker, interval)
    heartbeat.start()
    t0 = time.perf_counter()
    try:
        if entry.classical:
            values, history, result = _run_classical(entry, run, protocol, train, test, run_dir,
                                                     ctx)
        else:
            values, history, result = _run_network(entry, run, protocol, train, test, run_dir,
                                                   ctx, heartbeat)
    finally:
        heartbeat.stop()
    values["wall_time"] = time.perf_counter() - t0
    result["family"] = _family(entry.name)
    if not ctx.store.finish(run.key, ctx.worker, values, history, result):
        raise LeaseLost(f"{entry.label} seed {run.seed} was finished by another worker")
    return values


def _run_network(entry: ModelEntry, run: Run, protocol: Protocol, train, test, run_dir: Path,
                 ctx: RunContext, heartbeat: Heartbeat):
    from archlab.analysis.profile import profile
    from archlab.train import fit
    from archlab.train import checkpoint as ckpt
    from archlab.train.evaluate import evaluate_tta, load_trained
    from archlab.train.trainer import TrainingInterrupted, resolve_device

    extra: dict[str, Any] = {"progress": ctx.progress}
    if ctx.device:
        extra["device"] = ctx.device
    recipe = protocol.recipe_for(entry, run.seed, **extra)
    device = resolve_device(ctx.device or recipe.device)
    memory = PeakMemory(device)
    watch = RunWatch(ctx.store, run.key, ctx.worker, heartbeat, protocol.run_budget)
    resume = ckpt.has_checkpoint(run_dir)
    note = None
    if resume and _budget_spent(run_dir, protocol.run_budget):
        model, info = load_trained(run_dir, device)
        state = ckpt.load_checkpoint(run_dir)[0]
        history, best = state["history"], state.get("best")
        note = f"stopped by the run budget after epoch {len(history)} of {recipe.epochs}"
    else:
        try:
            res = fit(entry.name, train, recipe, run_dir=run_dir, resume=resume,
                      callbacks=[watch], verbose=ctx.verbose)
            model, info, history, best = res.model, res.info, res.history, res.best
        except TrainingInterrupted:
            if watch.lost:
                raise LeaseLost(f"{entry.label} seed {run.seed} was taken over by another "
                                "worker (heartbeat too old); leaving it to them") from None
            if not watch.over_budget:
                raise
            model, info = load_trained(run_dir, device)
            history = watch.history
            best = ckpt.load_checkpoint(run_dir)[0].get("best")
            note = (f"stopped by the run budget ({protocol.run_budget:g} s) after epoch "
                    f"{len(history)} of {recipe.epochs}")
    train_peak = memory.read()
    pre = info["preprocess"]
    amp = device.type == "cuda" if recipe.amp is None else recipe.amp
    metrics, tta = evaluate_tta(model, pre, test, protocol.tta, device,
                                batch_size=max(256, 2 * recipe.batch_size), amp=amp,
                                workers=recipe.workers)
    m = protocol.measure
    size = pre["image_size"]
    throughput = measure_throughput(model, (pre["in_chans"], size, size), device,
                                    int(m["throughput_batch"]), float(m["throughput_seconds"]),
                                    amp)
    kwargs = dict(info["model_kwargs"])
    in_chans = kwargs.pop("in_chans", pre["in_chans"])
    prof = profile(entry.name, img_size=size, in_chans=in_chans, device="meta", **kwargs)
    last = history[-1] if history else {}
    values = {
        "epochs_done": len(history), "train_time": last.get("train_time"),
        "params": prof.params, "macs": prof.macs, "top1": metrics.top1, "top5": metrics.top5,
        "top1_tta": tta.top1 if tta else None, "top5_tta": tta.top5 if tta else None,
        "val_top1": last.get("val_top1"), "test_loss": metrics.loss,
        "throughput": throughput, "peak_mem": train_peak, "device": _device_name(device),
        "note": note,
    }
    result = {
        "classes": metrics.classes, "confusion": metrics.confusion,
        "per_class": metrics.per_class,
        "confusion_tta": tta.confusion if tta else None, "tta_views": protocol.tta,
        "test_images": metrics.n, "train_images": len(train) and _train_count(history, train,
                                                                               recipe),
        "image_size": size, "in_chans": pre["in_chans"], "epochs_planned": recipe.epochs,
        "recipe": info.get("recipe"), "model_kwargs": info["model_kwargs"], "best": best,
        "peak_mem_kind": memory.kind if memory.per_run else f"{memory.kind} (process)",
        "throughput_batch": int(m["throughput_batch"]), "amp": amp,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    return values, history, result


def _train_count(history, train, recipe) -> int:
    from archlab.data.split import train_val_split

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
    from archlab.data.split import train_val_split
    from archlab.train.metrics import Meter

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
        meter = Meter(data.num_classes)
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
    values = {
        "epochs_done": 1, "train_time": train_time, "params": clf.num_params, "macs": None,
        "top1": test_m.top1, "top5": test_m.top5, "top1_tta": None, "top5_tta": None,
        "val_top1": row.get("val_top1"), "test_loss": None, "throughput": throughput,
        "peak_mem": peak, "device": "cpu (OpenCV, scikit-learn)",
        "note": "no test-time augmentation (not a network)" if protocol.tta else None,
    }
    result = {
        "classes": test_m.classes, "confusion": test_m.confusion, "per_class": test_m.per_class,
        "tta_views": [], "test_images": test_m.n, "train_images": len(tr),
        "image_size": clf.config.upscale, "config": clf.config.__dict__,
        "timings": clf.timings, "peak_mem_kind": memory.kind, "epochs_planned": 1,
    }
    return values, history, result


# --------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    study_dir: Path
    db: str
    protocol: Protocol | None
    runs: list[Run] = field(default_factory=list)
    report: Path | None = None
    done_here: int = 0
    failed_here: int = 0
    interrupted: bool = False


class _Printer:
    """Study-level progress: one line before and after each run, with an estimate of what
    is left from the cost (MACs x images) of the runs to go."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.enabled = total, enabled
        self.t0 = time.perf_counter()
        self.done_time = 0.0
        self.done_cost = 0.0

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def _estimate_cost(protocol: Protocol, entry: ModelEntry, train) -> float | None:
    """A relative cost of training one run: MACs per image x images seen (networks)."""
    if entry.classical:
        return None
    try:
        from archlab.analysis.profile import profile

        recipe = protocol.recipe_for(entry, 0)
        size = recipe.image_size or train.image_size or 224
        small = size <= 64 if recipe.small_input is None else recipe.small_input
        prof = profile(entry.name, img_size=size, in_chans=train.in_chans, device="meta",
                       num_classes=train.num_classes, small_input=small, **recipe.model_kwargs)
        images = len(train) * recipe.train_fraction * (1 - recipe.val_fraction) * recipe.epochs
        return 3.0 * prof.macs * images
    except Exception:  # noqa: BLE001 - only an estimate
        return None


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _local_worker(protocol: Protocol, study_dir: Path, db_spec: str, device: str | None,
                  root: str | None, lease_s: float, retry_failed: bool, threads: int,
                  log_path: Path) -> None:
    """The body of one local worker process: its output to its log, its share of the
    cores, then the same claim-and-train loop as `archlab compare --worker`."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)   # OpenCV's and liblinear's own messages too
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
    torch.set_num_threads(threads)
    install_sigterm()
    try:
        compare(protocol, study=study_dir, db=db_spec, worker=True, device=device, root=root,
                retry_failed=retry_failed, lease_s=lease_s, progress=False, report=False)
    except KeyboardInterrupt:
        sys.exit(130)


class _LocalWorkers:
    """`jobs` worker processes on this machine sharing one study, and the watch over them.

    The workers claim runs from the study database exactly as `archlab compare --worker`
    processes do (so no run is trained twice, and a killed one resumes); this process
    reads the database once a second and prints each run as it starts and ends."""

    def __init__(self, jobs: int, protocol: Protocol, study_dir: Path, db_spec: str,
                 device: str | None, root: str | None, lease_s: float,
                 retry_failed: bool) -> None:
        import multiprocessing

        self.threads = max(1, _cores() // jobs)
        log_dir = study_dir / "workers"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"worker-{i + 1}.log" for i in range(jobs)]
        context = multiprocessing.get_context("spawn")   # no forked torch thread pools
        saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
        # The BLAS libraries read their thread count once, when the child imports them.
        os.environ.update({k: str(self.threads) for k in _THREAD_VARIABLES})
        try:
            self.procs = []
            for log in self.logs:
                proc = context.Process(target=_local_worker, daemon=False, args=(
                    protocol, study_dir, db_spec, device, root, lease_s, retry_failed,
                    self.threads, log))
                proc.start()
                self.procs.append(proc)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def watch(self, store: Store, keys: list[str], todo: list[Run],
              costs: dict[str, float | None], total_cost: float, printer: "_Printer",
              result: StudyResult, budget: float | None, poll_s: float = 1.0) -> int:
        """Print the runs as the workers start and finish them, until every worker has
        exited; returns how many runs were started."""
        jobs = len(self.procs)
        printer.say(f"{jobs} workers, {self.threads} CPU thread{'s' * (self.threads > 1)} "
                    f"each; their logs: {self.logs[0].parent}")
        seen = {r.key: r.status for r in store.runs(keys=keys)}
        todo_keys = {r.key for r in todo}
        announced: set[str] = set()
        done_times: list[tuple[float | None, float]] = []
        while True:
            alive = [p for p in self.procs if p.is_alive()]
            if budget and printer.elapsed() > budget:
                break   # the loop after this says so, and stop() takes the runs back
            runs = store.runs(keys=keys)
            for r in runs:
                before, seen[r.key] = seen.get(r.key), r.status
                if r.status == before or r.key not in todo_keys or r.status == "pending":
                    continue
                if r.key not in announced:  # a short run may start and end between two looks
                    announced.add(r.key)
                    left = [q for q in runs if q.key in todo_keys
                            and q.status in ("pending", "running")]
                    printer.say(_run_header(len(announced), len(todo), r, printer.elapsed(),
                                            _eta(done_times, costs, left, total_cost, jobs)))
                if r.status == "done":
                    result.done_here += 1
                    if r.wall_time:
                        done_times.append((costs.get(r.label), r.wall_time))
                    printer.say(_run_line(r, {"top1": r.top1, "top1_tta": r.top1_tta,
                                              "train_time": r.train_time,
                                              "wall_time": r.wall_time}))
                elif r.status == "failed":
                    result.failed_here += 1
                    printer.say(f"  FAILED {r.label} (seed {r.seed}): {r.error}")
            if not alive:
                break
            time.sleep(poll_s)
        return len(announced)

    def stop(self, grace_s: float = 60.0) -> None:
        """Ask the workers that are still running to give their runs back (SIGTERM: the
        trainer checkpoints and the claim is released), and wait for them."""
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()


def compare(protocol: str | Path | Protocol | None = None, *, models: Iterable[str] | None = None,
            data: str | None = None, seeds: Iterable[int] | None = None,
            overrides: dict[str, Any] | None = None, study: str | Path | None = None,
            db: str | None = None, worker: bool = False, device: str | None = None,
            root: str | None = None, retry_failed: bool = False, lease_s: float = DEFAULT_LEASE_S,
            max_runs: int | None = None, verbose: bool = True, progress: bool = True,
            report: bool = True, out=None, jobs: int | None = None) -> StudyResult:
    """Run every (architecture, seed) pair of a protocol that is not done yet.

    protocol: a preset name (default 'quick-tour'), a YAML path or a Protocol; models,
        data, seeds, overrides change it (see `load_protocol`).
    study: the study directory (default studies/<protocol name>); db: a PostgreSQL URL or
        an SQLite path (default <study>/study.db).
    worker: join an existing study and work on whatever runs are left (all its protocols,
        or `protocol`'s), without writing the report.
    device: cpu, cuda, ... (default: the recipe's 'auto'); root: where named datasets are.
    retry_failed: run failed runs again; lease_s: seconds without a heartbeat after which a
        running run is taken over; max_runs: stop after this many runs (for tests).
    jobs: runs trained side by side (default: the protocol's `jobs`, else 1), each in a
        worker process of its own with its share of the CPU cores (torch threads = cores //
        jobs); this process then only watches them and reports, and their logs go to
        <study>/workers/. A worker that dies leaves its run to the others or to this
        process, which trains what is left at the end.
    Returns a StudyResult; writes <study>/report.html and results.csv unless report=False.
    """
    printer_out = out or sys.stdout
    if isinstance(protocol, Protocol):
        proto = protocol
    elif protocol is not None or not worker:
        proto = load_protocol(protocol, models=models, data=data, seeds=seeds,
                              overrides=overrides)
    else:
        proto = None
    study_dir, db_spec = resolve_study(study, db, proto.name if proto else None)
    study_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(db_spec)
    _remember_db(study_dir, db_spec)
    me = worker_name()
    data_cache = DataCache(root)
    result = StudyResult(study_dir, db_spec, proto)
    try:
        protocols: dict[str, Protocol] = {}
        if proto is not None:
            store.add_protocol(proto)
            if not worker:
                store.add_runs(proto.runs())
            protocols[proto.hash] = proto
        if worker and proto is None:
            for row in store.protocols():
                protocols[row["hash"]] = _protocol_from_row(row)
            if not protocols:
                raise StoreError(f"{_redact(db_spec)} holds no study yet: start it with "
                                 "`archlab compare PROTOCOL --study/--db ...` first")
        keys = [r.key for h in protocols for r in store.runs(h)]
        if proto is not None:
            # Only this protocol's current models and seeds, not runs of older lists.
            wanted = {r.key for r in proto.runs()}
            keys = [k for k in keys if k in wanted]
        all_runs = store.runs(keys=keys)
        todo = [r for r in all_runs if r.status != "done"
                and (retry_failed or r.status != "failed")]
        failed_before = [r for r in all_runs if r.status == "failed" and not retry_failed]
        printer = _Printer(len(todo), verbose)
        where = (f"PostgreSQL {_redact(db_spec)}" if is_url(db_spec) else f"SQLite {db_spec}")
        names = ", ".join(dict.fromkeys(r.label for r in all_runs))
        printer.say(f"study {study_dir}: {len(all_runs)} runs ({len(all_runs) - len(todo)} done"
                    f"{f', {len(failed_before)} failed (--retry-failed runs them again)' if failed_before else ''}"
                    f", {len(todo)} to do) in {where}")
        if proto is not None:
            printer.say(f"protocol {proto.name} [{proto.hash[:8]}] on {proto.dataset}: {names}; "
                        f"seeds {', '.join(map(str, proto.seeds))}")
        costs: dict[str, float | None] = {}
        if proto is not None and todo and verbose:
            try:
                train_data = data_cache.get(proto)[0]
            except Exception:  # noqa: BLE001 - the run itself will say what is wrong
                train_data = None
            for r in todo:
                if r.label not in costs and train_data is not None:
                    costs[r.label] = _estimate_cost(proto, ModelEntry(**{
                        k: v for k, v in r.entry.items() if k != "path"}), train_data)
        budget = proto.study_budget if proto else None
        done_times: list[tuple[float | None, float]] = []
        attempted: set[str] = set()
        n_done = 0
        total_cost = sum(costs.get(r.label) or 0.0 for r in todo)
        n_jobs = min(jobs or (proto.jobs if proto else 1), len(todo))
        if n_jobs > 1 and not worker and max_runs is None:
            pool = _LocalWorkers(n_jobs, proto, study_dir, db_spec, device, root, lease_s,
                                 retry_failed)
            try:
                n_done = pool.watch(store, keys, todo, costs, total_cost, printer, result,
                                    budget)
            except KeyboardInterrupt:
                result.interrupted = True
                printer.say("\ninterrupted: the workers give their runs back; they resume "
                            "from their checkpoints when the same command runs again")
                raise
            finally:
                pool.stop()
            # Below, this process trains what a dead worker left; a run that failed in a
            # worker is not tried again.
            attempted.update(r.key for r in store.runs(keys=keys) if r.status == "failed")
        while True:
            if max_runs is not None and result.done_here + result.failed_here >= max_runs:
                break
            if budget and printer.elapsed() > budget:
                printer.say(f"the study's time budget ({budget:g} s) is spent; run the same "
                            "command again to continue")
                break
            # A run is tried once per command: a failure, or a run lost to another worker,
            # is not claimed again in the same breath.
            run = store.claim([k for k in keys if k not in attempted], me, lease_s,
                              retry_failed)
            if run is None:
                break
            attempted.add(run.key)
            p = protocols.get(run.protocol_hash) or _protocol_from_row(next(
                row for row in store.protocols() if row["hash"] == run.protocol_hash))
            protocols[run.protocol_hash] = p
            n_done += 1
            remaining = store.counts(keys)
            left = remaining.get("pending", 0) + remaining.get("running", 0)
            printer.say(_run_header(n_done, max(len(todo), n_done + left - 1), run,
                                    printer.elapsed(),
                                    _eta(done_times, costs, todo[n_done - 1:], total_cost)))
            ctx = RunContext(p, store, study_dir, me, device, data_cache, verbose, progress,
                             lease_s)
            t_run = time.perf_counter()
            try:
                values = execute_run(run, ctx)
            except LeaseLost as e:
                printer.say(f"  {e}")
                continue
            except KeyboardInterrupt:
                store.release(run.key, me)
                result.interrupted = True
                printer.say(f"\ninterrupted: {run.label} (seed {run.seed}) will resume from its "
                            "checkpoint when the same command runs again")
                raise
            except Exception as e:  # noqa: BLE001 - one failed run does not stop a study
                msg = f"{type(e).__name__}: {e}"
                store.fail(run.key, me, msg)
                result.failed_here += 1
                _write_error(study_dir, run, traceback.format_exc())
                printer.say(f"  FAILED {run.label} (seed {run.seed}): {msg}")
                continue
            result.done_here += 1
            done_times.append((costs.get(run.label), time.perf_counter() - t_run))
            printer.say(_run_line(run, values))
        # Every run of the protocol(s): those of earlier commands with other models too.
        result.runs = [r for h in protocols for r in store.runs(h)]
        if report and not worker and proto is not None:
            from archlab.study.report import print_results, write_report

            counts = {s: sum(r.status == s for r in result.runs)
                      for s in ("done", "failed", "running", "pending")}
            print(file=printer_out)
            print_results(result.runs, file=printer_out)
            result.report = write_report(study_dir, store, proto.hash)
            printer.say(f"\n{counts['done']} of {len(result.runs)} runs done"
                        + (f", {counts['failed']} failed" if counts["failed"] else "")
                        + (f", {counts['running']} running elsewhere" if counts["running"] else "")
                        + (f", {counts['pending']} pending" if counts["pending"] else "")
                        + f" in {fmt_time(printer.elapsed())}")
            printer.say(f"report: {result.report}")
            printer.say(f"csv:    {result.report.parent / 'results.csv'}")
        elif worker:
            printer.say(f"\nworker {me}: {result.done_here} runs done here"
                        + (f", {result.failed_here} failed" if result.failed_here else "")
                        + f"; nothing left to claim. `archlab report {study_dir}` "
                        "writes the report.")
    finally:
        store.close()
    return result


def plan(protocol: Protocol, study: str | Path | None = None, db: str | None = None
         ) -> list[dict[str, Any]]:
    """The runs of a protocol with their state in the study (nothing is written)."""
    study_dir, db_spec = resolve_study(study, db, protocol.name)
    status: dict[str, str] = {}
    if is_url(db_spec) or Path(db_spec).is_file():
        with open_store(db_spec) as store:
            status = {r.key: r.status for r in store.runs(protocol.hash)}
    return [{"key": r.key, "label": r.label, "model": r.entry.name, "seed": r.seed,
             "status": status.get(r.key, "new")} for r in protocol.runs()]


def _run_header(index: int, total: int, run: Run, elapsed: float, eta: str) -> str:
    return (f"\n[{index}/{total}] {run.label} (seed {run.seed})"
            f"{' - resuming' if run.attempts > 1 else ''}"
            f"{f' - {run.note}' if run.note else ''}; study {fmt_time(elapsed)}{eta}")


def _eta(done_times: list[tuple[float | None, float]], costs: dict[str, float | None],
         left: list[Run], total_cost: float, jobs: int = 1) -> str:
    """', about M:SS to go' for the runs in `left`, `jobs` at a time, from the seconds per
    unit of cost of the runs done so far; nothing until they cover a tenth of the study's
    cost (a tiny first model's seconds per MAC, mostly per-step overhead, would predict
    hours)."""
    if not done_times:
        return ""
    if total_cost and sum(c or 0.0 for c, _ in done_times) < 0.1 * total_cost:
        return ""
    rate_pairs = [(c, t) for c, t in done_times if c]
    fixed = [t for c, t in done_times if not c]
    rate = sum(t for _, t in rate_pairs) / sum(c for c, _ in rate_pairs) if rate_pairs else None
    avg_fixed = (sum(fixed) / len(fixed)) if fixed else (
        sum(t for _, t in done_times) / len(done_times))
    seconds = 0.0
    for r in left:
        c = costs.get(r.label)
        seconds += c * rate if (c and rate) else avg_fixed
    return f", about {fmt_time(seconds / jobs)} to go"


def _run_line(run: Run, v: dict[str, Any]) -> str:
    tta = f" (TTA {v['top1_tta']:.2%})" if v.get("top1_tta") is not None else ""
    return (f"  {run.label} seed {run.seed}: test top-1 {v['top1']:.2%}{tta}, "
            f"{fmt_time(v.get('train_time'))} training, {fmt_time(v.get('wall_time'))} in all"
            + (f"; {v['note']}" if v.get("note") else ""))


def _write_error(study_dir: Path, run: Run, text: str) -> None:
    try:
        d = study_dir / (run.run_dir or f"runs/{run.label}-s{run.seed}-{run.key[:8]}")
        d.mkdir(parents=True, exist_ok=True)
        (d / "error.log").write_text(text)
    except OSError:
        pass


def _protocol_from_row(row: dict[str, Any]) -> Protocol:
    body = row["body"]
    p = parse_protocol(body, source=f"protocol {row['name']} (from the study database)",
                       default_name=row["name"], check_models=False)
    if p.hash != row["hash"]:
        raise StoreError(f"protocol {row['name']} in the study database hashes to {p.hash[:8]} "
                         f"here, not {row['hash'][:8]}: this archlab reads protocols differently "
                         "from the one that started the study; use the same version")
    p.text = row.get("yaml")
    return p


def install_sigterm() -> Any:
    """SIGTERM as Ctrl-C outside the trainer (which handles both itself), so that a worker
    stopped by its scheduler gives its run back."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


__all__ = ["DataCache", "LeaseLost", "StudyResult", "compare",
           "measure_throughput", "open_study", "resolve_study"]
