"""Training on several processes: DistributedDataParallel under torchrun.

    torchrun --nproc_per_node 2 -m archlab.cli train --model resnet20 --data fashion-mnist \\
        --out runs/r20-ddp
    torchrun --nproc_per_node 4 --no-python archlab train ...        # the console script

torchrun starts one process per GPU (or per share of the CPU) and sets RANK, LOCAL_RANK and
WORLD_SIZE; the trainer sees WORLD_SIZE > 1 and then:

- joins the process group: NCCL with one GPU per process (cuda:LOCAL_RANK), gloo on the CPU;
- keeps `batch_size` the *global* batch: each of the N processes takes its 1/N slice of every
  batch, so a recipe means the same training on 1 or N processes, a run resumes on another
  number of processes, and the gradient DDP averages (the mean of the processes' mean
  losses over equal slices) is the single-process gradient of the whole batch;
- images held in memory: every process draws the same global batch and its augmentation
  (the draws are per position in the batch) and keeps its slice, so the inputs are exactly
  the single-process ones; image files: each process decodes only its slice (each file's
  crop and flip depend on (seed, epoch, file), never on the process), and the per-batch
  device steps (PCA lighting, random erasing, mixup, cutmix) draw from a stream per process;
- with `sync_bn`, batch norm normalises by the statistics of the global batch (torch's
  SyncBatchNorm on GPUs, `SyncBatchNorm` below on the CPU, which torch's does not run on);
  without it each process normalises by its own slice, as DDP does by default;
- only rank 0 prints, writes run.log, metrics and checkpoints, and evaluates (the others
  wait for it at the next step); the ranks agree on stopping (Ctrl-C, SIGTERM) and on a
  non-finite loss at the same step, so no process is left waiting for the others.

Several machines: the same command on each, with a rendezvous every node can reach:

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29400 --rdzv-id r50 -m archlab.cli train ...

Why not bit-exact against one process: the all-reduce sums the processes' gradients in
another order than one process sums its batch, and the synchronised batch norm sums its
statistics in another order than the fused kernel; float addition is not associative, so
the weights agree to about 1e-6 relative per step, and drift apart slowly after that.
"""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number of "
                         "processes; start several processes with torchrun") from None


@dataclass
class DistContext:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    _wrapped: Any = None
    _signature: tuple | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.backend})"

    def barrier(self) -> None:
        dist.barrier()

    # -- agreement between the processes ------------------------------------------------
    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The elementwise sum over the processes (a copy on this process's device)."""
        out = values.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(out)
        return out.to(values.device)

    def check(self, losses: torch.Tensor, stop: bool) -> tuple[torch.Tensor, bool]:
        """(the losses averaged over the processes, whether any process asked to stop): a
        NaN anywhere is a NaN everywhere, and all stop at the same step."""
        both = torch.cat([losses.detach().double().flatten().to(self.device),
                          torch.tensor([float(stop)], dtype=torch.float64,
                                       device=self.device)])
        dist.all_reduce(both)
        return (both[:-1] / self.world_size).to(losses.device), bool(both[-1] > 0)

    # -- the model ---------------------------------------------------------------------
    def wrap(self, net: nn.Module) -> nn.Module:
        """`net` under DistributedDataParallel. The wrapper is rebuilt when the set of
        trainable parameters changes (fine-tuning unfreezes the body), since DDP only
        averages the gradients of the parameters trainable when it was built."""
        signature = tuple(p.requires_grad for p in net.parameters())
        if self._wrapped is None or self._wrapped.module is not net or \
                signature != self._signature:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._wrapped = DistributedDataParallel(net, device_ids=ids)
            self._signature = signature
        return self._wrapped


def setup(device: str = "auto") -> DistContext | None:
    """Join the process group torchrun describes; None when this is the only process."""
    world = world_size_from_env()
    if world <= 1:
        return None
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU")
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process {local} of this machine has no GPU of its own "
                               f"({torch.cuda.device_count()} GPUs): start at most that many "
                               "with --nproc_per_node")
        dev, backend = torch.device("cuda", local), "nccl"
        torch.cuda.set_device(dev)
    elif device in ("auto", "cpu"):
        dev, backend = torch.device("cpu"), "gloo"
    else:
        raise ValueError(f"device {device!r} cannot be shared by {world} processes; use cuda "
                         "(one GPU per process) or cpu")
    if not dist.is_initialized():
        # Rank 0 evaluates while the others wait at their next step: allow a long wait.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
        atexit.register(_shutdown)
    return DistContext(rank, world, local, backend, dev)


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Process `rank`'s slice of a global batch (along the first dimension)."""
    return batch.tensor_split(world)[rank]


def check_batch_size(batch_size: int, world: int) -> int:
    """The batch each process takes: `batch_size` is the global batch."""
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is the global batch and must divide among "
                         f"{world} processes: use a multiple of {world}, e.g. "
                         f"{batch_size - batch_size % world or world}")
    return batch_size // world


# --------------------------------------------------------------------------------------
# Synchronised batch norm that also runs on the CPU
# --------------------------------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """The sum over the processes, differentiable: the gradient of a sum every process
    holds is the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class SyncBatchNorm(_BatchNorm):
    """Batch norm over the global batch of all processes, in plain differentiable ops:
    the sums of x and then of (x - mean)^2 are all-reduced (the all-reduce carries the
    gradient back to every process), so training normalises exactly
    as one process would on the whole batch, and the running statistics move as there
    (the unbiased variance, n / (n - 1)). In eval mode, or alone, it is plain batch norm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        total = all_reduce(torch.cat([xf.sum(dims), count]))
        n = total[-1].detach()
        mean = total[:-1] / n
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (self.momentum if self.momentum is not None
                     else 1.0 / float(self.num_batches_tracked))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * (n / (n - 1).clamp_min(1))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm1d/2d/3d of `model` synchronised: torch's SyncBatchNorm on GPUs, ours
    on the CPU. The parameters and buffers are the same objects, so the state dict keeps
    its keys and an optimizer built before still holds them."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            new = SyncBatchNorm(module.num_features, module.eps, module.momentum,
                                module.affine, module.track_running_stats)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in module.named_children():
            converted = convert(child)
            if converted is not child:
                setattr(module, name, converted)
        return module

    return convert(model)
