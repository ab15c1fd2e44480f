"""Runs in MLflow (`--log mlflow[:URI]`), read back with MLflow's own client from a folder
store: the recipe as parameters, metrics.csv row by row, the test metrics, the model as an
artifact archlab loads; a resumed run continues its MLflow run; a study files its runs under
one experiment named after the protocol without changing its run keys; a logger that cannot
log (server down, MLflow missing) says so once and the run completes.

LeNet-5 on the 8x8 digits, 20 steps an epoch: about a second a run on one CPU thread.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from archlab import __version__
from archlab.cli.recipe_flags import add_recipe_flags, recipe_from_args
from archlab.study import ProtocolError, compare, load_protocol
from archlab.train import Recipe, TrainingInterrupted, fit, load_trained, read_model
from archlab.train.mlflow_log import INSTALL_HINT
from conftest import StopAt
from study_fixtures import tiny_protocol

mlflow = pytest.importorskip("mlflow", reason="pip install 'archlab[mlflow]'")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.usefixtures("isolated", "mlflow_env")


@pytest.fixture
def mlflow_env(monkeypatch):
    """No tracking URI or experiment from the environment; the logger's own opt-in to a
    folder store is undone afterwards; a client that fails fast on HTTP."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


def recipe(log, **kw) -> Recipe:
    base = dict(epochs=2, batch_size=64, lr=0.1, threads=1, progress=False, augment="none",
                log=log)
    return Recipe(**{**base, **kw})


def the_runs(store: Path, experiment: str):
    client = MlflowClient(store.as_uri())
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {store}"
    return client, client.search_runs([found.experiment_id])


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_in_mlflow_holds_its_recipe_metrics_test_and_model(tmp_path):
    store, run_dir = tmp_path / "mlruns", tmp_path / "run"
    result = fit("lenet5", "digits", recipe([f"mlflow:{store}"]), run_dir=run_dir,
                 verbose=False)
    client, runs = the_runs(store, "archlab")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"

    # Every field of the recipe the run wrote (recipe.yaml), flattened by hand, as MLflow's
    # log_params writes values (str); the speed settings it chose beside them.
    written = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    expected = {k: str(v) for k, v in written.items() if k != "model_kwargs"}
    expected["model_kwargs"] = "{}"
    expected.update({f"speed.{k}": str(result.info["speed"][k])
                     for k in ("precision", "channels_last", "fuse_bn", "compile")})
    assert run.data.params == expected
    assert run.data.params["batch_size"] == "64" and run.data.params["lr"] == "0.1"

    # metrics.csv, row by row: step = epoch, one metric per column.
    rows = csv_rows(run_dir)
    assert len(rows) == 2
    for column in rows[0]:
        if column == "epoch" or rows[0][column] == "":
            continue
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                              column))
        assert history == [(int(r["epoch"]), pytest.approx(float(r[column]), rel=1e-12))
                           for r in rows], column
    assert run.data.metrics["test_top1"] == pytest.approx(result.test.top1)
    assert run.data.metrics["test_loss"] == pytest.approx(result.test.loss)
    assert run.data.metrics["test_images"] == 359           # the digits' test split
    assert run.data.tags["model"] == "lenet5" and run.data.tags["dataset"] == "digits"
    assert run.data.tags["device"] == "cpu" and run.data.tags["archlab_version"] == __version__

    # The model, as archlab loads it, and what it needs to use it.
    got = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl")))
    assert sorted(p.name for p in got.iterdir()) == ["model.json", "model.safetensors"]
    weights, info = read_model(run_dir / "model.safetensors")
    model, loaded_info = load_trained(got / "model.safetensors")
    assert loaded_info == info == json.loads((got / "model.json").read_text())
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_a_resumed_run_continues_its_mlflow_run(tmp_path):
    store, run_dir = tmp_path / "mlruns", tmp_path / "run"
    with pytest.raises(TrainingInterrupted):        # epoch 2, batch 5 (20 steps an epoch)
        fit("lenet5", "digits", recipe([f"mlflow:{store.as_uri()}"], epochs=3),
            run_dir=run_dir, verbose=False, callbacks=[StopAt(25)])
    client, runs = the_runs(store, "archlab")
    (first,) = runs
    assert first.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_top1")] == [1]

    fit(None, "digits", None, run_dir=run_dir, resume=True, verbose=False)
    client, runs = the_runs(store, "archlab")
    assert [r.info.run_id for r in runs] == [first.info.run_id]
    assert runs[0].info.status == "FINISHED"
    val = sorted((m.step, m.value) for m in client.get_metric_history(first.info.run_id,
                                                                      "val_top1"))
    assert val == [(int(r["epoch"]), pytest.approx(float(r["val_top1"])))
                   for r in csv_rows(run_dir)]
    assert [s for s, _ in val] == [1, 2, 3]


def test_a_study_files_its_runs_under_one_experiment_and_keeps_its_keys(tmp_path):
    store = tmp_path / "mlruns"
    proto = tiny_protocol(tmp_path / "tiny.yaml", epochs=1)
    log = {"log": [f"mlflow:{store}"]}
    plain = load_protocol(proto)
    logged = load_protocol(proto, overrides=log)
    assert logged.hash == plain.hash                 # where runs are logged is not hashed
    assert [r.key for r in logged.runs()] == [r.key for r in plain.runs()]
    with pytest.raises(ProtocolError, match="top of the protocol"):
        load_protocol(proto, overrides={"recipe.log": ["mlflow"]})

    result = compare(proto, overrides=log, study=tmp_path / "study", progress=False,
                     verbose=False, report=False)
    client, runs = the_runs(store, "tiny")
    assert sorted(r.data.tags["label"] for r in runs) == ["resnet-tiny", "resnet-tiny-w"]
    by_label = {r.label: r for r in result.runs}
    for run in runs:
        tags = run.data.tags
        assert tags["seed"] == "0" and tags["protocol_hash"] == plain.hash
        assert tags["model"] == "resnet20" and run.info.status == "FINISHED"
        study_run = by_label[tags["label"]]
        assert tags["run_key"] == study_run.key
        assert run.data.metrics["test_top1"] == pytest.approx(study_run.top1)
        assert run.data.metrics["params"] == study_run.params


def _log_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "MLflow logging is off" in line]


def test_an_unreachable_server_warns_once_and_the_run_completes(tmp_path, capsys, digits):
    result = fit("lenet5", digits, recipe(["mlflow:http://127.0.0.1:9"]),
                 run_dir=tmp_path / "run", verbose=False)
    assert len(result.history) == 2
    (line,) = _log_warnings(capsys.readouterr().err)
    assert "http://127.0.0.1:9" in line and "--log mlflow:./mlruns" in line
    assert line in (tmp_path / "run" / "run.log").read_text()


def test_without_mlflow_the_logger_warns_once_with_the_install_hint(tmp_path, capsys, digits,
                                                                    monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)      # import mlflow raises ImportError
    result = fit("lenet5", digits, recipe(["mlflow"]), run_dir=tmp_path / "run",
                 verbose=False)
    assert len(result.history) == 2
    (line,) = _log_warnings(capsys.readouterr().err)
    assert line.endswith(INSTALL_HINT)


def test_the_log_option_names_its_loggers_and_refuses_others():
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe")
    parser.add_argument("--set", action="append", default=[])
    add_recipe_flags(parser)
    args = parser.parse_args(["--log", "tensorboard,mlflow:http://host:5000",
                              "--log", "mlflow:http://host:5000"])
    r = recipe_from_args(args)
    assert r.log == ("tensorboard", "mlflow:http://host:5000")
    assert r.loggers == {"tensorboard": None, "mlflow": "http://host:5000"}
    assert Recipe(tensorboard=True, log="mlflow").loggers == {"tensorboard": None,
                                                              "mlflow": None}
    assert Recipe.from_dict(r.to_dict()).log == r.log          # a checkpoint's round trip
    for bad, says in (("wandb", "unknown logger 'wandb'"), ("mlfow", "did you mean 'mlflow'"),
                      ("tensorboard:x", "takes no URI"), ("mlflow:", "a URI after the colon"),
                      (["mlflow:a", "mlflow:b"], "one mlflow destination")):
        with pytest.raises(ValueError, match=says):
            Recipe(log=bad)
