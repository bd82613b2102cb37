"""Bias-free Conv3d layers as 2D convs on frames, G edges batched into one conv.

Routes around oneDNN's slow kernels (torch 2.13 CPU): strided convs read gathered pixel phases,
stride-1 dilated depthwise convs get a hand-written backward (:class:`DilatedDepthwise`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.cpu.kernels import DilatedDepthwise
from pvnas.nn.fast.generic import depthwise_by_shifts
from pvnas.nn.fast.layout import interleave, nchw, nhwc
from pvnas.nn.fast.policy import depthwise_as_shifts, generic
from pvnas.nn.fast.shared import SharedInput


def _block_diagonal(weights: list[torch.Tensor]) -> torch.Tensor:
    """Dense conv weights of G edges as one conv over channel-major batched channels (0 across edges)."""
    if len(weights) == 1:
        return weights[0]
    w = torch.stack(weights)  # (G, C_out, C_in, *kernel)
    eye = torch.eye(len(weights), dtype=w.dtype, device=w.device)
    return torch.einsum("goi...,gh->ogih...", w, eye).flatten(2, 3).flatten(0, 1)


class ConvGeometry(NamedTuple):
    """A bias-free Conv3d but for its weight: what :func:`conv_frames` needs (also of convs folded into one)."""

    in_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def fold_pointwise(first: list[nn.Conv3d], second: list[nn.Conv3d]) -> tuple[list[torch.Tensor], ConvGeometry] | None:
    """A dense 1x1x1 conv directly followed by a dense kx1x1 conv (PV-NAS "3+1x1") as one kx1x1 conv with the
    products of their weights as taps: the same linear map with 3 instead of 4 MACs per channel pair and one
    activation less. None if the pair does not have that form."""
    a, b = first[0], second[0]
    if ((a.kernel_size, a.padding, a.dilation, a.groups, a.stride[0]) != ((1, 1, 1), (0, 0, 0), (1, 1, 1), 1, 1)
            or (b.kernel_size[1:], b.padding[1:], b.stride[1:], b.groups) != ((1, 1), (0, 0), (1, 1), 1)):
        return None
    weights = [torch.einsum("omt,mi->oit", q.weight.flatten(2), p.weight.flatten(1)).reshape(q.weight.shape[:2] + b.kernel_size)
               for p, q in zip(first, second)]
    stride = (b.stride[0],) + tuple(a.stride[1:])
    return weights, ConvGeometry(a.in_channels, b.kernel_size, stride, b.padding, b.dilation, 1)


def conv_frames(
    x: torch.Tensor | SharedInput, weights: list[torch.Tensor], conv: nn.Conv3d | ConvGeometry, n: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The bias-free Conv3d of G edges (their weights, shape ``conv``) as one conv on frames: on their common
    input (a :class:`SharedInput`) or on their channel-major batched frames.

    1xkxk kernels run as conv2d on the frames, kx1x1 kernels as conv2d on their (N, C, T, H*W) view.
    ``bias`` (channel-major, undilated convs only) is an eval-mode BatchNorm folded into the conv.
    """
    g = len(weights)
    shared = isinstance(x, SharedInput)
    if conv.groups not in (1, conv.in_channels):
        raise ValueError(f"fast cell: only dense or depthwise convs can be batched, got groups={conv.groups}")
    if shared or conv.groups > 1:  # G outputs per input channel group, or one depthwise filter per channel
        weight, groups = interleave(weights), conv.groups * (1 if shared else g)
    else:
        weight, groups = _block_diagonal(weights), 1
    kt, kh, kw = conv.kernel_size
    if kt == 1 and conv.dilation[1:] != (1, 1):
        assert bias is None, "dilated convs are never followed by a BatchNorm in the registry"
        return _atrous_conv2d(x if shared else SharedInput(x), weight.squeeze(2), conv, groups)
    stride = conv.stride[1:]
    if isinstance(x, SharedInput):
        if kh == kw == 1 and stride[0] == stride[1] > 1 and conv.padding[1:] == (0, 0):
            # a strided 1x1 conv reads phase (0, 0) only (and oneDNN's backward of strided channels-last
            # 1x1 convs crashes with 4 or 8 input channels, torch 2.13)
            x, stride = x.phase(stride[0], 0), (1, 1)
        else:
            x = x.r
    if kt == 1:
        return conv2d(x, weight.squeeze(2), bias, stride, conv.padding[1:], 1, groups)
    if kh != 1 or kw != 1 or stride != (1, 1):
        raise ValueError(f"fast cell: unsupported conv {conv.kernel_size} stride {conv.stride} (only 1xkxk, or "
                         f"kx1x1 without spatial stride but on a shared input)")
    nt, c, h, w = x.shape
    video = nchw(nhwc(x).view(n, nt // n, h * w, c))
    y = F.conv2d(video, weight.squeeze(-1), bias, (conv.stride[0], 1), (conv.padding[0], 0), (conv.dilation[0], 1), groups)
    return nchw(nhwc(y).view(-1, h, w, y.shape[1]))


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, ...],
           padding: tuple[int, ...], dilation: int, groups: int) -> torch.Tensor:
    """``F.conv2d``, except depthwise convs under :func:`~pvnas.nn.fast.policy.depthwise_as_shifts`."""
    if weight.shape[1] == 1 and groups > 1 and bias is None and depthwise_as_shifts(x):
        return depthwise_by_shifts(x, weight, stride, padding, dilation, groups)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _atrous_conv2d(src: SharedInput, weight: torch.Tensor, conv: nn.Conv3d | ConvGeometry, groups: int) -> torch.Tensor:
    """A dilated ("same"-padded) depthwise 1xkxk conv without oneDNN's slow dilated backward kernels.

    With stride d, output pixels only read pixel phase (0, 0) of the input: an undilated conv there.
    With stride 1, see :class:`DilatedDepthwise`.
    """
    d, k, s = conv.dilation[-1], conv.kernel_size[-1], conv.stride[-1]
    if (conv.padding[1:] != (d * (k // 2),) * 2 or conv.dilation[1] != d or conv.stride[1:] not in ((1, 1), (d, d))
            or weight.shape[1] != 1):
        return F.conv2d(src.r, weight, None, conv.stride[1:], conv.padding[1:], conv.dilation[1:], groups)
    if s == d:
        return conv2d(src.phase(d, 0), weight, None, (1, 1), (k // 2,) * 2, 1, groups)
    if generic(src.r):
        return conv2d(src.r, weight, None, (1, 1), (d * (k // 2),) * 2, d, groups)
    return DilatedDepthwise.apply(src.r, weight, d, groups)
