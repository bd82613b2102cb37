"""The op registry (docs/design.md §1): the only place where op names map to modules.

Every op works on ``(N, C, T, H, W)`` tensors, keeps C, and takes a spatial stride of 1 or 2
(a reduction edge strides 1x2x2); ``stride`` may also be a full ``(t, h, w)`` tuple for the
optional temporal stride. ``affine=False`` gives DARTS' search-time BatchNorm.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

Stride = Union[int, tuple[int, int, int]]

SPATIAL_OPS: tuple[str, ...] = (
    "zero",
    "identity",
    "avg_pool_1x3x3",
    "max_pool_1x3x3",
    "sep_conv_1x3x3",
    "dil_conv_1x3x3",
)
TEMPORAL_OPS: tuple[str, ...] = SPATIAL_OPS + ("conv_3x3x3", "conv_3x1x1")
PARAMETER_FREE: frozenset[str] = frozenset({"zero", "identity", "avg_pool_1x3x3", "max_pool_1x3x3"})
CONV_OPS: frozenset[str] = frozenset(TEMPORAL_OPS) - PARAMETER_FREE

CELL_KINDS: tuple[str, ...] = ("S-NC", "S-RC", "T-NC", "T-RC")


def ops_for(cell_kind: str) -> tuple[str, ...]:
    """Candidate ops of a cell kind, in alpha column order."""
    if cell_kind not in CELL_KINDS:
        raise ValueError(f"unknown cell kind {cell_kind!r}; expected one of {CELL_KINDS}")
    return TEMPORAL_OPS if cell_kind.startswith("T") else SPATIAL_OPS


def is_reduction(cell_kind: str) -> bool:
    return cell_kind.endswith("RC")


def stride3(stride: Stride) -> tuple[int, int, int]:
    """An int stride is spatial only (1xSxS); a tuple is taken as (t, h, w)."""
    return (1, stride, stride) if isinstance(stride, int) else tuple(stride)  # type: ignore[return-value]


class Zero(nn.Module):
    """Outputs zeros of the strided shape; kept literal in the reference MixedOp."""

    def __init__(self, stride: Stride) -> None:
        super().__init__()
        self.stride = stride3(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.stride
        return x[:, :, ::st, ::sh, ::sw].mul(0.0)


class FactorizedReduce(nn.Module):
    """DARTS' reduce-identity: two offset 1x1x1 stride convs concatenated, so no pixel is dropped."""

    def __init__(self, c_in: int, c_out: int, stride: Stride = 2, affine: bool = True) -> None:
        super().__init__()
        s = stride3(stride)
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv3d(c_in, c_out // 2, 1, stride=s, bias=False)
        self.conv_2 = nn.Conv3d(c_in, c_out - c_out // 2, 1, stride=s, bias=False)
        self.bn = nn.BatchNorm3d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = x[:, :, :, 1:, 1:]
        a = self.conv_1(x)
        b = self.conv_2(nn.functional.pad(shifted, (0, 1, 0, 1)))
        return self.bn(torch.cat([a, b], dim=1))


class ReLUConvBN(nn.Module):
    """ReLU - Conv3d - BN, the DARTS preprocessing block."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: Stride = 1, padding=0, affine: bool = True) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv3d(c_in, c_out, kernel, stride=stride3(stride), padding=padding, bias=False),
            nn.BatchNorm3d(c_out, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _dil_conv(c: int, stride: Stride, dilation: int, affine: bool) -> nn.Sequential:
    """ReLU - depthwise 1x3x3 (dilated) - pointwise - BN."""
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv3d(c, c, (1, 3, 3), stride=stride3(stride), padding=(0, dilation, dilation),
                  dilation=(1, dilation, dilation), groups=c, bias=False),
        nn.Conv3d(c, c, 1, bias=False),
        nn.BatchNorm3d(c, affine=affine),
    )


def sep_conv(c: int, stride: Stride, affine: bool = True) -> nn.Sequential:
    """DARTS separable conv: the dw+pw block applied twice, stride on the first only."""
    return nn.Sequential(_dil_conv(c, stride, 1, affine), _dil_conv(c, 1, 1, affine))


def temporal_conv(c: int, stride: Stride, spatial_kernel: int, affine: bool = True) -> nn.Sequential:
    """PV-NAS "3+kxk": ReLU - Conv 1xkxk (spatial stride) - Conv 3x1x1 (temporal stride) - BN."""
    st, sh, sw = stride3(stride)
    k, p = spatial_kernel, spatial_kernel // 2
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv3d(c, c, (1, k, k), stride=(1, sh, sw), padding=(0, p, p), bias=False),
        nn.Conv3d(c, c, (3, 1, 1), stride=(st, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(c, affine=affine),
    )


class AvgPool1x3x3(nn.AvgPool3d):
    """1x3x3 average pool (padding excluded from the mean) that accepts maps smaller than 3x3.

    ``AvgPool3d`` on CPU rejects inputs smaller than its kernel even when padded, which deep
    stacks reach at small input sizes; the same pool as a 2D op on (N, C*T, H, W) does not.
    """

    def __init__(self, stride: Stride) -> None:
        super().__init__((1, 3, 3), stride=stride3(stride), padding=(0, 1, 1), count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st, sh, sw = self.stride  # type: ignore[misc]
        x = x[:, :, ::st]
        n, c, t, h, w = x.shape
        y = nn.functional.avg_pool2d(x.reshape(n, c * t, h, w), 3, (sh, sw), 1, count_include_pad=False)
        return y.reshape(n, c, t, *y.shape[-2:])


def identity(c: int, stride: Stride, affine: bool = True) -> nn.Module:
    return nn.Identity() if stride3(stride) == (1, 1, 1) else FactorizedReduce(c, c, stride, affine)


OpFactory = Callable[..., nn.Module]

OPS: dict[str, OpFactory] = {
    "zero": lambda c, stride, affine=True: Zero(stride),
    "identity": identity,
    "avg_pool_1x3x3": lambda c, stride, affine=True: AvgPool1x3x3(stride),
    "max_pool_1x3x3": lambda c, stride, affine=True: nn.MaxPool3d((1, 3, 3), stride=stride3(stride), padding=(0, 1, 1)),
    "sep_conv_1x3x3": sep_conv,
    "dil_conv_1x3x3": lambda c, stride, affine=True: _dil_conv(c, stride, 2, affine),
    "conv_3x3x3": lambda c, stride, affine=True: temporal_conv(c, stride, 3, affine),
    "conv_3x1x1": lambda c, stride, affine=True: temporal_conv(c, stride, 1, affine),
}
assert tuple(OPS) == TEMPORAL_OPS


def build_op(name: str, channels: int, stride: Stride = 1, affine: bool = True) -> nn.Module:
    """Instantiate a registered op; unknown names fail with the list of valid ones."""
    try:
        factory = OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; expected one of {', '.join(OPS)}") from None
    return factory(channels, stride, affine=affine)
