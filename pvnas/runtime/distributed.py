"""torchrun-aware process groups: nccl on GPUs, gloo on CPU; rank 0 alone writes and shows progress.

A rank that dies (SIGKILL, the OOM killer, a lost node) must not leave the others waiting forever: every
collective has a timeout (:func:`collective_timeout`, ``PVNAS_COLLECTIVE_TIMEOUT`` seconds, default 600, the
NCCL default), after which the waiting ranks fail; gloo notices a peer whose process died at once (its sockets
close). The failure is :func:`collective_failure`, which the command line reports as one line.

We synchronise gradients by hand (one flattened all-reduce per step) instead of wrapping the model
in DDP: the search alternates two optimizers over disjoint parameter sets and backpropagates to
one set at a time, which DDP's reducer (expecting every parameter's gradient) does not allow.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

from pvnas.errors import ConfigError, PvnasError

TIMEOUT_ENV = "PVNAS_COLLECTIVE_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0


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
        timeout = timedelta(seconds=collective_timeout())
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        # torchrun --max-restarts keeps its store across restarts: without a prefix of their own, the restarted
        # ranks could read the addresses the lost ones published and fail (or wait) connecting to them
        store = dist.PrefixStore(f"pvnas/restart-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend="nccl" if cuda else "gloo", store=store, rank=rank, world_size=world,
                                timeout=timeout)
    return DistEnv(rank, world, local_rank, torch.device(f"cuda:{local_rank}" if cuda else "cpu"))


def collective_timeout() -> float:
    """Seconds a rank waits in a collective for the others before it fails (``PVNAS_COLLECTIVE_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return seconds


def collective_failure(exc: BaseException) -> bool:
    """True if ``exc`` was raised by a torch.distributed call: a peer died or did not answer in time."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return isinstance(exc, RuntimeError) and bool(frames) and "torch/distributed/" in frames[-1].filename.replace("\\", "/")


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
