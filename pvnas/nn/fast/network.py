"""The retrain network's fast forward: the modules of :class:`~pvnas.nn.network.Network`, run on frames.

It owns no module: ``Network(impl="fast")`` runs its own stem, cells, pool and classifier through these
functions, ``impl="reference"`` through the literal ``Conv3d`` ops, so state dicts and checkpoints are
the same for both. What it computes differently (measurements: docs/performance.md):

* the clip is laid out once as frames ``(N*T, C, H, W)`` in channels-last memory, which is also the memory
  of a channels-last-3d clip: 1xkxk convs, pools and BatchNorms run as 2D ops, the 3x1x1 convs as 2D convs
  on the ``(N, C, T, H*W)`` view of the same memory, so no layout changes between cells or around temporal
  convs (the kernels are the fast supernet cell's, :mod:`pvnas.nn.fast.ops`);
* both consumers of a cell output (the next two cells' preprocessing) start with ReLU: a cell hands on
  ``relu(concat)``, computed once in place; inside a cell one ReLU per node serves all its conv ops;
* eval mode: each BatchNorm is folded into the conv before it; "3+1x1" runs as one temporal conv where that
  saves multiply-adds;
* a node sums its two edges in place into a fresh op output;
* drop-path draws the reference's per-sample masks in the reference's order
  (:func:`~pvnas.nn.layers.drop_path_scale`), so with the same seed both agree in train mode too.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.layout import frames_grad, nhwc, to_frames
from pvnas.nn.fast.ops import chain, factorized_reduce, run_layers
from pvnas.nn.fast.pool import pool_frames
from pvnas.nn.fast.shared import SharedInput
from pvnas.nn.layers import drop_path_scale
from pvnas.space.ops import FactorizedReduce


def network_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a :class:`~pvnas.nn.network.Network` for clips ``(N, 3, T, H, W)``, on frames."""
    n = x.shape[0]
    conv, bn, *rest = net.stem
    y = run_layers(to_frames(x), [(conv,), (bn,)], n)
    for block in rest:  # the stride-4 stem's ReLU-Conv-BN
        y = chain(SharedInput(F.relu(y)), [block], n, None)
    s0 = s1 = SharedInput(F.relu(y))
    last = len(net.cells) - 1
    for i, cell in enumerate(net.cells):
        s0, s1 = s1, cell_forward(cell, s0, s1, n, net.drop_prob if net.drops else None, relu_output=i < last)
    pooled = nhwc(s1).view(n, -1, s1.shape[1]).mean(1)
    return net.classifier(net.dropout(pooled))


def cell_forward(
    cell: nn.Module, r0: SharedInput, r1: SharedInput, n: int, drop_prob: torch.Tensor | None, relu_output: bool
) -> torch.Tensor | SharedInput:
    """A :class:`~pvnas.nn.network.Cell` on frames, from the ReLUs of its two inputs; returns the
    concatenated nodes, as their ReLU (a :class:`SharedInput`) if ``relu_output``."""
    states = [_preprocess(cell.pre0, r0, n), _preprocess(cell.pre1, r1, n)]
    relus: dict[int, SharedInput] = {}

    def relu_of(j: int) -> SharedInput:
        if j not in relus:
            relus[j] = SharedInput(F.relu(states[j]))
        return relus[j]

    for node in range(len(cell.ops) // 2):
        terms = []
        for e in (2 * node, 2 * node + 1):
            j = cell.inputs[e]
            h, fresh = _edge(cell.ops[e], states[j], lambda j=j: relu_of(j), n)
            if cell.training and drop_prob is not None and cell.droppable[e]:
                scale = drop_path_scale(n, drop_prob, h).repeat_interleave(h.shape[0] // n).view(-1, 1, 1, 1)
                h, fresh = (h.mul_(scale) if fresh else h * scale), True
            terms.append((h, fresh))
        (a, fresh_a), (b, fresh_b) = terms
        states.append(frames_grad(a.add_(b) if fresh_a else b.add_(a) if fresh_b else a + b))
    out = torch.cat([states[i] for i in cell.concat], dim=1)  # (channels-last in, channels-last out)
    return SharedInput(F.relu_(out)) if relu_output else frames_grad(out)


def _preprocess(pre: nn.Module, src: SharedInput, n: int) -> torch.Tensor:
    if isinstance(pre, FactorizedReduce):
        return frames_grad(factorized_reduce(src, [pre], None))
    return frames_grad(chain(src, [pre], n, None))


def _edge(op: nn.Module, x: torch.Tensor, relu: Callable[[], SharedInput], n: int) -> tuple[torch.Tensor, bool]:
    """A registry op on frames ``x`` (``relu()``: its ReLU, for the ops that start with one), and whether the
    result is a fresh tensor that may be changed in place (not the input, not a custom function's view)."""
    if isinstance(op, nn.Identity):
        return x, False
    if isinstance(op, (nn.AvgPool3d, nn.MaxPool3d)):
        return pool_frames(x, op), False
    if isinstance(op, FactorizedReduce):
        return factorized_reduce(relu(), [op], None), True
    return chain(relu(), [op], n, None), True
