"""What the training steps of a run share so that no step waits for the device: the non-finite check and the
skipped update decided on the device, and the steps' results read a few at a time.

A host read per step (``loss.item()``, ``float(acc)``) makes the CPU wait for the GPU to finish the step before it
may queue the next one: with the ~17k kernel launches of a search step on an H200, that left the launch latency
exposed every step. So a step returns its loss, accuracy and finiteness as device tensors, skips its update on
the device where the loss is not finite (fused optimizers' ``found_inf``, as AMP's ``GradScaler`` skips a step),
and the run loop reads the results of :data:`READ_EVERY` steps at once (and before any checkpoint, at a stop and
at the epoch's end), accounting for each step as it would have been accounted for at once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from pvnas.runtime.distributed import DistEnv

READ_EVERY = 20  # steps whose results the run loop reads at once


def finite_on_all_ranks(loss: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """A 0-dim bool on the loss's device: whether ``loss`` is finite on every rank (an all-reduce; nothing is read
    on the host)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if env.enabled:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bad[0] == 0


def step_if(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` where ``finite`` (a 0-dim bool on the device) is true; where it is false parameters and
    optimizer state stay exactly as they were (a skipped step), decided on the device by the fused kernels."""
    if not getattr(optimizer, "_steps_if", False) or not all(group["fused"] for group in optimizer.param_groups):
        _fused(optimizer)
    optimizer.found_inf = (~finite).float()
    optimizer.step()


def _fused(optimizer: torch.optim.Optimizer) -> None:
    """Make SGD/Adam's groups fused (a checkpoint written before loads its groups unfused, Adam's step counts on the
    CPU), and give SGD zero momentum buffers up front: the fused kernel's own first-step buffers are uninitialised
    memory, kept as they are when that first step is skipped. With dampening 0 a zero buffer gives the same first
    update (0.9 x 0 + g = g)."""
    for group in optimizer.param_groups:
        group["fused"] = True
        for p in group["params"]:
            state = optimizer.state[p]
            if group.get("momentum") and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if isinstance(state.get("step"), torch.Tensor) and state["step"].device != p.device:
                state["step"] = state["step"].to(p.device, torch.float32)
    optimizer._steps_if = True  # type: ignore[attr-defined]
