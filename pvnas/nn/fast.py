"""A fast supernet cell: the same mixture as :class:`~pvnas.nn.supernet.ReferenceCell`, computed cheaply.

The cell owns exactly the reference's modules (``pre0``, ``pre1``, 14 :class:`MixedOp` edges), so
state dicts and optimizer states are interchangeable with the reference; only ``forward`` differs
(measurements behind each choice: docs/performance.md):

* every tensor lives as frames ``(N*T, C, H, W)`` in channels-last memory, which is also the
  memory of a channels-last-3d ``(N, C, T, H, W)`` clip: 1xkxk convs and pools run as 2D ops and
  the 3x1x1 temporal convs as 2D convs on a ``(N, C, T, H*W)`` view, with no transposes in between;
* the edges leaving a node share their input: its ReLU, the pixel phases that strided/dilated ops
  read, the pools and their affine-free train-mode BatchNorm are computed once per node;
* ``zero`` is skipped; a conv op's softmax weight is the affine weight of its last BatchNorm; the
  identity and pool terms are added by one autograd function that recomputes the pools in backward
  rather than keeping pooled maps and max-pool indices (memory);
* oneDNN's slow kernels are routed around: stride-1 dilated depthwise convs get a hand-written
  backward, strided ones and FactorizedReduce read gathered pixel phases, the forward max pool
  skips argmax indices, and the average pool below 16 channels is two separable box sums;
* "3+1x1" has no nonlinearity between its two convs: it runs as one temporal conv, 1x1 folded in;
* edges with few channels (partial channels) are batched: ``group`` edges of a node run each op as
  one conv over their channels interleaved channel-major (``channel * group + edge``), since
  channels-last kernels waste vector width below 16 channels;
* ``partial_channels=K`` is PC-DARTS: ops mix the first C/K channels, the rest bypass the edge
  (1x2x2 max pool on reduction edges), and the edge output is channel-shuffled with K groups.
"""

from __future__ import annotations

import weakref
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.layers import preprocess
from pvnas.nn.mixed import MixedOp
from pvnas.space.genotype import NODES, edge_inputs
from pvnas.space.ops import CONV_OPS, FactorizedReduce, is_reduction, ops_for

POOLS = ("avg_pool_1x3x3", "max_pool_1x3x3")
GROUP_CHANNELS = 16  # edges are batched until a group has this many channels (one AVX-512 vector)


# ------------------------------------------------------------------ layout
def to_frames(x: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> (N*T, C, H, W) channels-last; a view if ``x`` is channels-last-3d."""
    n, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(n * t, h, w, c).permute(0, 3, 1, 2)


def from_frames(y: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`to_frames`: a channels-last-3d (N, C, T, H, W) view of the same memory."""
    nt, c, h, w = y.shape
    return nhwc(y).reshape(n, nt // n, h, w, c).permute(0, 4, 1, 2, 3)


def nhwc(y: torch.Tensor) -> torch.Tensor:
    """Frames (N', C, H, W) as their memory order (N', H, W, C), made contiguous if they are not."""
    return y.permute(0, 2, 3, 1).contiguous()


def nchw(y: torch.Tensor) -> torch.Tensor:
    """(N', H, W, C) memory as channels-last frames (N', C, H, W) (a view)."""
    return y.permute(0, 3, 1, 2)


def frames_grad(x: torch.Tensor) -> torch.Tensor:
    """``x``, whose gradient is made channels-last contiguous before it flows on.

    Gradients reach a node as slices of the cell output's gradient (the concatenation) or as sums of
    differently laid out terms; BatchNorm, ReLU and conv backward kernels given a gradient in another
    memory format than their input run 5-7x slower (torch 2.13 CPU), far more than this one copy.
    """
    if x.requires_grad:
        x.register_hook(lambda g: g.contiguous(memory_format=torch.channels_last))
    return x


def pc_join(mixed: torch.Tensor, bypass: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS ``channel_shuffle(cat([mixed, bypass]), groups)`` on (..., C) memory, in one copy.

    Channel ``g * C/groups + i`` of the concatenation moves to ``i * groups + g``; ``mixed`` is group 0.
    """
    rest = bypass.unflatten(-1, (groups - 1, -1)).transpose(-2, -1)
    return torch.cat([mixed.unsqueeze(-1), rest], dim=-1).flatten(-2)


class SharedInput:
    """``relu(x)`` of a node, read by the conv ops of all its edges, and its diagonal pixel phases, computed once."""

    def __init__(self, r: torch.Tensor) -> None:
        self.r = frames_grad(r)
        self._phases: dict[int, tuple[torch.Tensor, ...]] = {}

    def phase(self, d: int, i: int) -> torch.Tensor:
        """Pixel phase (i, i) of ``r`` (see :class:`_DiagonalPhases`): (N', C, ceil(H/d), ceil(W/d))."""
        if d not in self._phases:
            # split once: its backward concatenates the phases' gradients instead of zero-filling per slice
            self._phases[d] = _DiagonalPhases.apply(self.r, d).split(self.r.shape[0])
        return self._phases[d][i]


class _DiagonalPhases(torch.autograd.Function):
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


def phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """All d x d pixel phases of channels-last frames stacked in the batch, phase (i, j) in block i*d + j:
    (d*d*N', C, ceil(H/d), ceil(W/d)), zero-padded at the bottom/right."""
    v = nhwc(x)
    n, h, w, c = v.shape
    hp, wp = -(-h // d), -(-w // d)
    if (hp * d, wp * d) != (h, w):
        v = F.pad(v, (0, 0, 0, wp * d - w, 0, hp * d - h))
    return nchw(v.view(n, hp, d, wp, d, c).permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, hp, wp, c))


# ------------------------------------------------------------------ edge-batched layers
def _interleave(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-edge tensors along dim 0 interleaved channel-major: ``out[c * G + g] = tensors[g][c]``."""
    return tensors[0] if len(tensors) == 1 else torch.stack(tensors, dim=1).flatten(0, 1)


def _block_diagonal(weights: list[torch.Tensor]) -> torch.Tensor:
    """Dense conv weights of G edges as one conv over channel-major batched channels (0 across edges)."""
    if len(weights) == 1:
        return weights[0]
    w = torch.stack(weights)  # (G, C_out, C_in, *kernel)
    eye = torch.eye(len(weights), dtype=w.dtype, device=w.device)
    return torch.einsum("goi...,gh->ogih...", w, eye).flatten(2, 3).flatten(0, 1)


class ConvGeometry(NamedTuple):
    """A bias-free Conv3d but for its weight: what :func:`_conv` needs (also of convs folded into one)."""

    in_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def _fold_pointwise(first: list[nn.Conv3d], second: list[nn.Conv3d]) -> tuple[list[torch.Tensor], ConvGeometry] | None:
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


def _conv(x: torch.Tensor | SharedInput, weights: list[torch.Tensor], conv: nn.Conv3d | ConvGeometry, n: int) -> torch.Tensor:
    """The bias-free Conv3d of G edges (their weights, shape ``conv``) as one conv on frames: on their common
    input (a :class:`SharedInput`) or on their channel-major batched frames.

    1xkxk kernels run as conv2d on the frames, kx1x1 kernels as conv2d on their (N, C, T, H*W) view.
    """
    g = len(weights)
    shared = isinstance(x, SharedInput)
    if conv.groups not in (1, conv.in_channels):
        raise ValueError(f"fast cell: only dense or depthwise convs can be batched, got groups={conv.groups}")
    if shared or conv.groups > 1:  # G outputs per input channel group, or one depthwise filter per channel
        weight, groups = _interleave(weights), conv.groups * (1 if shared else g)
    else:
        weight, groups = _block_diagonal(weights), 1
    kt, kh, kw = conv.kernel_size
    if kt == 1 and conv.dilation[1:] != (1, 1):
        return _atrous_conv2d(x if shared else SharedInput(x), weight[:, :, 0], conv, groups)
    stride = conv.stride[1:]
    if isinstance(x, SharedInput):
        if kh == kw == 1 and stride[0] == stride[1] > 1 and conv.padding[1:] == (0, 0):
            # a strided 1x1 conv reads phase (0, 0) only (and oneDNN's backward of strided channels-last
            # 1x1 convs crashes with 4 or 8 input channels, torch 2.13)
            x, stride = x.phase(stride[0], 0), (1, 1)
        else:
            x = x.r
    if kt == 1:
        return F.conv2d(x, weight[:, :, 0], None, stride, conv.padding[1:], 1, groups)
    if kh != 1 or kw != 1 or stride != (1, 1):
        raise ValueError(f"fast cell: unsupported conv {conv.kernel_size} stride {conv.stride} (only 1xkxk, or "
                         f"kx1x1 without spatial stride but on a shared input)")
    nt, c, h, w = x.shape
    video = nchw(nhwc(x).view(n, nt // n, h * w, c))
    y = F.conv2d(video, weight[..., 0], None, (conv.stride[0], 1), (conv.padding[0], 0), (conv.dilation[0], 1), groups)
    return nchw(nhwc(y).view(-1, h, w, y.shape[1]))


def _atrous_conv2d(src: SharedInput, weight: torch.Tensor, conv: nn.Conv3d | ConvGeometry, groups: int) -> torch.Tensor:
    """A dilated ("same"-padded) depthwise 1xkxk conv without oneDNN's slow dilated backward kernels.

    With stride d, output pixels only read pixel phase (0, 0) of the input: an undilated conv there.
    With stride 1, see :class:`_DilatedDepthwise`.
    """
    d, k, s = conv.dilation[-1], conv.kernel_size[-1], conv.stride[-1]
    if (conv.padding[1:] != (d * (k // 2),) * 2 or conv.dilation[1] != d or conv.stride[1:] not in ((1, 1), (d, d))
            or weight.shape[1] != 1):
        return F.conv2d(src.r, weight, None, conv.stride[1:], conv.padding[1:], conv.dilation[1:], groups)
    if s == d:
        return F.conv2d(src.phase(d, 0), weight, None, 1, k // 2, 1, groups)
    return _DilatedDepthwise.apply(src.r, weight, d, groups)


class _DilatedDepthwise(torch.autograd.Function):
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
        x, weight = ctx.saved_tensors
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


def _record_stats(bns: list[nn.BatchNorm3d], mean: torch.Tensor, var: torch.Tensor) -> None:
    """Update each module's running statistics as its own training forward would have (batch stats given
    per channel, channel-major over the modules, or shared by all when sized for one)."""
    per_edge = mean.numel() > bns[0].num_features
    with torch.no_grad():  # (foreach: one kernel call per buffer kind instead of one per module)
        torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
        factors = [bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked) for bn in bns]
        means, variances = (mean.view(-1, len(bns)).unbind(1), var.view(-1, len(bns)).unbind(1)) if per_edge else (
            [mean] * len(bns), [var] * len(bns))
        torch._foreach_lerp_([bn.running_mean for bn in bns], list(means), factors)
        torch._foreach_lerp_([bn.running_var for bn in bns], list(variances), factors)


def _bn(x: torch.Tensor, mean: torch.Tensor | None, var: torch.Tensor | None, weight: torch.Tensor | None,
        training: bool, momentum: float, eps: float) -> torch.Tensor:
    """``F.batch_norm`` on channels-last frames. With a channel count that is not a multiple of 8 (one AVX2
    vector) the channels-last kernels are 2-4x slower than the channels-first ones plus two layout copies."""
    if x.shape[1] % 8 == 0:
        return F.batch_norm(x, mean, var, weight, None, training, momentum, eps)
    y = F.batch_norm(x.contiguous(), mean, var, weight, None, training, momentum, eps)
    return y.contiguous(memory_format=torch.channels_last)


def _batch_norm(x: torch.Tensor, bns: list[nn.BatchNorm3d], weight: torch.Tensor | None = None) -> torch.Tensor:
    """The BatchNorm3d of G edges on channel-major batched frames (or of several edges on one shared
    input), with ``weight`` as affine weight; every module's buffers change as in its own forward."""
    bn = bns[0]
    if not bn.training:
        mean = _interleave([b.running_mean for b in bns])
        var = _interleave([b.running_var for b in bns])
        return _bn(x, mean, var, weight, False, 0.0, bn.eps)
    mean, var = x.new_zeros(x.shape[1]), x.new_ones(x.shape[1])  # momentum 1: they receive the batch stats
    y = _bn(x, mean, var, weight, True, 1.0, bn.eps)
    _record_stats(bns, mean, var)
    return y


_LEAVES: "weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]" = weakref.WeakKeyDictionary()


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of an op in order, memoised: walking the module tree per forward cost ~1% of a K=4 step."""
    if module not in _LEAVES:
        _LEAVES[module] = [m for m in module.modules() if not any(True for _ in m.children())]
    return _LEAVES[module]


def _chain(src: SharedInput, ops: list[nn.Module], n: int, weight: torch.Tensor | None) -> torch.Tensor:
    """A ReLU-Conv-...-BN op (sep/dil/temporal conv, ReLUConvBN) of G edges from their shared ``relu(x)``.

    ``weight`` (per output channel) is the affine weight of the last BatchNorm: the mixture weight.
    Inner ReLUs run in place on a BN output, which BN's backward does not need.
    """
    layers = list(zip(*map(_leaves, ops)))
    if not isinstance(layers[0][0], nn.ReLU):
        raise TypeError(f"fast cell: op {type(ops[0]).__name__} does not start with ReLU")
    x: torch.Tensor | SharedInput = src
    i = 1
    while i < len(layers):
        mods = list(layers[i])
        folded = None
        if isinstance(mods[0], nn.Conv3d) and i + 1 < len(layers) and isinstance(layers[i + 1][0], nn.Conv3d):
            folded = _fold_pointwise(mods, list(layers[i + 1]))
        if folded is not None:
            x = _conv(x, *folded, n)
            i += 1
        elif isinstance(mods[0], nn.ReLU) and isinstance(x, torch.Tensor):
            x = F.relu(x, inplace=True)
        elif isinstance(mods[0], nn.Conv3d):
            x = _conv(x, [m.weight for m in mods], mods[0], n)
        elif isinstance(mods[0], nn.BatchNorm3d):
            x = _batch_norm(x, mods, weight if i == len(layers) - 1 else None)
        else:
            raise TypeError(f"fast cell: unsupported layer {type(mods[0]).__name__}")
        i += 1
    return x


def _factorized_reduce(src: SharedInput, ops: list[FactorizedReduce], weight: torch.Tensor | None) -> torch.Tensor:
    """FactorizedReduce of G edges from their shared ``relu(x)``.

    Its strided 1x1 convs run as 1x1 convs on the even and the (zero-padded) odd pixel phases (see
    :func:`_conv`).
    """
    s = ops[0].conv_1.stride[-1]
    halves = [F.conv2d(src.phase(s, i), _interleave([getattr(op, name).weight for op in ops])[:, :, 0])
              for i, name in enumerate(("conv_1", "conv_2"))]
    return _batch_norm(torch.cat(halves, dim=1), [op.bn for op in ops], weight)


def _pool(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """A 1xkxk Avg/MaxPool3d module of the registry applied as a 2D pool on frames."""
    k, s, p = pool.kernel_size[1:], pool.stride[1:], pool.padding[1:]
    same_3x3 = (k, s, p, pool.ceil_mode) == ((3, 3), (1, 1), (1, 1), False)
    if isinstance(pool, nn.AvgPool3d):
        if same_3x3 and not pool.count_include_pad and x.shape[1] < GROUP_CHANNELS:
            return _AvgPool3x3.apply(x)
        return F.avg_pool2d(x, k, s, p, pool.ceil_mode, pool.count_include_pad)
    if same_3x3 and pool.dilation == 1 and not x.requires_grad:
        return _separable_3x3(x, torch.maximum)
    return F.max_pool2d(x, k, s, p, ceil_mode=pool.ceil_mode)


def _separable_3x3(x: torch.Tensor, combine: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``combine`` (``torch.maximum``, ``torch.add``) over each pixel's 3x3 neighbourhood of channels-last
    frames, neighbours outside the frame left out: a pass over rows, then one over columns, written with
    ``out=``. CPU pooling kernels cost per pixel whatever the channel count, this per element.

    As max pool: the same values as ``F.max_pool2d``, whose CPU kernel always writes int64 argmax indices
    too, 3-12x slower below 16 channels; forward only (its backward would not pick ``max_pool2d``'s tie
    winner). As box sum: the 3x3 average pool (:class:`_AvgPool3x3`), 2-5x faster below 16 channels.
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


class _AvgPool3x3(torch.autograd.Function):
    """``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`` of channels-last frames as separable box sums
    scaled per pixel; its backward is the box sum of the scaled gradient (the box is symmetric)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        inv = _inverse_counts(x)
        ctx.save_for_backward(inv)
        return nchw(nhwc(_separable_3x3(x, torch.add)).mul_(inv))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inv,) = ctx.saved_tensors
        return _separable_3x3(nchw(nhwc(grad) * inv), torch.add)


def _parameter_free_sources(
    x: torch.Tensor, identity: bool, pools: list[nn.Module], bns: list[list[nn.BatchNorm3d]], record: bool
) -> list[torch.Tensor]:
    """x (if ``identity``) and each pool's affine-free train-mode BN output, as (N', H', W', c); ``record``
    puts the batch statistics into the BN modules of every edge (not when recomputing)."""
    sources = [nhwc(x)] if identity else []
    for pool, edge_bns in zip(pools, bns):
        pooled = _pool(x, pool)
        y = _batch_norm(pooled, edge_bns) if record else _bn(pooled, None, None, None, True, 0.0, edge_bns[0].eps)
        sources.append(nhwc(y))
    return sources


def _edge_views(ys: tuple[torch.Tensor, ...], c: int) -> list[torch.Tensor]:
    """Per edge, its (N', H', W', c) part of the channel-major batched group frames ``ys``."""
    return [v for y in ys for v in nhwc(y).unflatten(-1, (c, -1)).unbind(-1)]


class _ParameterFree(torch.autograd.Function):
    """Adds the train-mode identity and pool terms of a node's edges to the edges' sums ``ys`` (in place).

    Term of edge e: sum_k coef[e, k] * source_k over x (identity) and BN(avg/max pool x); with batch
    statistics these BNs agree for all edges. Only x (kept by the graph anyway) is saved: the cheap
    pools are recomputed in backward instead of keeping pooled maps, max-pool indices and BN outputs.
    """

    @staticmethod
    def forward(ctx, x, coef, layers, *ys):  # type: ignore[override]
        ctx.mark_dirty(*ys)
        ctx.save_for_backward(x, coef)
        ctx.layers, ctx.c = layers, x.shape[1]
        # (detached: then `_pool` takes the index-free separable max pool; backward recomputes with max_pool2d)
        sources = _parameter_free_sources(x.detach(), *layers, record=True)
        for e, out in enumerate(_edge_views(ys, ctx.c)):
            for k, source in enumerate(sources):
                out.addcmul_(source, coef[e, k])
        return ys

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        x, coef = ctx.saved_tensors
        # the weight step freezes the alphas; the alpha step does not backpropagate into the first cell's inputs
        want_x, want_coef = ctx.needs_input_grad[:2]
        with torch.set_grad_enabled(want_x):
            xd = x.detach().requires_grad_(want_x)
            sources = _parameter_free_sources(xd, *ctx.layers, record=False)
        edge_grads = _edge_views(grads, ctx.c)
        grad_x = grad_coef = None
        if want_coef:
            grad_coef = torch.stack([torch.stack([torch.tensordot(g, s.detach(), g.dim()) for s in sources]) for g in edge_grads])
        if want_x:
            grad_sources = []
            for k in range(len(sources)):
                acc = edge_grads[0] * coef[0, k]
                for e in range(1, len(edge_grads)):
                    acc.addcmul_(edge_grads[e], coef[e, k])
                grad_sources.append(acc)
            (grad_x,) = torch.autograd.grad(sources, xd, grad_sources)
        return (grad_x, grad_coef, None, *grads)


# ------------------------------------------------------------------ cell
class FastCell(nn.Module):
    """Drop-in for ``ReferenceCell`` (same modules and state dict), plus ``partial_channels`` (PC-DARTS)."""

    def __init__(self, kind: str, c_pp: int, c_p: int, c: int, reduction_prev: bool, partial_channels: int = 1) -> None:
        super().__init__()
        if c % partial_channels:
            raise ValueError(f"partial_channels={partial_channels} does not divide the {c} channels of cell {kind}")
        self.kind, self.k = kind, partial_channels
        self.group = max(1, GROUP_CHANNELS // (c // partial_channels))  # edges batched per op
        self.pre0, self.pre1 = preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        self.names = ops_for(kind)
        # per node j: its ops' stride and the edges leaving it, as (edge index, target node) in target order
        self.strides = [2 if is_reduction(kind) and j < 2 else 1 for j in range(2 + NODES)]
        self.fan_out = [[(e, i) for e, (i, src) in enumerate(edge_inputs()) if src == j] for j in range(2 + NODES)]
        self.edges = nn.ModuleList(MixedOp(c // partial_channels, self.strides[j], self.names) for _, j in edge_inputs())

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``weights``: softmax(alpha), (14, n_ops); ``edge_weights``: per-edge factors (PC-DARTS edge norm)."""
        n = s0.shape[0]
        if edge_weights is not None:  # the mixed part of an edge scales with its op weights, the bypass does not
            weights = weights * edge_weights[:, None]
        states = [frames_grad(self._preprocess(self.pre0, s0, n)), frames_grad(self._preprocess(self.pre1, s1, n))]
        mixed: list[torch.Tensor | None] = [None] * NODES  # running sums over each node's edges, (N', H, W, c)
        bypass: list[torch.Tensor | None] = [None] * NODES
        for j in range(2 + NODES):
            if j >= 2:
                states.append(frames_grad(self._node(mixed[j - 2], bypass[j - 2])))
            if not self.fan_out[j]:
                continue
            outputs, passed = self._fan_out(j, states[j], weights, n)
            for (e, i), out in zip(self.fan_out[j], outputs):
                mixed[i - 2] = out if mixed[i - 2] is None else mixed[i - 2].add_(out)
                if passed is not None:
                    b = passed if edge_weights is None else passed * edge_weights[e]
                    bypass[i - 2] = b if bypass[i - 2] is None else bypass[i - 2] + b
        return from_frames(nchw(torch.cat([nhwc(s) for s in states[2:]], dim=-1)), n)

    def _preprocess(self, pre: nn.Module, s: torch.Tensor, n: int) -> torch.Tensor:
        src = SharedInput(F.relu(to_frames(s)))
        if isinstance(pre, FactorizedReduce):
            return _factorized_reduce(src, [pre], None)
        return _chain(src, [pre], n, None)

    def _node(self, mixed: torch.Tensor, bypass: torch.Tensor | None) -> torch.Tensor:
        """A node from its summed edges; with partial channels, join the bypass channels as PC-DARTS."""
        return nchw(mixed if bypass is None else pc_join(mixed, bypass, self.k))

    def _fan_out(self, j: int, h: torch.Tensor, weights: torch.Tensor, n: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The edges leaving node j: each one's weighted sum over its ops as a fresh (N', H', W', c) tensor,
        and the channels that bypass the ops (partial channels, NHWC; None without)."""
        edges, stride = [e for e, _ in self.fan_out[j]], self.strides[j]
        c = h.shape[1] // self.k
        if self.k == 1:
            x, passed = h, None
        else:  # (split, not slicing: its backward concatenates, slicing's zero-fills two full-size gradients)
            x, passed = h.split([c, h.shape[1] - c], dim=1)
            x = x.contiguous(memory_format=torch.channels_last)
        src = SharedInput(F.relu(x))
        mods = [self.edges[e].ops for e in edges]
        w = weights[edges]  # (E, n_ops)
        ys = []  # per group of edges: the sum of their conv ops, channel-major batched frames
        for start in range(0, len(edges), self.group):
            part = slice(start, start + self.group)
            # per op, its weight per channel-major batched channel (channel * group + edge); one repeat for all
            # ops (repeat, not expand: with a stride-0 weight the gradients came out wrong here, torch 2.13 CPU)
            folds = w[part].t().repeat(1, c).unbind(0)
            terms = []
            for col, name in enumerate(self.names):
                ops, fold = [m[col] for m in mods[part]], folds[col]
                if name in CONV_OPS:
                    terms.append(_chain(src, ops, n, fold))
                elif name == "identity" and stride > 1:
                    terms.append(_factorized_reduce(src, ops, fold))
            y = terms[0] + terms[1]
            for t in terms[2:]:
                y.add_(t)
            ys.append(y)
        ys = self._add_parameter_free(ys, x, stride, mods, w)
        # (squeeze/unbind: their backward does not zero-fill a full-size gradient as slicing does)
        outputs = []
        for y in ys:
            y = nhwc(y).unflatten(-1, (c, -1))
            outputs += [y.squeeze(-1)] if y.shape[-1] == 1 else [t.contiguous() for t in y.unbind(-1)]
        if passed is None:
            return outputs, None
        if stride > 1:  # PC-DARTS: the channels that skip the ops are max-pooled on reduction edges
            passed = F.max_pool2d(passed, stride, stride, ceil_mode=True)
        return outputs, nhwc(passed)

    def _add_parameter_free(
        self, ys: list[torch.Tensor], x: torch.Tensor, stride: int, mods: list[nn.ModuleList], w: torch.Tensor
    ) -> list[torch.Tensor]:
        """``ys`` plus the identity and pool terms of their edges (in eval mode each edge's pool BN has its
        own running statistics, so nothing is shared but the pooling)."""
        identity = stride == 1  # on reduction edges it is a FactorizedReduce: a conv op
        pool_cols = [self.names.index(name) for name in POOLS]
        pools = [mods[0][col][0] for col in pool_cols]
        bns = [[m[col][1] for m in mods] for col in pool_cols]
        coef = w[:, [self.names.index("identity")] * identity + pool_cols]  # (E, sources)
        if bns[0][0].training:
            return list(_ParameterFree.apply(x, coef, (identity, pools, bns), *ys))
        pooled = [_pool(x, pool) for pool in pools]
        terms = []
        for e in range(len(mods)):
            sources = ([nhwc(x)] if identity else []) + [nhwc(_batch_norm(p, [b[e]])) for p, b in zip(pooled, bns)]
            terms.append(sum(s * coef[e, k] for k, s in enumerate(sources)))
        free = torch.stack(terms, dim=-1).split(self.group, dim=-1)
        return [nchw((nhwc(y).unflatten(-1, (x.shape[1], -1)) + f).flatten(-2)) for y, f in zip(ys, free)]
