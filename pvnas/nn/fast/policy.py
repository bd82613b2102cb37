"""Which kernels the fast forwards take: the CPU-tuned ones, or generic ones made of plain differentiable
torch ops.

The CPU-tuned kernels route around oneDNN's slow paths and save memory by recomputing in backward (custom
autograd functions, gradient-layout hooks, separable pools, channels-first BatchNorm at odd channel counts).
On a GPU those same choices cost: each custom backward is a chain of small launches (the pool recomputation
took 17% of an H200 search step), and they stop ``torch.compile`` from fusing the memory-bound ops around them.
So every other device takes the generic kernels (cuDNN, or what inductor generates); both compute the same
function, and :func:`generic_kernels` forces the generic ones on CPU, where the float64 tests compare them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

_FORCED = [False]


def generic(x: torch.Tensor) -> bool:
    """Whether the kernels for tensor ``x`` are the generic ones: on any device but the CPU, or forced. (The meta
    device, where ``pvnas estimate`` counts activations, takes the CPU's unless forced.)"""
    return _FORCED[0] or x.device.type not in ("cpu", "meta")


@contextmanager
def generic_kernels(enabled: bool = True) -> Iterator[None]:
    """Take the generic kernels on CPU too, inside the block (tests, benchmarks)."""
    before = _FORCED[0]
    _FORCED[0] = enabled
    try:
        yield
    finally:
        _FORCED[0] = before
