"""Memory for ``pvnas estimate``: a process's peak, what is still available, and the activations autograd
keeps for a forward, counted on fake tensors (no memory, no compute: safe at any size)."""

from __future__ import annotations

import resource
from typing import Callable

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from pvnas.runtime.device import synchronize


def _status_mb(field: str, path: str = "/proc/self/status") -> float | None:
    """A memory field of a /proc status file (Linux) in MiB, or None where there is none."""
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Start a new peak-RSS window (Linux: VmHWM := VmRSS) and return the current RSS in MiB.

    Elsewhere the peak is the process's lifetime ``ru_maxrss``, which a forked child inherits from its parent.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    current = _status_mb("VmRSS")
    return current if current is not None else peak_rss()


def peak_rss() -> float:
    """Peak resident memory of this process in MiB since :func:`reset_peak_rss` (where supported)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_mb(device: torch.device) -> float | None:
    """Memory a step could still use, MiB: the kernel's MemAvailable on CPU (Linux; None elsewhere), the free
    plus this process's cached memory on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return (free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)) / 2**20
    return _status_mb("MemAvailable", "/proc/meminfo")


class PeakMeter:
    """The peak memory growth (MiB) of what runs between :meth:`start` and :meth:`peak`, over what the process
    held at construction: resident memory on CPU, allocated memory on CUDA (exact)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda = device, device.type == "cuda"
        self.base = torch.cuda.memory_allocated(device) / 2**20 if self.cuda else reset_peak_rss()

    def start(self) -> None:
        if self.cuda:
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            reset_peak_rss()

    def sync(self) -> None:
        synchronize(self.device)

    def release(self) -> None:
        """After an out-of-memory: hand the cached blocks back (CUDA), so that what follows can allocate."""
        if self.cuda:
            torch.cuda.empty_cache()

    def peak(self) -> float:
        self.sync()
        return (torch.cuda.max_memory_allocated(self.device) / 2**20 if self.cuda else peak_rss()) - self.base


def activation_bytes(model: nn.Module, clips: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in one training forward (fake tensors too:
    storages are told apart by identity, not by address)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(clips)
    return sum(seen.values())


def counted_activations_mb(build: Callable[[], nn.Module], clip: tuple[int, ...], device: torch.device,
                           amp_dtype: torch.dtype | None = None) -> tuple[float, float]:
    """(MiB at batch 1, MiB per further clip) that autograd saves in a training forward of the model ``build``
    makes, on ``device`` under ``amp_dtype`` autocast (None: none), as the step runs it: torch's own autocast
    decides what is saved in bf16 (under CUDA autocast about half the float32 count). Counted on fake tensors of
    that device: nothing is allocated or computed, so it is safe at any size and needs no free memory."""
    with FakeTensorMode(), torch.device(device):
        model = build()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            one, two = (activation_bytes(model, torch.zeros(b, *clip)) / 2**20 for b in (1, 2))
    return one, two - one


def state_mb(model: nn.Module) -> float:
    """MiB that gradients and one optimizer buffer per parameter will add to the model (SGD momentum; Adam's
    two buffers are for the alphas only)."""
    return 2 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
