"""torchrun-aware process groups: nccl on GPUs, gloo on CPU; rank 0 alone writes and shows progress.

We synchronise gradients by hand (one flattened all-reduce per step) instead of wrapping the model
in DDP: the search alternates two optimizers over disjoint parameter sets and backpropagates to
one set at a time, which DDP's reducer (expecting every parameter's gradient) does not allow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from pvnas.errors import PvnasError


class RankMismatchError(PvnasError):
    """Ranks disagree on something that must be identical (alphas, config)."""


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed() -> DistEnv:
    """Join the torchrun process group when WORLD_SIZE > 1, else a single-process environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return DistEnv(device=torch.device("cuda" if cuda else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DistEnv(rank, world, local_rank, torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, env: DistEnv) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if env.enabled:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[nn.Parameter], env: DistEnv) -> None:
    """All-reduce (mean) the gradients of ``params`` in one flat buffer; missing grads count as 0."""
    if not env.enabled:
        return
    params = [p for p in params]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= env.world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True if ``flag`` is true on any rank (e.g. a stop request or a non-finite loss)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def check_same_on_all_ranks(tensors: Iterable[torch.Tensor], what: str, env: DistEnv) -> None:
    """Cheap all-reduce of a checksum: fail loudly if ranks hold different values."""
    if not env.enabled:
        return
    checksum = torch.stack([t.detach().double().sum() + t.detach().double().abs().sum() for t in tensors]).sum()
    t = checksum.reshape(1).to(env.device if env.device.type == "cuda" else "cpu")
    lo, hi = t.clone(), t.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RankMismatchError(
            f"{what} differ across ranks (checksum min {lo.item():.17g} != max {hi.item():.17g}); "
            "gradients were not synchronised"
        )
