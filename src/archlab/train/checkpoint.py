"""Checkpoints that lose nothing, and that load without unpickling anything.

A run directory holds:

    checkpoint.json                  the state: epoch, step, recipe, data split, optimizer
                                     hyper-parameters, schedule, RNG states, metrics so far
    checkpoints/step-N.safetensors        the model's weights at step N
    checkpoints/step-N.train.safetensors  optimizer tensors and EMA weights at step N
    model.safetensors                the weights to use (EMA when on), with what inference
                                     needs (architecture, classes, preprocessing) as metadata
    best.safetensors                 the same, at the best validation accuracy
    metrics.jsonl, metrics.csv       one row per epoch; run.log: what the run reported
    steps.jsonl                      the learning curve every recipe.curve_every steps

Every file is written to a temporary name, fsynced and renamed. The JSON is written last and
is the commit point: it names the tensor files of its step, so a run killed while writing
step N+1 still resumes from a consistent step N; stale tensor files are removed after the
commit.
"""
from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archlab._io import write_atomic
from archlab.models import CheckpointError, read_state_dict, save_state_dict
from archlab.models.pretrained_cfg import cfg_from_run, to_metadata
from archlab.train.losses import unwrap

FORMAT = "archlab-checkpoint/1"
STATE_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"


# --------------------------------------------------------------------------------------
# RNG states
# --------------------------------------------------------------------------------------


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    out = {"torch": _b64(torch.get_rng_state()),
           "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
           "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    if torch.cuda.is_available():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(_unb64(states["torch"]))
    if "python" in states:
        v, s, g = states["python"]
        random.setstate((v, tuple(s), g))
    if "numpy" in states:
        name, keys, *rest = states["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in states and torch.cuda.is_available():
        cuda = [_unb64(s) for s in states["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------------------
# Optimizer state: tensors to safetensors, the rest to JSON
# --------------------------------------------------------------------------------------


def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------------------
# Training checkpoints
# --------------------------------------------------------------------------------------


def save_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any],
                    model_state: dict[str, torch.Tensor],
                    train_tensors: dict[str, torch.Tensor]) -> Path:
    """Write the tensors of `state['step']`, then commit the JSON state, then clean up."""
    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints"
    stem = f"step-{int(state['step']):09d}"
    meta = {"format": FORMAT, "step": str(state["step"])}
    save_state_dict(model_state, ckdir / f"{stem}.safetensors", metadata=meta)
    save_state_dict(train_tensors or {"_empty": torch.zeros(0)},
                    ckdir / f"{stem}.train.safetensors", metadata=meta)
    state = {**state, "format": FORMAT,
             "files": {"weights": f"checkpoints/{stem}.safetensors",
                       "train": f"checkpoints/{stem}.train.safetensors"}}
    path = write_atomic(run_dir / STATE_FILE, json.dumps(state, indent=1))
    keep = {Path(f).name for f in state["files"].values()}
    for old in ckdir.glob("step-*.safetensors"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return path


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / STATE_FILE).is_file()


def load_checkpoint(run_dir: str | os.PathLike
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state, model weights, train tensors) of the last committed step of a run."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.is_file():
        hint = (" (it holds no checkpoint.json: the run ended before its first epoch, or "
                "this is not a run directory)") if run_dir.is_dir() else " (no such directory)"
        raise FileNotFoundError(f"nothing to resume in {run_dir}{hint}")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); it is truncated or was "
                              "edited: restore it, or start the run again") from None
    found = state.get("format") if isinstance(state, dict) else None
    if found != FORMAT:
        raise CheckpointError(f"{path} is not an archlab training checkpoint (format "
                              f"{found!r}, expected {FORMAT!r})")
    weights, wmeta = read_state_dict(run_dir / state["files"]["weights"])
    train, tmeta = read_state_dict(run_dir / state["files"]["train"])
    for name, meta in (("weights", wmeta), ("train", tmeta)):
        if meta.get("step") != str(state["step"]):
            raise CheckpointError(f"{run_dir}: the {name} file is of step {meta.get('step')} "
                                  f"but checkpoint.json of step {state['step']}")
    train.pop("_empty", None)
    return state, weights, train


# --------------------------------------------------------------------------------------
# Inference weights: the model and everything needed to use it
# --------------------------------------------------------------------------------------


def save_model(path: str | os.PathLike, model_state: dict[str, torch.Tensor],
               info: dict[str, Any]) -> Path:
    """Weights plus `info` (model name and kwargs, classes, preprocessing) as metadata, and
    the preprocessing again as the `pretrained_cfg` every archlab model file records."""
    meta = {"format": "archlab-model/1", "source_layout": "archlab",
            "archlab_model": str(info.get("model") or ""), "info": json.dumps(info),
            **to_metadata(cfg_from_run(info))}
    return save_state_dict(model_state, path, metadata=meta)


def read_model(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, info) from a file written by `save_model`, or a run directory."""
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, BEST_FILE):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path} holds no {MODEL_FILE}: not a finished or "
                                    "checkpointed run directory")
    weights, meta = read_state_dict(path)
    if "info" not in meta:
        raise CheckpointError(
            f"{path} holds weights but not what archlab needs to use them (model, classes, "
            "preprocessing): it was not written by `archlab train`. Load it with "
            "create_model(name, pretrained=path) and pass the model itself")
    try:
        info = json.loads(meta["info"])
    except ValueError:
        raise CheckpointError(f"{path}: its metadata is corrupt") from None
    return weights, info


# --------------------------------------------------------------------------------------
# A trainer's state: what its checkpoint holds and how a resume puts it back
# --------------------------------------------------------------------------------------


def trainer_state(t) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON state, tensors beside the weights) of a trainer: the optimizer, the plugins'
    tensors (an EMA) and values (a logger's run id), the counters, the split, the RNG
    states and the metrics so far."""
    tensors, opt_meta = split_optimizer_state(t.optimizer.state_dict())
    plugin_state: dict[str, Any] = {}
    for plugin in (*t.plugins, *t.callbacks):
        if hasattr(plugin, "checkpoint_tensors"):
            tensors.update(plugin.checkpoint_tensors(t))
        if hasattr(plugin, "checkpoint_state"):
            plugin_state.update(plugin.checkpoint_state(t))
    state = {
        "epoch": t.epoch, "step": t.step, "batch_in_epoch": t.batch_in_epoch,
        "total_steps": t.total_steps, "train_time": t.train_time,
        "model": {"name": t.model_name, "kwargs": t.model_kwargs},
        "classes": t.data.classes, "preprocess": t.preprocess.as_dict(),
        "recipe": t.recipe.to_dict(), "data": t.split_info,
        "optimizer": opt_meta,
        "schedule": {"kind": t.schedule.kind, "total": t.schedule.total, "step": t.step},
        "rng": {**rng_states(), "augment": t.train_loader.rng_state()},
        "partial_epoch": t._partial, "history": t.history, "best": t.best,
        "steps": t.step_curve.rows, "step_window": t.step_curve.state(),
        "issues": t.issues.as_dict(), "torch": torch.__version__,
        "speed": t.speed.as_dict(), "plugin_state": plugin_state,
        "budget": t.budget.state() if t.budget is not None else None,
    }
    return state, tensors


def save_trainer(t) -> Path:
    state, tensors = trainer_state(t)
    return save_checkpoint(t.run_dir, state, unwrap(t.model).state_dict(), tensors)


def restore_trainer(t, weights: dict[str, torch.Tensor], train: dict[str, torch.Tensor]) -> None:
    """Put a trainer back where its checkpoint left it: weights, then the plugins (the
    optimizer of fine-tuning's phase, the EMA), then the optimizer state and counters."""
    s = t.resume_state
    t.model.load_state_dict(weights)
    t.notify("on_resume", s, train)
    t.optimizer.load_state_dict(join_optimizer_state(train, s["optimizer"]))
    t.epoch, t.step = s["epoch"], s["step"]
    t.batch_in_epoch = s["batch_in_epoch"]
    t.train_time = s["train_time"]
    t.history, t.best = s["history"], s["best"]
    t._partial = s.get("partial_epoch")
    t.step_curve.restore(s.get("steps", []), s.get("step_window"))
    t.resume_rng = s["rng"]
    where = (f"epoch {t.epoch + 1}, batch {t.batch_in_epoch}" if t.batch_in_epoch
             else f"the end of epoch {t.epoch}")
    length = f"; {t.budget.describe()}" if t.budget is not None else f" of {t.total_steps}"
    t.log(f"resuming {t.run_dir} at {where} (step {t.step}{length})")
