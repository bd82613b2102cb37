"""Small layers of the search and retrain networks that the op registry does not own.

Both networks (and every cell implementation) build their stem and cell inputs here, so that the
cells can import them without importing the network that registers them.
"""

from __future__ import annotations

import torch
from torch import nn

from pvnas.space.ops import FactorizedReduce, ReLUConvBN


def stem(channels: int) -> nn.Sequential:
    """Conv 1x3x3 with spatial stride 2, then BN: one cheap spatial reduction before any cell."""
    return nn.Sequential(
        nn.Conv3d(3, channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
        nn.BatchNorm3d(channels),
    )


def preprocess(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    """DARTS cell inputs: bring both previous outputs to ``c`` channels and the same resolution."""
    pre0 = FactorizedReduce(c_pp, c, 2, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, affine=affine)
    return pre0, ReLUConvBN(c_p, c, 1, affine=affine)


def drop_path(x: torch.Tensor, prob: float | torch.Tensor | None) -> torch.Tensor:
    """DARTS drop-path: zero a whole sample's branch with probability ``prob``, rescale the rest.

    Out of place (autograd-safe, unlike DARTS' ``mul_``); the caller decides when it applies
    (training only, never on an identity edge). ``prob`` may be a 0-dim tensor (the network's ramped
    probability, read on the device without a host sync); None or a float <= 0 leaves ``x`` as it is.
    """
    if prob is None or (not isinstance(prob, torch.Tensor) and prob <= 0.0):
        return x
    return x * drop_path_scale(x.shape[0], prob, x).view((-1,) + (1,) * (x.dim() - 1))


def drop_path_scale(n: int, prob: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per sample (n,): 0 with probability ``prob``, else 1 / (1 - prob). One draw per sample, so every
    implementation of the network that calls it in the same order drops the same samples. A tensor ``prob``
    (0 included: then all ones) is used on the device as it is: no host sync, and a compiled graph takes it as
    an input, so a ramp does not recompile."""
    keep = 1.0 - prob
    if isinstance(keep, torch.Tensor):
        keep = keep.to(like.dtype)
        return torch.bernoulli(keep.expand(n)).div_(keep)
    return torch.empty(n, dtype=like.dtype, device=like.device).bernoulli_(keep).div_(keep)
