"""The run in MLflow (`log: [mlflow]`, `archlab train --log mlflow[:URI]`), where people
look at and compare their runs: the recipe as parameters (flattened: model_kwargs.widths),
the speed settings chosen (speed.precision, ...), one row of metrics per epoch (step =
epoch, the names of metrics.csv), the held-out test metrics, and the model
(model.safetensors and its metadata as model.json) as artifacts, tagged with the model, the
dataset, the device and archlab's version. A study files its runs under one experiment named
after its protocol, tagged with label, seed and protocol hash (study/run.py).

MLflow is optional (pip install 'archlab[mlflow]'; mlflow-skinny is enough). A logger that
cannot log (MLflow missing, a bad URI, a server down) says so in one line and does nothing
more: no run ever stops for its logger. A resumed run continues its MLflow run, whose id the
checkpoint keeps.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from archlab._version import __version__
from archlab.train.checkpoint import MODEL_FILE, STATE_FILE
from archlab.train.plugin import Plugin
from archlab.train.recipe import Recipe

INSTALL_HINT = "the mlflow logger needs MLflow: pip install 'archlab[mlflow]'"
DEFAULT_EXPERIMENT = "archlab"        # unless $MLFLOW_EXPERIMENT_NAME names another
RUN_ID_KEY = "mlflow_run_id"          # in the checkpoint's plugin_state
PROBE_S = 3.0   # a server that takes no connection in this long is down: MLflow's own
                # client would retry for minutes before the first epoch
_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
# MLflow's client retries a request 7 times with doubling waits (minutes) and waits 120 s
# for an answer: right for a script that only logs, too long to hold a training loop for a
# dashboard. Its calls from here get these unless the environment sets them.
_BRIEF_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class LoggerOff(Exception):
    """Why MLflow cannot be logged to, with the fix."""


# --------------------------------------------------------------------------------------
# The tracking store
# --------------------------------------------------------------------------------------


def resolve_uri(uri: str | None) -> str:
    """The tracking URI: a folder becomes an absolute file: URI (the same from any working
    directory); none is $MLFLOW_TRACKING_URI, else MLflow's default."""
    if uri is None:
        import mlflow

        return mlflow.get_tracking_uri()
    # A one-letter scheme is a Windows drive; 'databricks' is a URI without a colon.
    if len(urlparse(uri).scheme) > 1 or uri in ("databricks", "databricks-uc"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def open_client(uri: str | None):
    """(MlflowClient, resolved URI), or LoggerOff naming what is wrong and the fix."""
    try:
        import mlflow  # noqa: F401  (the package itself: where a missing MLflow shows)
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise LoggerOff(INSTALL_HINT) from None
    uri = resolve_uri(uri)
    where = urlparse(uri)
    if where.scheme in ("http", "https"):
        port = where.port or (443 if where.scheme == "https" else 80)
        try:
            socket.create_connection((where.hostname, port), timeout=PROBE_S).close()
        except OSError as e:
            raise LoggerOff(f"no MLflow server answers at {uri} ({e.strerror or e}); start "
                            f"it (mlflow server --port {port}) or log to a folder: --log "
                            "mlflow:./mlruns") from None
    elif where.scheme in ("", "file"):
        # MLflow 3 refuses a folder store unless asked for it, pointing to a database; the
        # database needs SQLAlchemy, which mlflow-skinny lacks. A folder in --log asks.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(uri), uri


@contextmanager
def _brief_http():
    added = {k: v for k, v in _BRIEF_HTTP.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _reason(error: Exception, uri: str) -> str:
    if isinstance(error, LoggerOff):
        return str(error)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    fix = ("a database store needs the full MLflow (pip install mlflow), or log to a "
           "folder: --log mlflow:./mlruns" if "sqlalchemy" in first.lower() else
           "check the URI: a server (http://host:5000), file:///path/mlruns or a folder")
    return f"MLflow cannot log to {uri} ({first}); {fix}"


def _warn(line: str, trainer=None) -> None:
    """One line on the terminal (stderr when the run is quiet) and in run.log."""
    if trainer is not None:
        trainer.log(line)
    if trainer is None or not trainer.verbose:
        print(line, file=sys.stderr, flush=True)


def _limits() -> tuple[int, int, int]:
    """(longest parameter value, parameters per batch, metrics per batch) of this MLflow."""
    try:
        from mlflow.utils.validation import (MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH,
                                             MAX_PARAMS_TAGS_PER_BATCH)
    except ImportError:        # the limits of the oldest MLflow 2 releases
        return 500, 100, 1000
    return MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_METRICS_PER_BATCH


# --------------------------------------------------------------------------------------
# What a run records
# --------------------------------------------------------------------------------------


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model_kwargs': {'widths': [8]}} -> {'model_kwargs.widths': [8]}; an empty mapping
    stays one value."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_params(trainer) -> dict[str, str]:
    """The recipe, and the speed settings the run chose, as MLflow parameters: text as
    MLflow's own log_params writes it (str), cut to the store's longest value."""
    longest = _limits()[0]
    values = flatten({**trainer.recipe.to_dict(), "speed": trainer.speed.settings.as_dict()})
    out = {}
    for key, value in values.items():
        text = str(value)
        out[key] = text if len(text) <= longest else text[:longest - 3] + "..."
    return out


def run_tags(trainer) -> dict[str, str]:
    device = str(trainer.device)
    if trainer.device.type == "cuda":
        import torch

        device += f" ({torch.cuda.get_device_name(trainer.device)})"
    tags = {"model": trainer.model_name or type(trainer.model).__name__,
            "dataset": str(trainer.data_spec), "device": device,
            "archlab_version": __version__}
    if trainer.run_dir is not None:
        tags["run_dir"] = str(trainer.run_dir.resolve())
    tags.update({k: str(v) for k, v in (trainer.tracking.get("tags") or {}).items()})
    return tags


def row_metrics(row: dict[str, Any], step: int) -> list:
    """An epoch's row as MLflow metrics at `step`: every number of it but the epoch."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in row.items()
            if k != "epoch" and isinstance(v, (int, float))]


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:          # another worker of the study created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _log_batch(client, run_id: str, params: list = (), metrics: list = ()) -> None:
    _, per_params, per_metrics = _limits()
    for i in range(0, len(params), per_params):
        client.log_batch(run_id, params=params[i:i + per_params])
    for i in range(0, len(metrics), per_metrics):
        client.log_batch(run_id, metrics=metrics[i:i + per_metrics])


# --------------------------------------------------------------------------------------
# The trainer's plugin
# --------------------------------------------------------------------------------------


class MLflowLogger(Plugin):
    """Logs the run to MLflow at `uri` (None: MLflow's default). Its first failure turns it
    off with one warning; every later call does nothing."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri
        self.client = None
        self.run_id: str | None = None
        self.off = False

    def on_resume(self, trainer, state: dict[str, Any], tensors) -> None:
        self.run_id = (state.get("plugin_state") or {}).get(RUN_ID_KEY)

    def checkpoint_state(self, trainer) -> dict[str, Any]:
        return {RUN_ID_KEY: self.run_id} if self.run_id else {}

    def on_fit_start(self, trainer) -> None:
        if trainer.dist is not None and not trainer.dist.is_main:
            self.off = True      # the first process logs for all
            return
        self._safely(trainer, self._start, trainer)

    def on_epoch_end(self, trainer, row: dict[str, Any]) -> None:
        self._safely(trainer, self._log_rows, [row])

    def on_fit_end(self, trainer, test, status: str) -> None:
        self._safely(trainer, self._end, trainer, test, status)

    # -- the work -----------------------------------------------------------------------
    def _safely(self, trainer, work, *args) -> None:
        if self.off or (self.client is None and work != self._start):
            return
        try:
            with _brief_http():
                work(*args)
        except Exception as e:  # noqa: BLE001  (a logger never stops the run)
            self.off = True
            _warn(f"warning: MLflow logging is off for this run: "
                  f"{_reason(e, self.uri or 'the default tracking URI')}", trainer)

    def _start(self, trainer) -> None:
        self.client, self.uri = open_client(self.uri)
        resumed = self.run_id is not None and self._reopen()
        if not resumed:
            name = (trainer.tracking.get("experiment")
                    or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
            run = self.client.create_run(_experiment_id(self.client, name),
                                         run_name=trainer.run_dir.name if trainer.run_dir
                                         else None, tags=run_tags(trainer))
            self.run_id = run.info.run_id
        from mlflow.entities import Param

        # A resumed run keeps the parameters it has (MLflow refuses to change one) and gets
        # the epochs it missed: those that ended after its last logged one.
        have = self.client.get_run(self.run_id).data.params if resumed else {}
        _log_batch(self.client, self.run_id,
                   params=[Param(k, v) for k, v in run_params(trainer).items() if k not in have])
        logged = max((m.step for m in self.client.get_metric_history(self.run_id, "train_loss")),
                     default=0) if resumed else 0
        self._log_rows([row for row in trainer.history if row["epoch"] > logged])
        folder = urlparse(self.uri).scheme in ("", "file")
        trainer.log(f"mlflow: {'continuing ' if resumed else ''}run {self.run_id} at {self.uri} "
                    f"(look: {'MLFLOW_ALLOW_FILE_STORE=true ' * folder}mlflow ui "
                    f"--backend-store-uri {self.uri})")

    def _reopen(self) -> bool:
        """Mark the checkpoint's MLflow run as running again; False when it is gone."""
        try:
            run = self.client.get_run(self.run_id)
        except Exception as e:
            if getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        if run.info.lifecycle_stage == "deleted":
            return False
        self.client.update_run(self.run_id, status="RUNNING")
        return True

    def _log_rows(self, rows: list[dict[str, Any]]) -> None:
        metrics = [m for row in rows for m in row_metrics(row, int(row["epoch"]))]
        _log_batch(self.client, self.run_id, metrics=metrics)

    def _end(self, trainer, test, status: str) -> None:
        if status == "finished":
            if test is not None:
                values = {"test_loss": test.loss, "test_top1": test.top1,
                          "test_top5": test.top5, "test_images": test.n}
                self._log_rows([{"epoch": trainer.epoch,
                                 **{k: v for k, v in values.items() if v is not None}}])
            if trainer.run_dir is not None:
                self._log_model(trainer.run_dir)
        self.client.set_terminated(self.run_id, _STATUS[status])

    def _log_model(self, run_dir: Path) -> None:
        """model/model.safetensors, model/model.json (what archlab needs to use it) and the
        recipe.yaml to train it again."""
        from safetensors import safe_open

        path = run_dir / MODEL_FILE
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                info = json.loads((f.metadata() or {}).get("info", "{}"))
            self.client.log_artifact(self.run_id, str(path), "model")
            with tempfile.TemporaryDirectory() as tmp:
                meta = Path(tmp) / "model.json"
                meta.write_text(json.dumps(info, indent=1))
                self.client.log_artifact(self.run_id, str(meta), "model")
        if (run_dir / "recipe.yaml").is_file():
            self.client.log_artifact(self.run_id, str(run_dir / "recipe.yaml"))


def log_final_metrics(run_dir: str | Path, metrics: dict[str, float | None]) -> None:
    """Add `metrics` (at the last epoch's step) to the MLflow run of the finished run in
    `run_dir`, when its recipe logged to MLflow: a study's test measures, taken after the
    training. A failure says so in one line and goes on."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return
    state = json.loads(path.read_text())
    run_id = (state.get("plugin_state") or {}).get(RUN_ID_KEY)
    if run_id is None:          # no MLflow logger, or it was off and said so then
        return
    loggers = Recipe.from_dict(state["recipe"]).loggers
    if "mlflow" not in loggers:
        return
    try:
        with _brief_http():
            client, _uri = open_client(loggers["mlflow"])
            rows = {k: v for k, v in metrics.items() if v is not None}
            _log_batch(client, run_id, metrics=row_metrics(rows, int(state["epoch"])))
    except Exception as e:  # noqa: BLE001  (a logger never stops the study)
        _warn(f"warning: the final metrics of {run_dir} are not in MLflow: "
              f"{_reason(e, loggers['mlflow'] or 'the default tracking URI')}")
