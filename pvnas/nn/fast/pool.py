"""The registry's 1x3x3 pools as 2D pools on frames; below 16 channels as separable passes."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.layout import GROUP_CHANNELS, nchw, nhwc
from pvnas.nn.fast.policy import generic


def pool_frames(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """A 1xkxk Avg/MaxPool3d module of the registry applied as a 2D pool on frames."""
    k, s, p = pool.kernel_size[1:], pool.stride[1:], pool.padding[1:]
    same_3x3 = (k, s, p, pool.ceil_mode) == ((3, 3), (1, 1), (1, 1), False) and not generic(x)
    if isinstance(pool, nn.AvgPool3d):
        if same_3x3 and not pool.count_include_pad and x.shape[1] < GROUP_CHANNELS:
            return AvgPool3x3.apply(x)
        return F.avg_pool2d(x, k, s, p, pool.ceil_mode, pool.count_include_pad)
    if same_3x3 and pool.dilation == 1 and not x.requires_grad:
        return separable_3x3(x, torch.maximum)
    return F.max_pool2d(x, k, s, p, ceil_mode=pool.ceil_mode)


def separable_3x3(x: torch.Tensor, combine: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``combine`` (``torch.maximum``, ``torch.add``) over each pixel's 3x3 neighbourhood of channels-last
    frames, neighbours outside the frame left out: a pass over rows, then one over columns, written with
    ``out=``. CPU pooling kernels cost per pixel whatever the channel count, this per element.

    As max pool: the same values as ``F.max_pool2d``, whose CPU kernel always writes int64 argmax indices
    too, 3-12x slower below 16 channels; forward only (its backward would not pick ``max_pool2d``'s tie
    winner). As box sum: the 3x3 average pool (:class:`AvgPool3x3`), 2-5x faster below 16 channels.
    """
    v = nhwc(x)
    rows = torch.empty_like(v)  # each pixel with its row neighbours, then with its column neighbours
    combine(v[:, :, 1:], v[:, :, :-1], out=rows[:, :, 1:])
    rows[:, :, 0] = v[:, :, 0]
    combine(rows[:, :, :-1], v[:, :, 1:], out=rows[:, :, :-1])
    out = torch.empty_like(rows)
    combine(rows[:, 1:], rows[:, :-1], out=out[:, 1:])
    out[:, 0] = rows[:, 0]
    combine(out[:, :-1], rows[:, 1:], out=out[:, :-1])
    return nchw(out)


def _inverse_counts(x: torch.Tensor) -> torch.Tensor:
    """(H, W, 1): 1 / the number of pixels of each 3x3 window inside frames like ``x`` (pad not counted)."""
    counts = [torch.full((n,), 3.0, dtype=x.dtype, device=x.device) for n in x.shape[-2:]]
    for c in counts:
        c[0] -= 1
        c[-1] -= 1
    return torch.outer(*counts).reciprocal_()[..., None]


class AvgPool3x3(torch.autograd.Function):
    """``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`` of channels-last frames as separable box sums
    scaled per pixel; its backward is the box sum of the scaled gradient (the box is symmetric)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        inv = _inverse_counts(x)
        ctx.save_for_backward(inv)
        return nchw(nhwc(separable_3x3(x, torch.add)).mul_(inv))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inv,) = ctx.saved_tensors
        return separable_3x3(nchw(nhwc(grad) * inv), torch.add)
