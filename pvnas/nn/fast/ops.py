"""The conv ops of the registry (ReLU-Conv-...-BN chains, FactorizedReduce) of G edges, on frames."""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.conv import conv_frames, fold_pointwise
from pvnas.nn.fast.layout import SharedInput, interleave
from pvnas.nn.fast.norm import batch_norm
from pvnas.space.ops import FactorizedReduce


_LEAVES: "weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]" = weakref.WeakKeyDictionary()


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of an op in order, memoised: walking the module tree per forward cost ~1% of a K=4 step."""
    if module not in _LEAVES:
        _LEAVES[module] = [m for m in module.modules() if not any(True for _ in m.children())]
    return _LEAVES[module]


def chain(src: SharedInput, ops: list[nn.Module], n: int, weight: torch.Tensor | None) -> torch.Tensor:
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
            folded = fold_pointwise(mods, list(layers[i + 1]))
        if folded is not None:
            x = conv_frames(x, *folded, n)
            i += 1
        elif isinstance(mods[0], nn.ReLU) and isinstance(x, torch.Tensor):
            x = F.relu(x, inplace=True)
        elif isinstance(mods[0], nn.Conv3d):
            x = conv_frames(x, [m.weight for m in mods], mods[0], n)
        elif isinstance(mods[0], nn.BatchNorm3d):
            x = batch_norm(x, mods, weight if i == len(layers) - 1 else None)
        else:
            raise TypeError(f"fast cell: unsupported layer {type(mods[0]).__name__}")
        i += 1
    return x


def factorized_reduce(src: SharedInput, ops: list[FactorizedReduce], weight: torch.Tensor | None) -> torch.Tensor:
    """FactorizedReduce of G edges from their shared ``relu(x)``.

    Its strided 1x1 convs run as 1x1 convs on the even and the (zero-padded) odd pixel phases (see
    :func:`~pvnas.nn.fast.conv.conv_frames`).
    """
    s = ops[0].conv_1.stride[-1]
    halves = [F.conv2d(src.phase(s, i), interleave([getattr(op, name).weight for op in ops])[:, :, 0])
              for i, name in enumerate(("conv_1", "conv_2"))]
    return batch_norm(torch.cat(halves, dim=1), [op.bn for op in ops], weight)
