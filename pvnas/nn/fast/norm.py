"""BatchNorm3d modules of G edges as one ``F.batch_norm`` on frames, each module's buffers kept exact."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.layout import interleave
from pvnas.nn.fast.policy import generic


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


def batch_norm_frames(
    x: torch.Tensor, mean: torch.Tensor | None, var: torch.Tensor | None, weight: torch.Tensor | None,
    training: bool, momentum: float, eps: float, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.batch_norm`` on channels-last frames. With a channel count that is not a multiple of 8 (one AVX2
    vector) the channels-last kernels are 2-4x slower than the channels-first ones plus two layout copies (CPU)."""
    if x.shape[1] % 8 == 0 or generic(x):
        return F.batch_norm(x, mean, var, weight, bias, training, momentum, eps)
    y = F.batch_norm(x.contiguous(), mean, var, weight, bias, training, momentum, eps)
    return y.contiguous(memory_format=torch.channels_last)


def batch_norm(x: torch.Tensor, bns: list[nn.BatchNorm3d], weight: torch.Tensor | None = None) -> torch.Tensor:
    """The BatchNorm3d of G edges on channel-major batched frames (or of several edges on one shared
    input); every module's buffers change as in its own forward. Affine-free modules (the supernet's) take
    ``weight`` as affine weight (a mixture weight), affine ones (the retrain network's) their own."""
    bn = bns[0]
    bias = None
    if bn.affine:
        assert weight is None, "an affine BatchNorm has its own weight"
        weight, bias = interleave([b.weight for b in bns]), interleave([b.bias for b in bns])
    if not bn.training:
        mean = interleave([b.running_mean for b in bns])
        var = interleave([b.running_var for b in bns])
        return batch_norm_frames(x, mean, var, weight, False, 0.0, bn.eps, bias)
    # momentum 1: they receive the batch stats, in the buffers' dtype (float32 under bf16 autocast, as nn.BatchNorm)
    mean = torch.zeros(x.shape[1], dtype=bn.running_mean.dtype, device=x.device)
    var = torch.ones(x.shape[1], dtype=bn.running_var.dtype, device=x.device)
    y = batch_norm_frames(x, mean, var, weight, True, 1.0, bn.eps, bias)
    _record_stats(bns, mean, var)
    return y


def fold_into_conv(
    weights: list[torch.Tensor], bns: list[nn.BatchNorm3d], weight: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Eval-mode BatchNorm of G edges folded into the conv before it: per edge, the conv weights scaled by
    the BN's per-channel factor, and the channel-major bias. Saves the BatchNorm's pass over the output
    (in eval mode a per-channel affine map, which the conv applies for free); ``weight`` as in :func:`batch_norm`."""
    bn = bns[0]
    scale = interleave([b.running_var for b in bns]).add(bn.eps).rsqrt()
    shift = -interleave([b.running_mean for b in bns]) * scale
    if bn.affine:
        assert weight is None, "an affine BatchNorm has its own weight"
        gamma = interleave([b.weight for b in bns])
        scale, shift = scale * gamma, shift * gamma + interleave([b.bias for b in bns])
    elif weight is not None:
        scale, shift = scale * weight, shift * weight
    per_edge = scale.view(-1, len(bns)).unbind(1)
    return [w * s.view((-1,) + (1,) * (w.dim() - 1)) for w, s in zip(weights, per_edge)], shift
