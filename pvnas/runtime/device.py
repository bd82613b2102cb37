"""Where and how a network runs: device, precision, memory layout, compilation, torch threads.

Every command (search, train, eval, predict, estimate, the benchmarks) takes these decisions here, so
that a measured choice is made once:

* **CUDA**: bf16 autocast (convs and matmuls on tensor cores; reductions, softmax, the loss and every
  parameter, gradient and optimizer state stay float32, so alpha and its gradients are float32 too; bf16 has
  float32's range, no loss scaling), channels-last-3d model and clips (cuDNN's NHWC kernels; the fast
  forwards' frames are then views of the input), ``cudnn.benchmark`` (static shapes: the fastest algorithm
  per shape, picked once);
* **CPU**: float32, on the torch threads of the config (``threads``, :func:`torch_threads`): one for the tiny
  ``demo``/``tiny`` networks, whose steps lose more to OpenMP barriers than a second thread gains, every core
  for the others (docs/performance.md, "Threads");
* ``--compile``: ``torch.compile`` of the network, off by default (docs/performance.md).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Iterator

import torch
from torch import nn


def default_device() -> torch.device:
    """The first CUDA device if there is one, else the CPU (a torchrun rank picks its own: runtime.distributed)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype a step runs in on ``device``: bfloat16 on CUDA, None (float32 throughout) elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else None


def autocast(device: torch.device, enabled: bool = True) -> AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed), a no-op context elsewhere (CPU, meta) or when not ``enabled``."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` if ``enabled`` (``--compile``), else ``model``. The networks are static, so they
    compile once per input shape (and, for the supernet, once per set of frozen parameters); static shapes
    (``dynamic=False``): a second batch size compiles its own graph instead of a slower dynamic-shape one."""
    return torch.compile(model, dynamic=False) if enabled else model  # type: ignore[return-value]


def cuda_layout(model: nn.Module, device: torch.device) -> None:
    """On CUDA: the model in channels-last-3d memory (cuDNN's NHWC kernels; :func:`to_device` lays clips out so
    too) and ``cudnn.benchmark`` (the networks' shapes are static: the fastest algorithm per shape, picked once)."""
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last_3d)
        torch.backends.cudnn.benchmark = True


def to_device(clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a ``(N, 3, T, H, W)`` batch; channels-last-3d on CUDA, where cuDNN prefers it."""
    if device.type == "cuda":
        return clips.to(device, non_blocking=True, memory_format=torch.channels_last_3d)
    return clips.to(device)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA; elsewhere it ran already): before every clock reading."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask: a container or ``taskset`` share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block on ``threads`` torch threads (0: every core this process may use, :func:`cpu_cores`) and
    restore the previous number afterwards; yields the number used."""
    before = torch.get_num_threads()
    used = threads or cpu_cores()
    torch.set_num_threads(used)
    try:
        yield used
    finally:
        torch.set_num_threads(before)
