"""Which kernels the fast forwards take: the CPU-tuned ones, or generic ones made of plain differentiable
torch ops.

The CPU-tuned kernels route around oneDNN's slow paths and save memory by recomputing in backward (custom
autograd functions, gradient-layout hooks, separable pools, channels-first BatchNorm at odd channel counts).
On a GPU those same choices cost: each custom backward is a chain of small launches (the pool recomputation
took 17% of an H200 search step), and they stop ``torch.compile`` from fusing the memory-bound ops around them.
So every other device takes the generic kernels (cuDNN, or what inductor generates); both compute the same
function, and :func:`generic_kernels` forces the generic ones on CPU, where the float64 tests compare them.

Under ``torch.compile`` the generic depthwise convs become sums of shifted, per-channel-scaled views
(:func:`~pvnas.nn.fast.generic.depthwise_by_shifts`), which inductor fuses into one memory-bound kernel with their
neighbours, instead of cuDNN's grouped direct kernels (a quarter of an H200 search step, eager);
:func:`shifted_depthwise` takes that form without compiling, for the tests.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

_FORCED = [False]
_SHIFTS = [False]


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


def depthwise_as_shifts(x: torch.Tensor) -> bool:
    """Whether a depthwise conv of ``x`` runs as shifted sums: generic kernels being compiled, or forced."""
    return _SHIFTS[0] or (generic(x) and torch.compiler.is_compiling())


@contextmanager
def shifted_depthwise(enabled: bool = True) -> Iterator[None]:
    """Depthwise convs as shifted sums inside the block, compiled or not (tests)."""
    before = _SHIFTS[0]
    _SHIFTS[0] = enabled
    try:
        yield
    finally:
        _SHIFTS[0] = before
