"""Several processes (DDP under torchrun, gloo on the CPU): the slices of a global batch, the
synchronised batch norm against one process's, and whole runs (fresh and resumed) that end
with the weights of one process on the same global batch.

Why a tolerance and not equality: the all-reduce adds the two processes' gradients in
another order than one process adds its batch, so the weights differ by float rounding
(~1e-7) after one step; training amplifies such differences (a network with batch norm at a
high learning rate turns a 1e-7 perturbation into 1e-1 within a few steps, on one process
alone), so the whole runs use LeNet-5 without dropout, where they stay near 1e-4.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from archlab.data import load_dataset
from archlab.data.loader import make_loader
from archlab.data.transforms import Augment, BatchPipeline
from archlab.train import Recipe, TrainingInterrupted, fit
from archlab.train import checkpoint as ckpt
from archlab.train import Trainer

LENET = ["--model", "lenet5", "--data", "digits", "--epochs", "2", "--batch-size", "64",
         "--lr", "0.05", "--threads", "1", "--set", "model_kwargs={drop_rate: 0.0}",
         "--no-progress"]
RECIPE = Recipe(epochs=2, batch_size=64, lr=0.05, threads=1, progress=False,
                model_kwargs={"drop_rate": 0.0})


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHLAB_OFFLINE", "1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------


def test_shards_of_a_batch_are_the_global_batch_cut_in_slices():
    data = load_dataset("digits", "train")
    pipe = BatchPipeline(8, [0.3], [0.3], Augment("basic", hflip=True), True)
    whole = make_loader(data, 48, pipe, seed=3)
    whole.set_epoch(1)
    batches = list(whole)
    shards = []
    for rank in range(3):
        loader = make_loader(data, 48, pipe, seed=3)
        loader.shard(rank, 3)
        loader.set_epoch(1)
        shards.append(list(loader))
        assert len(loader) == len(whole)                       # the same steps per epoch
    for k, (x, y, labels) in enumerate(batches):
        parts = [s[k] for s in shards]
        assert all(len(p[0]) == 16 for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)  # augmentation included
        assert torch.equal(torch.cat([p[2] for p in parts]), labels)
    loader = make_loader(data, 50, pipe)
    with pytest.raises(ValueError, match="batch_size 50 is the global batch"):
        loader.shard(0, 3)


def _sync_bn_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from archlab.train.distributed import convert_sync_batchnorm

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        x = torch.randn(8, 3, 5, 5) * 3 + 1
        w = torch.randn(8, 3, 5, 5)
        bn = torch.nn.BatchNorm2d(3)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
        sync = convert_sync_batchnorm(bn, torch.device("cpu"))
        part = slice(4 * rank, 4 * rank + 4)
        xs = x[part].clone().requires_grad_(True)
        y = sync(xs)
        ((y * w[part]).sum() / 4).backward()
        grads = torch.cat([sync.weight.grad, sync.bias.grad])
        dist.all_reduce(grads)                                 # as DDP does: the mean
        torch.save({"y": y.detach(), "x_grad": xs.grad / 2, "grads": grads / 2,
                    "mean": sync.running_mean, "var": sync.running_var,
                    "type": type(sync).__name__}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_on_the_cpu_is_batch_norm_of_the_global_batch(tmp_path):
    mp.spawn(_sync_bn_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    x = (torch.randn(8, 3, 5, 5) * 3 + 1).requires_grad_(True)
    w = torch.randn(8, 3, 5, 5)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    y = bn(x)
    ((y * w).sum() / 8).backward()
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert got["type"] == "SyncBatchNorm"
        part = slice(4 * rank, 4 * rank + 4)
        torch.testing.assert_close(got["y"], y[part].detach())
        torch.testing.assert_close(got["x_grad"], x.grad[part])
        torch.testing.assert_close(got["grads"], torch.cat([bn.weight.grad, bn.bias.grad]))
        torch.testing.assert_close(got["mean"], bn.running_mean)
        torch.testing.assert_close(got["var"], bn.running_var)   # unbiased, global n


# --------------------------------------------------------------------------------------
# Whole runs under torchrun
# --------------------------------------------------------------------------------------


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc_per_node", "2", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "archlab.cli", "train", *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def assert_close_weights(a: dict, b: dict, atol: float = 2e-3) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-2, msg=k)


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """The reference: one process, global batch 64."""
    os.environ["ARCHLAB_OFFLINE"] = "1"
    run_dir = tmp_path_factory.mktemp("single") / "run"
    fit("lenet5", "digits", RECIPE, run_dir=run_dir, verbose=False)
    return run_dir


@pytest.mark.slow
def test_two_processes_end_where_one_does(single_run, tmp_path):
    done = torchrun([*LENET, "--out", str(tmp_path / "ddp")], tmp_path)
    assert "2 processes (gloo): each takes 32 of every batch of 64" in done.stdout
    assert done.stdout.count("final validation top-1") == 1      # rank 0 alone speaks
    ddp, one = ckpt.read_model(tmp_path / "ddp")[0], ckpt.read_model(single_run)[0]
    assert_close_weights(ddp, one)
    # and not trivially: training moved the weights far more than the tolerance
    init = Trainer("lenet5", "digits", RECIPE, verbose=False).model.state_dict()
    assert max((one[k] - init[k]).abs().max().item() for k in one) > 0.05
    hist = [r["train_loss"] for r in ckpt.load_checkpoint(tmp_path / "ddp")[0]["history"]]
    ref = [r["train_loss"] for r in ckpt.load_checkpoint(single_run)[0]["history"]]
    assert hist == pytest.approx(ref, rel=1e-3)                  # the global batch's loss


@pytest.mark.slow
def test_a_run_resumes_on_two_processes(single_run, tmp_path):
    class StopAfterOneEpoch:
        def on_epoch_end(self, trainer, row):
            trainer.request_stop()

    run_dir = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        fit("lenet5", "digits", RECIPE, run_dir=run_dir, verbose=False,
            callbacks=[StopAfterOneEpoch()])
    assert ckpt.load_checkpoint(run_dir)[0]["epoch"] == 1
    done = torchrun(["--resume", str(run_dir), "--no-progress"], tmp_path)
    assert "resuming" in done.stdout
    assert_close_weights(ckpt.read_model(run_dir)[0], ckpt.read_model(single_run)[0])


def test_a_global_batch_that_does_not_divide_is_refused(monkeypatch):
    from archlab.train import distributed

    three = distributed.DistContext(0, 3, 0, "gloo", torch.device("cpu"))
    monkeypatch.setattr(distributed, "setup", lambda device="auto": three)
    with pytest.raises(ValueError, match=r"batch_size 50 is the global batch and must divide "
                                         r"among 3 processes: use a multiple of 3, e\.g\. 48"):
        Trainer("lenet5", "digits", RECIPE.replace(batch_size=50), verbose=False)
