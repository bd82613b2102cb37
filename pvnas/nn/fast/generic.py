"""Generic kernels: plain differentiable torch ops that a compiler fuses (:mod:`~pvnas.nn.fast.policy` picks them
off the CPU, and on it when forced)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def depthwise_by_shifts(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, ...], padding: tuple[int, ...],
                        dilation: int, groups: int) -> torch.Tensor:
    """A depthwise conv (``groups`` input channels, ``weight`` (groups * m, 1, kh, kw): m filters per channel) as
    the sum over the kernel's taps of shifted views of the zero-padded input, each scaled per channel: pure
    element-wise work that a compiler fuses into one kernel, forward and backward. Under autocast it computes in
    the autocast dtype, as the conv it stands for (a float32 weight would turn every bf16 tap float32)."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    kh, kw = weight.shape[-2:]
    m = weight.shape[0] // groups
    n, c, h, w = x.shape
    sh, sw = stride
    ho = (h + 2 * padding[0] - dilation * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * padding[1] - dilation * (kw - 1) - 1) // sw + 1
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    if m > 1:  # output channel c * m + j reads input channel c
        xp = xp.repeat_interleave(m, dim=1)
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, :, dilation * i: dilation * i + sh * (ho - 1) + 1: sh, dilation * j: dilation * j + sw * (wo - 1) + 1: sw]
            term = tap * weight[:, 0, i, j].view(1, -1, 1, 1)
            out = term if out is None else out + term
    assert out is not None
    return out
