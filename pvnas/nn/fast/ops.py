"""The conv ops of the registry (ReLU-Conv-...-BN chains, FactorizedReduce) of G edges, on frames."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.conv import conv_frames, fold_pointwise
from pvnas.nn.fast.layout import interleave
from pvnas.nn.fast.norm import batch_norm, fold_into_conv
from pvnas.nn.fast.shared import SharedInput
from pvnas.space.ops import FactorizedReduce

_LEAVES: "weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]" = weakref.WeakKeyDictionary()


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of an op in order, memoised: walking the module tree per forward cost ~1% of a K=4 step."""
    if torch.compiler.is_compiling():  # (a memo would be a guard that fails while it fills: recompiles)
        return [m for m in module.modules() if not any(True for _ in m.children())]
    if module not in _LEAVES:
        _LEAVES[module] = [m for m in module.modules() if not any(True for _ in m.children())]
    return _LEAVES[module]


def chain(src: SharedInput, ops: list[nn.Module], n: int, weight: torch.Tensor | None) -> torch.Tensor:
    """A ReLU-Conv-...-BN op (sep/dil/temporal conv, ReLUConvBN) of G edges from their shared ``relu(x)``.

    ``weight`` (per output channel) is the affine weight of the last affine-free BatchNorm: the mixture weight.
    """
    layers = list(zip(*map(_leaves, ops)))
    if not isinstance(layers[0][0], nn.ReLU):
        raise TypeError(f"fast cell: op {type(ops[0]).__name__} does not start with ReLU")
    return run_layers(src, layers[1:], n, weight)


def run_layers(
    x: torch.Tensor | SharedInput, layers: list[tuple[nn.Module, ...]], n: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Conv, ReLU and BN layers (one tuple of G edges' modules per layer) on frames; ``weight`` as in :func:`chain`.

    A 1x1x1 conv followed by a kx1x1 one runs as one conv where that saves MACs; in eval mode a BN is folded
    into the conv before it. Inner ReLUs run in place on a BN output, which BN's backward does not need.
    """
    i = 0
    while i < len(layers):
        mods, last = list(layers[i]), i == len(layers) - 1
        if isinstance(mods[0], nn.Conv3d):
            weights, geometry = [m.weight for m in mods], mods[0]
            if i + 1 < len(layers) and isinstance(layers[i + 1][0], nn.Conv3d) and _fold_pays(x, mods[0]):
                folded = fold_pointwise(mods, list(layers[i + 1]))
                if folded is not None:
                    (weights, geometry), i = folded, i + 1
                    last = i == len(layers) - 1
            bias = None
            if (not last and isinstance(layers[i + 1][0], nn.BatchNorm3d) and not layers[i + 1][0].training
                    and geometry.dilation == (1, 1, 1)):
                i += 1
                weights, bias = fold_into_conv(weights, list(layers[i]), weight if i == len(layers) - 1 else None)
            x = conv_frames(x, weights, geometry, n, bias)
        elif isinstance(mods[0], nn.ReLU) and isinstance(x, torch.Tensor):
            x = F.relu(x, inplace=True)
        elif isinstance(mods[0], nn.BatchNorm3d) and isinstance(x, torch.Tensor):
            x = batch_norm(x, mods, weight if last else None)
        else:
            raise TypeError(f"fast cell: unsupported layer {type(mods[0]).__name__}")
        i += 1
    assert isinstance(x, torch.Tensor)
    return x


def _fold_pays(x: torch.Tensor | SharedInput, conv: nn.Conv3d) -> bool:
    """Whether folding a 1x1x1 C->C conv into the kx1x1 conv after it saves MACs: per output pixel it saves
    C^2, and computing the folded weight costs k C^3 (in forward and twice in backward), so with > 3C pixels."""
    frames = x.r if isinstance(x, SharedInput) else x
    pixels = frames.shape[0] * frames.shape[2] * frames.shape[3] / (conv.stride[1] * conv.stride[2])
    return pixels > 3 * conv.out_channels


def factorized_reduce(src: SharedInput, ops: list[FactorizedReduce], weight: torch.Tensor | None) -> torch.Tensor:
    """FactorizedReduce of G edges from their shared ``relu(x)``.

    Its strided 1x1 convs run as 1x1 convs on the even and the (zero-padded) odd pixel phases (see
    :func:`~pvnas.nn.fast.conv.conv_frames`).
    """
    s = ops[0].conv_1.stride[-1]
    bns = [op.bn for op in ops]
    if bns[0].training:
        halves = [F.conv2d(src.phase(s, i), interleave([getattr(op, name).weight for op in ops]).squeeze(2))
                  for i, name in enumerate(("conv_1", "conv_2"))]
        return batch_norm(torch.cat(halves, dim=1), bns, weight)
    # eval mode: the BN folded into the two convs, each with its channels of the BN
    c1, split = ops[0].conv_1.out_channels, ops[0].conv_1.out_channels * len(ops)
    scaled, bias = fold_into_conv([torch.cat([op.conv_1.weight, op.conv_2.weight]) for op in ops], bns, weight)
    first = F.conv2d(src.phase(s, 0), interleave([w[:c1] for w in scaled]).squeeze(2), bias[:split])
    second = F.conv2d(src.phase(s, 1), interleave([w[c1:] for w in scaled]).squeeze(2), bias[split:])
    return torch.cat([first, second], dim=1)
