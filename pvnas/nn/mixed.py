"""The literal DARTS mixed edge, in 3D: the correctness oracle and benchmark baseline.

Every candidate op runs on the full input and the outputs are summed with softmax weights,
``zero`` included. It is slow on purpose: fast implementations are checked against it.
"""

from __future__ import annotations

import torch
from torch import nn

from pvnas.space.ops import Stride, build_op


class MixedOp(nn.Module):
    """sum_o w_o * o(x) over the candidate ``ops`` (DARTS ``MixedOp``, pools followed by BN)."""

    def __init__(self, channels: int, stride: Stride, ops: tuple[str, ...]) -> None:
        super().__init__()
        self.names = ops
        self.ops = nn.ModuleList()
        for name in ops:
            op = build_op(name, channels, stride, affine=False)
            if "pool" in name:  # as in DARTS: pools get an affine-free BN to match conv output scale
                op = nn.Sequential(op, nn.BatchNorm3d(channels, affine=False))
            self.ops.append(op)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))  # type: ignore[return-value]
