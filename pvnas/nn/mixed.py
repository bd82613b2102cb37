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

    def forward(self, x: torch.Tensor, weights: torch.Tensor, skip_noise: torch.Tensor | None = None) -> torch.Tensor:
        """``skip_noise``: added to the output of ``identity`` where it is one (not a reduction's FactorizedReduce)."""
        return sum(w * (op(x) + skip_noise if isinstance(op, nn.Identity) and skip_noise is not None else op(x))
                   for w, op in zip(weights, self.ops))  # type: ignore[return-value]


def skip_noise(x: torch.Tensor, scale: float, frames: bool = False) -> torch.Tensor:
    """NoisyDARTS' noise for the skip connection leaving a node: Gaussian, zero mean, std ``scale`` times the
    node's own std, so that identity cannot win by being the cleanest path. Drawn in one canonical order,
    (N, T, H, W, C), whether ``x`` is a clip (N, C, T, H, W) or, with ``frames``, channels-last frames
    (N*T, C, H, W): both supernet implementations then draw the same noise."""
    std = x.detach().std() * scale
    if frames:
        nt, c, h, w = x.shape
        return (torch.randn(nt, h, w, c, dtype=x.dtype, device=x.device) * std).permute(0, 3, 1, 2)
    n, c, t, h, w = x.shape
    return (torch.randn(n, t, h, w, c, dtype=x.dtype, device=x.device) * std).permute(0, 4, 1, 2, 3)
