"""A study on Ray: every (architecture, seed) run a Ray task, recorded in the study database
as any worker's run is. On a local Ray instance of two CPUs: the same results as the local
runner, and a task whose worker process is killed mid-run is retried by Ray and resumes
from its checkpoint. What needs no Ray (the checks, the message when Ray is missing, how a
retry claims its run) runs without it."""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading

import pytest

from study_fixtures import tiny_protocol, wait_for

from archlab.study import compare, load_protocol, open_store
from archlab.study.ray_executor import (MISSING, claim_for_task, task_worker_name,
                                        warn_unshared)
from archlab.study.work import WorkOptions

pytestmark = pytest.mark.usefixtures("isolated")
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'archlab[ray]')")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One Ray instance for the module (its start costs seconds); compare uses it as it is.
    Its worker processes inherit this environment: no cache outside the tests' directory."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("ray-cache")))
        mp.setenv("ARCHLAB_OFFLINE", "1")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


def _results(runs) -> dict:
    return {r.key: (r.label, r.seed, r.status, r.epochs_done, r.top1, r.top5, r.test_loss,
                    r.top1_tta, r.params, r.macs) for r in runs}


@needs_ray
def test_a_ray_study_gives_the_local_runners_results(local_ray, tmp_path, capsys):
    """The tiny protocol fixes one thread per run, so a run gives the same numbers in a Ray
    worker as in this process."""
    from archlab.cli import main

    proto = tiny_protocol(tmp_path / "tiny.yaml", extra="- lenet5\n")
    local = compare(proto, study=tmp_path / "local", progress=False, verbose=False,
                    report=False)
    capsys.readouterr()
    assert main(["compare", str(proto), "--study", str(tmp_path / "ray"), "--executor", "ray",
                 "--cpus-per-run", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    with open_store(tmp_path / "ray" / "study.db") as store:
        runs = store.runs(load_protocol(proto).hash)
    assert len(runs) == 3 and _results(runs) == _results(local.runs)
    assert all(r.attempts == 1 and ":ray-" in r.worker for r in runs)
    assert os.getpid() not in {int(r.worker.split(":")[1]) for r in runs}   # in Ray's workers
    # The command's lines are the local runner's: each run as it starts and ends, the report.
    assert "Ray on this machine: 1 node, 2 CPUs and 0 GPUs; each run takes 1 CPU and 0 " \
           "GPUs, 2 at a time" in out
    assert "[3/3]" in out and out.count("test top-1") == 3
    assert "3 of 3 runs done" in out and (tmp_path / "ray" / "report.html").is_file()
    # Again: nothing left to do, and no task.
    again = compare(proto, study=tmp_path / "ray", executor="ray", progress=False,
                    report=False)
    assert again.done_here == 0 and "Ray on this machine" not in capsys.readouterr().out


@needs_ray
def test_a_killed_task_is_retried_and_resumes_from_its_checkpoint(local_ray, tmp_path):
    proto = tiny_protocol(tmp_path / "tiny.yaml", epochs=4)
    study = tmp_path / "study"
    killed: dict = {}

    def kill_after_an_epoch():
        """SIGKILL the run's Ray worker once an epoch is recorded (and so checkpointed)."""
        wait_for(lambda: (study / "study.db").exists(), timeout=120)
        with open_store(study / "study.db") as store:
            run = wait_for(lambda: next((r for r in store.runs() if r.epochs_done), None),
                           timeout=120, every=0.02)
            killed.update(worker=run.worker, epochs=run.epochs_done, history=run.history)
            os.kill(int(run.worker.split(":")[1]), signal.SIGKILL)

    killer = threading.Thread(target=kill_after_an_epoch, daemon=True)
    killer.start()
    # A lease of an hour: only the retry's claim of its dead attempt's run takes it over.
    result = compare(proto, study=study, models=["resnet-tiny"], executor="ray",
                     progress=False, verbose=False, report=False, lease_s=3600)
    killer.join(timeout=10)
    run = result.runs[0]
    assert run.status == "done" and run.attempts == 2 and result.done_here == 1
    assert 1 <= killed["epochs"] < 4
    # The same task (its id ends the worker's name), retried by Ray in another process.
    assert run.worker != killed["worker"]
    assert run.worker.rsplit(":", 1)[1] == killed["worker"].rsplit(":", 1)[1]
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4]
    assert run.history[:killed["epochs"]] == killed["history"]   # not trained again
    log = (study / run.run_dir / "run.log").read_text()
    assert "resuming" in log and log.count("training resnet20") == 1


def test_a_retried_task_takes_its_run_over_at_once(tmp_path):
    """A retry (the same task id) takes over the run its dead attempt held on another
    machine without waiting out the lease; another task leaves a live worker's run alone."""
    p = load_protocol(tiny_protocol(tmp_path / "tiny.yaml"))
    options = WorkOptions(lease_s=3600)
    with open_store(tmp_path / "study.db") as store:
        store.add_protocol(p)
        store.add_runs(p.runs())
        key = p.runs()[0].key
        assert store.claim([key], "elsewhere:7:ray-0a1b") is not None
        assert claim_for_task(store, key, task_worker_name("2c3d"), options) is None
        run = claim_for_task(store, key, task_worker_name("0a1b"), options)
        assert run.key == key and run.attempts == 2
        assert run.note == "taken over from elsewhere:7:ray-0a1b"
        # A plain worker's run is no task's: the lease decides, as for any worker.
        other = p.runs()[1].key
        assert store.claim([other], "elsewhere:8:a1b2c3") is not None
        assert claim_for_task(store, other, "here:9:a1b2c3", options) is None


def test_without_ray_the_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from archlab.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` fails
    proto = tiny_protocol(tmp_path / "tiny.yaml")
    assert main(["compare", str(proto), "--study", str(tmp_path / "s"),
                 "--executor", "ray"]) == 2
    assert capsys.readouterr().err == f"archlab compare: {MISSING}\n"
    assert not (tmp_path / "s").exists()


def test_compare_checks_the_executors_arguments(tmp_path):
    """Refused before anything is opened."""
    s = tmp_path / "s"
    cases = [({"executor": "dask"}, "executor='dask'"),
             ({"address": "ray://head:10001"}, "add executor='ray'"),
             ({"gpus_per_run": 1}, "add executor='ray'"),
             ({"executor": "ray", "worker": True}, "a Ray study is one command"),
             ({"executor": "ray", "jobs": 2}, "--cpus-per-run"),
             ({"executor": "ray", "cpus_per_run": 0}, "cpus_per_run=0"),
             ({"executor": "ray", "gpus_per_run": -1}, "gpus_per_run=-1")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            compare(study=s, **kwargs)
    assert not s.exists()


def test_a_cluster_on_an_sqlite_study_is_warned():
    with pytest.warns(UserWarning, match="shared disk"):
        warn_unshared("studies/x/study.db", "ray://head:10001")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unshared("postgresql://lab@db/studies", "ray://head:10001")
        warn_unshared("studies/x/study.db", None)
