"""CPU-tuned leaf kernels on channels-last frames: a dilated depthwise conv without oneDNN's dilated backward,
the diagonal pixel phases that strided convs read, and 3x3 pools as separable passes below 16 channels."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from pvnas.nn.fast.layout import nchw, nhwc, phases


class DilatedDepthwise(torch.autograd.Function):
    """A "same"-padded, stride-1, dilated depthwise conv (channel multiplier ``G = out / in``) whose
    backward avoids oneDNN's dilated backward kernels (5-25x slower than the undilated ones, torch 2.13
    CPU): the input gradient is the forward dilated conv of the gradient with the flipped filters, the
    weight gradient an undilated one on the d x d pixel phases of input and gradient."""

    @staticmethod
    def forward(ctx, x, weight, d, groups):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.d, ctx.groups = d, groups
        return F.conv2d(x, weight, None, 1, d * (weight.shape[-1] // 2), d, groups)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors  # (in the gradient's dtype: under autocast the forward conv ran in bf16)
        x, weight = x.to(grad.dtype), weight.to(grad.dtype)
        d, groups, k = ctx.d, ctx.groups, weight.shape[-1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # input channel c gathers its G filters c*G .. c*G+G-1, flipped
            flipped = weight.view(groups, -1, k, k).flip(-2, -1)
            grad_x = F.conv2d(grad, flipped, None, 1, d * (k // 2), d, groups)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                phases(grad, d), phases(x, d), weight, None, (1, 1), (k // 2,) * 2, (1, 1), False, (0, 0), groups,
                (False, True, False))[1]
        return grad_x, grad_w, None, None


class DiagonalPhases(torch.autograd.Function):
    """Pixel phases (i, i), i < d, of channels-last frames, stacked in the batch.

    Phase (i, i) holds the pixels (d*a + i, d*b + i), zero-padded at the bottom/right to ceil(H/d) x ceil(W/d):
    exactly what strided 1x1 convs (FactorizedReduce reads phases (0, 0) and (1, 1)) and stride-d dilated
    convs (phase (0, 0)) read, including the zero padding there. Copies only those pixels, and writes the
    input gradient in one pass.
    """

    @staticmethod
    def forward(ctx, x, d):  # type: ignore[override]
        v = nhwc(x)
        n, h, w, c = v.shape
        hp, wp = -(-h // d), -(-w // d)
        out = v.new_empty(d, n, hp, wp, c) if h % d == w % d == 0 else v.new_zeros(d, n, hp, wp, c)
        for i in range(d):
            src = v[:, i::d, i::d]
            out[i, :, : src.shape[1], : src.shape[2]] = src
        ctx.d, ctx.shape = d, v.shape
        return nchw(out.view(d * n, hp, wp, c))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        d, (n, h, w, c) = ctx.d, ctx.shape
        g = nhwc(grad).view(d, n, grad.shape[2], grad.shape[3], c)
        out = g.new_empty(n, h, w, c)
        for i in range(d):
            for j in range(d):
                dst = out[:, i::d, j::d]
                if i == j:
                    dst.copy_(g[i, :, : dst.shape[1], : dst.shape[2]])
                else:
                    dst.zero_()
        return nchw(out), None


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
