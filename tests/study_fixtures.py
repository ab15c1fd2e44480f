"""Fixtures shared by the study tests: tiny protocols on the digits, a throwaway
PostgreSQL server on loopback."""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A ResNet of one block per stage, 8-16-32 channels, and LeNet-5 on the 8x8 digits
# upsampled to 16 px: a run takes a second or two on one CPU thread.
TINY = """\
name: tiny
data: {{dataset: digits, image_size: 16, val_fraction: 0.1}}
recipe: {{epochs: {epochs}, batch_size: 64, lr: 0.2, threads: 1, augment: none}}
tta: [shift]
seeds: {seeds}
measure: {{throughput_batch: 32, throughput_seconds: 0.05}}
models:
  - name: resnet20
    label: resnet-tiny
    model_kwargs: {{layers: [1, 1, 1], widths: [8, 16, 32], stem_width: 8}}
  - name: resnet20
    label: resnet-tiny-w
    model_kwargs: {{layers: [1, 1, 1], widths: [8, 16, 48], stem_width: 8}}
{extra}"""


def tiny_protocol(path: Path, epochs: int = 1, seeds=(0,), extra: str = "") -> Path:
    extra = textwrap.indent(textwrap.dedent(extra), "  ")
    path.write_text(TINY.format(epochs=epochs, seeds=list(seeds), extra=extra))
    return path


def archlab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "archlab.cli", *args]


def env(tmp: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(XDG_CACHE_HOME=str(tmp / "cache"), ARCHLAB_OFFLINE="1", OMP_NUM_THREADS="1",
             PYTHONPATH=str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", ""))
    return e


# --------------------------------------------------------------------------------------
# PostgreSQL on loopback
# --------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    base = Path("/usr/lib/postgresql")
    versions = sorted((p for p in base.glob("*/bin") if (p / "pg_ctl").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl in a temporary directory; trust authentication on 127.0.0.1 only."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        if self.bindir is None:
            pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
        pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
        self.base = Path(tempfile.mkdtemp(prefix="archlab-pg-"))
        self.data, self.sock = self.base / "data", self.base / "sock"
        self.sock.mkdir()
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            # initdb refuses to run as root: the cluster belongs to an ordinary user.
            for name in ("postgres", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chown(self.base, pw.pw_uid, pw.pw_gid)
                os.chown(self.sock, pw.pw_uid, pw.pw_gid)
                break
            if self.user is None:
                pytest.skip("running as root and no 'postgres' user to own the test cluster")
        self._run("initdb", "-D", str(self.data), "-U", "archlab", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w",
                  "-t", "60", "-o", f"-k {self.sock} -p {self.port} "
                  "-c listen_addresses=127.0.0.1 -c fsync=off", "start")
        self.url = f"postgresql://archlab@127.0.0.1:{self.port}/postgres"
        self._n = 0

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=str(self.base))
        if out.returncode:
            log = self.base / "server.log"
            raise RuntimeError(f"{tool} failed: {out.stderr or out.stdout}"
                               + (log.read_text()[-2000:] if log.exists() else ""))

    def new_database(self) -> str:
        import psycopg

        self._n += 1
        name = f"study_{os.getpid()}_{self._n}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://archlab@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


def wait_for(predicate, timeout: float = 60.0, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def tiny_resnet_setting(setting: dict) -> dict:
    """A ResNet-variant experiment's quick setting (tricks, se-cost, cardinality) shrunk to
    the digits at 16 px, one epoch, two seeds: a few seconds per run."""
    return {**setting, "data": {"dataset": "digits", "image_size": 16, "val_fraction": 0.1},
            "recipe": {"epochs": 1, "batch_size": 64}, "image_size": 16, "seeds": 2,
            "jobs": 1}


def run_experiment_twice(name: str, decide, tmp_path: Path, figures: int = 1,
                         page_shows: tuple[str, ...] = ()):
    """Run an experiment at quick scale into `tmp_path`, check its page (at least `figures`
    plots, the verdict, each of `page_shows`) and verdict.json (the verdict is `decide` of
    the recorded numbers), run it again and check that the study resumed to the same
    numbers; the outcome and the record."""
    import json

    from archlab.experiments import Context, run_experiment

    ctx = Context(out_dir=tmp_path, verbose=False)
    outcome = run_experiment(name, ctx)
    out = tmp_path / name
    record = json.loads((out / "verdict.json").read_text())
    assert record["verdict"] == outcome.verdict
    assert decide(record["numbers"])[0] == record["verdict"]
    html = (out / "index.html").read_text()
    assert html.count("<svg") >= figures and record["verdict"] in html
    assert all(text in html for text in page_shows)
    assert (out / "study" / "study.db").exists()
    assert run_experiment(name, ctx).numbers == outcome.numbers
    return outcome, record
