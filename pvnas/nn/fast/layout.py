"""Frames in channels-last memory, and the few copies the fast kernels make between layouts.

Every tensor of the fast kernels is a batch of frames ``(N*T, C, H, W)`` in channels-last memory,
which is also the memory of a channels-last-3d ``(N, C, T, H, W)`` clip: 1xkxk convs and pools run as
2D ops and 3x1x1 convs as 2D convs on a ``(N, C, T, H*W)`` view, with no transposes in between.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pvnas.nn.fast.policy import generic

GROUP_CHANNELS = 16  # edges are batched until a group has this many channels (one AVX-512 vector)


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
    memory format than their input run 5-7x slower (torch 2.13 CPU), far more than this one copy. CPU only
    (:mod:`~pvnas.nn.fast.policy`).
    """
    if x.requires_grad and not generic(x):
        x.register_hook(lambda g: g.contiguous(memory_format=torch.channels_last))
    return x


def interleave(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-edge tensors along dim 0 interleaved channel-major: ``out[c * G + g] = tensors[g][c]``.

    The layout of G edges batched in one tensor, so that one grouped conv or BatchNorm serves them all.
    """
    return tensors[0] if len(tensors) == 1 else torch.stack(tensors, dim=1).flatten(0, 1)


def pc_join(mixed: torch.Tensor, bypass: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS ``channel_shuffle(cat([mixed, bypass]), groups)`` on (..., C) memory, in one copy.

    Channel ``g * C/groups + i`` of the concatenation moves to ``i * groups + g``; ``mixed`` is group 0.
    """
    rest = bypass.unflatten(-1, (groups - 1, -1)).transpose(-2, -1)
    return torch.cat([mixed.unsqueeze(-1), rest], dim=-1).flatten(-2)


def phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """All d x d pixel phases of channels-last frames stacked in the batch, phase (i, j) in block i*d + j:
    (d*d*N', C, ceil(H/d), ceil(W/d)), zero-padded at the bottom/right. On them a dilation-d conv's weight
    gradient is an undilated one (see :class:`~pvnas.nn.fast.cpu.kernels.DilatedDepthwise`)."""
    v = nhwc(x)
    n, h, w, c = v.shape
    hp, wp = -(-h // d), -(-w // d)
    if (hp * d, wp * d) != (h, w):
        v = F.pad(v, (0, 0, 0, wp * d - w, 0, hp * d - h))
    return nchw(v.view(n, hp, d, wp, d, c).permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, hp, wp, c))
