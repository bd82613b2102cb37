"""The registry's 1x3x3 pools as 2D pools on frames; below 16 channels as separable passes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.cpu.kernels import AvgPool3x3, separable_3x3
from pvnas.nn.fast.layout import GROUP_CHANNELS
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
