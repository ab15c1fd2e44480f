"""Running studies: every run recorded with what it measured, a second command resumes
(skipping finished runs, continuing a killed one from its checkpoint), failures are kept,
and several workers share one study on SQLite and on PostgreSQL without doing a run twice
or losing one."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
from pathlib import Path

import pytest

from study_fixtures import archlab_cmd, env, postgres, tiny_protocol, wait_for  # noqa: F401

from archlab.study import compare, load_protocol, open_store
from archlab.study.store import worker_name


pytestmark = pytest.mark.usefixtures("isolated")


def test_a_study_records_every_measurement_and_a_second_run_skips(tmp_path, capsys):
    proto = tiny_protocol(tmp_path / "tiny.yaml", epochs=2, extra="""\
        - name: sift-bovw
          model_kwargs: {upscale: 32, step: 4, patch: 8, vocab_size: 8, pca_dims: 16}
        """)
    study = tmp_path / "study"
    result = compare(proto, study=study, progress=False)
    assert result.done_here == 3 and result.failed_here == 0
    runs = {r.label: r for r in result.runs}
    p = load_protocol(proto)
    for label, r in runs.items():
        assert r.status == "done" and r.protocol_hash == p.hash and r.seed == 0, label
        assert 0 <= r.top1 <= 1 and 0 <= r.top5 <= 1 and r.top5 >= r.top1
        assert r.train_time > 0 and r.wall_time >= r.train_time * 0.5
        assert r.params > 0 and r.throughput > 0 and r.peak_mem > 2**20
        assert r.result["confusion"] and len(r.result["classes"]) == 10
        assert sum(map(sum, r.result["confusion"])) == r.result["test_images"] == 359
        assert (study / r.run_dir).is_dir()
    net = runs["resnet-tiny"]
    assert [h["epoch"] for h in net.history] == [1, 2] and "val_top1" in net.history[0]
    assert net.macs > 0 and net.top1_tta is not None and net.epochs_done == 2
    assert net.result["tta_views"] == ["shift"]
    # The wider model has more parameters and MACs, counted at the run's input size.
    assert runs["resnet-tiny-w"].params > net.params and runs["resnet-tiny-w"].macs > net.macs
    assert runs["sift-bovw"].macs is None and runs["sift-bovw"].top1_tta is None
    assert (study / "report.html").is_file() and (study / "results.csv").is_file()
    out = capsys.readouterr().out
    assert "resnet-tiny" in out and "report:" in out

    again = compare(proto, study=study, progress=False)
    assert again.done_here == 0
    assert {r.key: (r.top1, r.attempts) for r in again.runs} == \
        {r.key: (r.top1, r.attempts) for r in result.runs}
    # A model added to the protocol later runs alone; the others are kept.
    more = compare(proto, study=study, progress=False, models=["resnet-tiny", "lenet5"])
    assert more.done_here == 1 and len(more.runs) == 4
    assert "lenet5" in (study / "report.html").read_text()


def test_killed_study_resumes_the_run_from_its_checkpoint(tmp_path):
    proto = tiny_protocol(tmp_path / "tiny.yaml", epochs=6)
    study = tmp_path / "study"
    cmd = archlab_cmd("compare", str(proto), "--study", str(study), "--no-progress",
                      "--models", "resnet-tiny")
    proc = subprocess.Popen(cmd, env=env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        db = study / "study.db"
        wait_for(lambda: db.exists(), timeout=60)
        store = open_store(db)

        def two_epochs():
            runs = store.runs()
            return runs and (runs[0].epochs_done or 0) >= 2
        wait_for(two_epochs, timeout=120)
        proc.send_signal(signal.SIGKILL)      # no checkpoint-on-exit: the last epoch's stays
        proc.wait()
        run = store.runs()[0]
        assert run.status == "running" and 2 <= run.epochs_done < 6
        done_before = run.epochs_done
        first_epochs = run.history[:done_before]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The dead worker was on this host: its run is taken over at once, not after the lease.
    result = compare(proto, study=study, progress=False, models=["resnet-tiny"], lease_s=3600)
    run = result.runs[0]
    assert run.status == "done" and run.attempts == 2 and result.done_here == 1
    assert [h["epoch"] for h in run.history] == [1, 2, 3, 4, 5, 6]
    assert run.history[:done_before] == first_epochs       # finished epochs were not redone
    log = (study / run.run_dir / "run.log").read_text()
    assert "resuming" in log and log.count("training resnet20") == 1


def test_a_failed_run_is_recorded_and_the_study_goes_on(tmp_path):
    proto = tiny_protocol(tmp_path / "tiny.yaml", extra="""\
        - name: resnet20
          label: diverges
          model_kwargs: {layers: [1, 1, 1], widths: [8, 16, 32], stem_width: 8}
          recipe: {lr: 1.0e+12}
        """)
    study = tmp_path / "study"
    result = compare(proto, study=study, progress=False, verbose=False)
    status = {r.label: r.status for r in result.runs}
    assert status == {"resnet-tiny": "done", "resnet-tiny-w": "done", "diverges": "failed"}
    failed = next(r for r in result.runs if r.label == "diverges")
    assert "TrainingDiverged" in failed.error and "loss became" in failed.error
    assert (study / failed.run_dir / "error.log").is_file()
    # Skipped on the next command unless asked for.
    assert compare(proto, study=study, progress=False, verbose=False).done_here == 0
    retry = compare(proto, study=study, progress=False, verbose=False, retry_failed=True)
    assert retry.failed_here == 1 and next(
        r for r in retry.runs if r.label == "diverges").attempts == 2


def test_a_transfer_study_fine_tunes_in_two_phases(tmp_path):
    """The article's protocol in miniature: a network trained on the digits is the
    'pretrained' body; each run trains a new head with the body frozen, then everything."""
    from archlab.data import load_dataset
    from archlab.train import Recipe, fit

    source = tmp_path / "source"
    fit("resnet20", load_dataset("digits", image_size=16),
        Recipe(epochs=1, batch_size=64, lr=0.2, threads=1, augment="none", progress=False,
               model_kwargs={"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8}),
        run_dir=source, verbose=False)
    proto = tmp_path / "transfer.yaml"
    proto.write_text(f"""\
name: transfer-tiny
data: {{dataset: digits, image_size: 16, val_fraction: 0.1}}
recipe: {{fine_tune: true, freeze_epochs: 1, epochs: 1, lr: 0.01, unfrozen_lr: [1.0e-4, 1.0e-3],
          head: concat, batch_size: 64, optimizer: adamw, threads: 1, augment: none,
          pretrained: {source / 'model.safetensors'}}}
measure: {{throughput_batch: 32, throughput_seconds: 0.05}}
models:
  - name: resnet20
    model_kwargs: {{layers: [1, 1, 1], widths: [8, 16, 32], stem_width: 8}}
""")
    result = compare(proto, study=tmp_path / "study", progress=False, verbose=False)
    run = result.runs[0]
    assert run.status == "done", run.error
    assert [h["epoch"] for h in run.history] == [1, 2] and run.epochs_done == 2
    assert run.top1 > 0.5 and run.result["recipe"]["fine_tune"]


# --------------------------------------------------------------------------------------
# Claims: atomic on both databases
# --------------------------------------------------------------------------------------


def _claim_all(spec: str, keys: list[str], queue) -> None:
    store = open_store(spec)
    me = worker_name()
    got = []
    while True:
        run = store.claim(keys, me)
        if run is None:
            break
        got.append(run.key)
        store.finish(run.key, me, {"top1": 0.5}, [], {})
    store.close()
    queue.put(got)


def _race(spec: str, tmp_path: Path, workers: int = 4) -> None:
    """Workers in separate processes claim from one study: each run exactly once."""
    p = load_protocol(tiny_protocol(tmp_path / "tiny.yaml", seeds=range(12)))
    with open_store(spec) as store:
        store.add_protocol(p)
        store.add_runs(p.runs())
    keys = [r.key for r in p.runs()]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(spec, keys, queue)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    claimed = [k for _ in procs for k in queue.get(timeout=120)]
    for proc in procs:
        proc.join(timeout=60)
    assert sorted(claimed) == sorted(keys)                 # none twice, none lost
    with open_store(spec) as store:
        runs = store.runs(p.hash)
    assert all(r.status == "done" and r.attempts == 1 for r in runs)


def test_claims_are_atomic_on_sqlite(tmp_path):
    _race(str(tmp_path / "study.db"), tmp_path)


def test_claims_are_atomic_on_postgres(tmp_path, postgres):  # noqa: F811
    _race(postgres.new_database(), tmp_path)


def _lease_takeover(spec: str, tmp_path: Path) -> None:
    p = load_protocol(tiny_protocol(tmp_path / "tiny.yaml"))
    store = open_store(spec)
    store.add_protocol(p)
    store.add_runs(p.runs())
    keys = [p.runs()[0].key]
    a, b = "elsewhere:1:aaaaaa", "elsewhere:2:bbbbbb"       # two other machines
    assert store.claim(keys, a).key == keys[0]
    assert store.claim(keys, b, lease_s=60) is None        # a is alive: its heartbeat is fresh
    assert store.heartbeat(keys[0], a)
    store.execute("UPDATE runs SET heartbeat = heartbeat - 3600")   # a went silent
    run = store.claim(keys, b, lease_s=60)
    assert run.key == keys[0] and run.attempts == 2 and "taken over from" in run.note
    assert not store.heartbeat(keys[0], a)                 # a learns it lost the run
    assert not store.fail(keys[0], a, "late")
    assert store.finish(keys[0], b, {"top1": 0.9}, [{"epoch": 1}], {})
    # A late finish of a run already done changes nothing.
    assert not store.finish(keys[0], a, {"top1": 0.1}, [], {})
    assert store.run(keys[0]).top1 == 0.9
    store.close()


def test_a_silent_worker_loses_its_run_on_sqlite(tmp_path):
    _lease_takeover(str(tmp_path / "study.db"), tmp_path)


def test_a_silent_worker_loses_its_run_on_postgres(tmp_path, postgres):  # noqa: F811
    _lease_takeover(postgres.new_database(), tmp_path)


# --------------------------------------------------------------------------------------
# Two `archlab compare --worker` processes sharing one study
# --------------------------------------------------------------------------------------


def _two_workers(tmp_path: Path, db: str | None) -> None:
    proto = tiny_protocol(tmp_path / "tiny.yaml", seeds=(0, 1))
    study = tmp_path / "study"
    where = ["--study", str(study)] + (["--db", db] if db else [])
    # The first command registers the study and does one run; then two workers share the rest.
    first = subprocess.run(archlab_cmd("compare", str(proto), *where, "--no-progress",
                                       "--quiet", "--models", "resnet-tiny", "--seeds", "1"),
                           env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    setup = subprocess.run(archlab_cmd("compare", str(proto), *where, "--dry-run"),
                           env=env(tmp_path), capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr
    with open_store(db or study / "study.db") as store:
        p = load_protocol(proto)
        store.add_protocol(p)
        store.add_runs(p.runs())
    workers = [subprocess.Popen(archlab_cmd("compare", "--worker", *where, "--no-progress"),
                                env=env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    with open_store(db or study / "study.db") as store:
        runs = store.runs(p.hash)
    assert len(runs) == 4 and all(r.status == "done" for r in runs), [
        (r.label, r.seed, r.status, r.error) for r in runs]
    assert all(r.attempts == 1 for r in runs)               # no run was done twice
    for r in runs:
        log = (study / r.run_dir / "run.log").read_text()
        assert log.count("training resnet20") == 1 and "resuming" not in log
    assert sum("nothing left to claim" in o for o in outs) == 2
    report = subprocess.run(archlab_cmd("report", db or str(study), "--out",
                                        str(tmp_path / "r.html")),
                            env=env(tmp_path), capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "resnet-tiny-w" in report.stdout and (tmp_path / "r.html").is_file()


def test_two_workers_share_a_study_on_sqlite(tmp_path):
    _two_workers(tmp_path, None)


def test_two_workers_share_a_study_on_postgres(tmp_path, postgres):  # noqa: F811
    _two_workers(tmp_path, postgres.new_database())


# --------------------------------------------------------------------------------------
# `jobs`: worker processes on this machine, started and watched by one command
# --------------------------------------------------------------------------------------


def test_jobs_train_side_by_side_and_give_the_same_results(tmp_path, capsys):
    """Two local workers share the study; with recipe.threads fixed (the tiny protocol
    sets 1) every run gives exactly what it gives when one process trains them all."""
    proto = tiny_protocol(tmp_path / "tiny.yaml", seeds=(0, 1))
    serial = compare(proto, study=tmp_path / "serial", progress=False, report=False)
    capsys.readouterr()
    parallel = compare(proto, study=tmp_path / "parallel", progress=False, jobs=2)
    out = capsys.readouterr().out
    assert parallel.done_here == 4 and parallel.failed_here == 0
    assert {r.key: (r.top1, r.top5, r.test_loss, r.top1_tta) for r in parallel.runs} == \
        {r.key: (r.top1, r.top5, r.test_loss, r.top1_tta) for r in serial.runs}
    assert all(r.status == "done" and r.attempts == 1 for r in parallel.runs)
    # The runs were trained in the workers, not in this process.
    pids = {int(r.worker.split(":")[1]) for r in parallel.runs}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    logs = sorted((tmp_path / "parallel" / "workers").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-1.log", "worker-2.log"]
    assert sum(p.read_text().count("training resnet20") for p in logs) == 4
    # This process reported every run as it started and ended, then the table and report.
    assert "2 workers" in out and "[4/4]" in out and out.count("test top-1") == 4
    assert "report:" in out and (tmp_path / "parallel" / "report.html").is_file()
    # Running it again finds nothing to do and starts no worker.
    again = compare(proto, study=tmp_path / "parallel", progress=False, jobs=2)
    assert again.done_here == 0 and "2 workers" not in capsys.readouterr().out


def test_jobs_on_the_command_line_are_checked(tmp_path, capsys):
    from archlab.cli import main

    assert main(["compare", "--jobs", "0", "--study", str(tmp_path)]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    assert main(["compare", "--worker", "--jobs", "2", "--study", str(tmp_path)]) == 2
    assert "leave out --worker" in capsys.readouterr().err


def test_compare_checks_jobs_itself(tmp_path):
    """The API refuses what the command line refuses, before it opens anything."""
    for jobs in (0, -1):
        with pytest.raises(ValueError, match=f"jobs={jobs}"):
            compare(study=tmp_path / "s", jobs=jobs)
    with pytest.raises(ValueError, match="leave out --worker"):
        compare(worker=True, study=tmp_path / "s", jobs=2)
    assert not (tmp_path / "s").exists()
