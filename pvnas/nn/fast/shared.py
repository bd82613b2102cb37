"""A node's input as the conv ops of all its edges read it, computed once (both kernel targets)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pvnas.nn.fast.cpu.kernels import DiagonalPhases
from pvnas.nn.fast.layout import frames_grad
from pvnas.nn.fast.policy import generic


class SharedInput:
    """``relu(x)`` of a node, read by the conv ops of all its edges, and its diagonal pixel phases, computed once."""

    def __init__(self, r: torch.Tensor) -> None:
        self.r = frames_grad(r)
        self._phases: dict[int, tuple[torch.Tensor, ...]] = {}

    def phase(self, d: int, i: int) -> torch.Tensor:
        """Pixel phase (i, i) of ``r`` (see :class:`~pvnas.nn.fast.cpu.kernels.DiagonalPhases`): (N', C, ceil(H/d), ceil(W/d))."""
        if generic(self.r):  # strided views of the zero-padded frames
            h, w = self.r.shape[-2:]
            return F.pad(self.r, (0, -w % d, 0, -h % d))[:, :, i::d, i::d]
        if d not in self._phases:
            # split once: its backward concatenates the phases' gradients instead of zero-filling per slice
            self._phases[d] = DiagonalPhases.apply(self.r, d).split(self.r.shape[0])
        return self._phases[d][i]
