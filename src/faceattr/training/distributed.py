"""Multi-process training (``torchrun --nproc_per_node=N -m faceattr train -c CONFIG``): process group, sharding,
reductions, and batch-norm statistics over all processes.

A run with N processes and ``train.batch_size = B`` computes what one process with batch B computes:

- every process draws the same permutation and the same augmentation parameters for the whole batch of B, and
  keeps its own contiguous B/N rows of it (:meth:`TensorDataset.batches` ``part=``, :func:`augment` ``rows=``);
- each task's loss is the *global* mean over the labelled rows of all processes (the counts are all-reduced), so
  DistributedDataParallel's gradient average equals the single-process gradient even when the labels missing in
  a shard differ; the loss-weighting parameters (the uncertainty log-variances) are averaged the same way, so they
  stay identical on every process;
- batch norm uses the statistics of the whole batch: ``torch.nn.SyncBatchNorm`` on GPUs, and on CPUs (where
  torch's refuses to run) :class:`CpuSyncBatchNorm`, the same two-pass mean/variance over
  ``torch.distributed.nn.functional.all_reduce`` (differentiable, so the backward pass is exact too);
- validation is sharded and the outputs gathered, so every process computes the same metrics; only rank 0 writes
  checkpoints and logs.

Dropout masks are drawn per process and so differ from a single-process run (same distribution); gradnorm, which
needs per-task gradient norms of the whole batch, is refused under several processes.
"""

from __future__ import annotations

import datetime
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``world == 1`` is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; a no-op for one process."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL on GPUs, gloo on CPUs. Without those variables: one process."""
    world = env_world_size()
    if world <= 1:
        return DistContext(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    # torch >= 2.6 marks the differentiable all-reduce deprecated in favour of a private module; it is the one
    # that exists on every torch this project supports (>= 2.4)
    warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_reduce is deprecated", FutureWarning)
    # depthwise 3x3 weights in channels_last have strides DDP's buckets do not mirror: a copy, not an error
    warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides", UserWarning)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    log.info("process %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    return DistContext(rank, world, local, device, owns)


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """Batch norm over the batch of all processes, for CPU tensors (``torch.nn.SyncBatchNorm`` accepts only GPU
    ones). Outside training, or with one process, it is a plain ``BatchNorm2d``; its state keys are the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        if x.dim() != 4:
            raise ValueError(f"CpuSyncBatchNorm expects N x C x H x W, got {tuple(x.shape)}")
        c = x.shape[1]
        xf = x.float()
        n = all_reduce(xf.new_tensor([float(xf.numel() // c)]))
        mean = all_reduce(xf.sum(dim=(0, 2, 3))) / n
        centred = xf - mean.view(1, c, 1, 1)
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n  # biased, as batch norm normalises
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * n.detach() / (n.detach() - 1).clamp(min=1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm2d`` of ``module`` computing its statistics over all processes (weights kept)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_cpu_sync(module)


def _to_cpu_sync(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, _to_cpu_sync(child))
    return module


def average_gradients(params: Any, ctx: DistContext) -> None:
    """Average ``.grad`` of parameters that DistributedDataParallel does not own (the loss weighting's)."""
    if not ctx.active:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world)


def shard_range(n: int, ctx: DistContext) -> tuple[int, int]:
    """Contiguous rows [start, stop) of ``n`` for this process (the first ones get one more when uneven)."""
    per, extra = divmod(n, ctx.world)
    start = ctx.rank * per + min(ctx.rank, extra)
    return start, start + per + (1 if ctx.rank < extra else 0)


def gather_rows(arrays: dict[str, np.ndarray], ctx: DistContext) -> dict[str, np.ndarray]:
    """Concatenate, in rank order, each process's rows of every array (all processes get the whole)."""
    if not ctx.active:
        return arrays
    parts: list[Any] = [None] * ctx.world
    dist.all_gather_object(parts, arrays)
    return {k: np.concatenate([p[k] for p in parts]) for k in arrays}
