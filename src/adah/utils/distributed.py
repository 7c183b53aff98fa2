"""Data-parallel training with PyTorch's own engine: ``torchrun --nproc_per_node N -m adah train``.

Every process reads the same global batch order and takes its share of each batch (a sampler
that keeps the global batches of a single-process run); the model is wrapped in
DistributedDataParallel; codes are all-gathered with gradients so each process ranks its own
queries against the whole batch, and triplet counts are summed over processes, so the loss and
its gradient equal a single-process run with the same global batch. gloo on the CPU (BatchNorm
statistics stay per process there: PyTorch's SyncBatchNorm needs a GPU), nccl with
SyncBatchNorm on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from adah.errors import AdahError


@dataclass
class DistContext:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, use_cuda: bool) -> "DistContext":
        """Join the process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK); a plain run
        is a world of one and initialises nothing."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return cls(world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This process's contiguous share of a global batch (equal shares)."""
        if len(rows) % self.world_size:
            raise AdahError(f"train.batch_size {len(rows)} must be divisible by the {self.world_size} processes")
        size = len(rows) // self.world_size
        return rows[self.rank * size : (self.rank + 1) * size]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-sized tensors from all processes along dim 0, keeping gradients."""
        if not self.enabled:
            return t
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(t), dim=0)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over processes, without gradient (counts, logged values)."""
        if not self.enabled:
            return t
        t = t.detach().clone()
        dist.all_reduce(t)
        return t

    def gather_rows(self, local: np.ndarray, sizes: list[int]) -> np.ndarray:
        """Concatenate per-process arrays of different lengths (``sizes``) in rank order."""
        if not self.enabled:
            return local
        width = max(sizes)
        padded = torch.zeros((width, *local.shape[1:]), dtype=torch.from_numpy(local[:0]).dtype)
        padded[: len(local)] = torch.from_numpy(local)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return np.concatenate([p[:n].numpy() for p, n in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` (SyncBatchNorm first on GPUs); the model itself
    when not distributed. Unused parameters happen (a G step leaves a branch out), so DDP looks
    for them."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index], find_unused_parameters=True)
    return DistributedDataParallel(model, find_unused_parameters=True)
