"""The fast supernet cell: per node, the ops of its outgoing edges batched, mixed from this package's kernels.

What it computes differently from the reference, and why: the package docstring (:mod:`pvnas.nn.fast`);
the measurements: docs/performance.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.nn.fast.cpu.parameter_free import ParameterFree
from pvnas.nn.fast.layout import (
    GROUP_CHANNELS,
    frames_grad,
    from_frames,
    nchw,
    nhwc,
    pc_join,
    to_frames,
)
from pvnas.nn.fast.norm import batch_norm
from pvnas.nn.fast.ops import chain, factorized_reduce
from pvnas.nn.fast.policy import generic
from pvnas.nn.fast.pool import pool_frames
from pvnas.nn.fast.shared import SharedInput
from pvnas.nn.layers import preprocess
from pvnas.nn.mixed import MixedOp, skip_noise
from pvnas.space.genotype import NODES, edge_inputs
from pvnas.space.ops import CONV_OPS, FactorizedReduce, is_reduction, ops_for

POOLS = ("avg_pool_1x3x3", "max_pool_1x3x3")


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
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None,
        noise: float = 0.0,
    ) -> torch.Tensor:
        """``weights``: softmax(alpha), (14, n_ops); ``edge_weights``: per-edge factors (PC-DARTS edge norm);
        ``noise``: NoisyDARTS' skip noise scale, one draw per node (as the reference cell)."""
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
            outputs, passed = self._fan_out(j, states[j], weights, n, noise)
            for (e, i), out in zip(self.fan_out[j], outputs):
                mixed[i - 2] = out if mixed[i - 2] is None else mixed[i - 2].add_(out)
                if passed is not None:
                    b = passed if edge_weights is None else passed * edge_weights[e]
                    bypass[i - 2] = b if bypass[i - 2] is None else bypass[i - 2] + b
        return from_frames(nchw(torch.cat([nhwc(s) for s in states[2:]], dim=-1)), n)

    def _preprocess(self, pre: nn.Module, s: torch.Tensor, n: int) -> torch.Tensor:
        src = SharedInput(F.relu(to_frames(s)))
        if isinstance(pre, FactorizedReduce):
            return factorized_reduce(src, [pre], None)
        return chain(src, [pre], n, None)

    def _node(self, mixed: torch.Tensor, bypass: torch.Tensor | None) -> torch.Tensor:
        """A node from its summed edges; with partial channels, join the bypass channels as PC-DARTS."""
        return nchw(mixed if bypass is None else pc_join(mixed, bypass, self.k))

    def _fan_out(self, j: int, h: torch.Tensor, weights: torch.Tensor, n: int,
                 noise: float = 0.0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
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
                    terms.append(chain(src, ops, n, fold))
                elif name == "identity" and stride > 1:
                    terms.append(factorized_reduce(src, ops, fold))
            y = terms[0] + terms[1]
            for t in terms[2:]:
                y.add_(t)
            ys.append(y)
        ys = self._add_parameter_free(ys, x, stride, mods, w)
        if noise > 0 and stride == 1:  # NoisyDARTS: the identity term of every edge gets the node's noise
            ident = w[:, self.names.index("identity")]
            n_x = nhwc(skip_noise(x, noise, frames=True)).unsqueeze(-1)
            ys = [nchw((nhwc(y).unflatten(-1, (c, -1)) + (n_x * ident[i: i + self.group]).to(y.dtype)).flatten(-2))
                  for i, y in zip(range(0, len(edges), self.group), ys)]  # (in the sum's dtype: bf16 stays bf16)
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
        if bns[0][0].training and not generic(x):
            return list(ParameterFree.apply(x, coef, (identity, pools, bns), *ys))
        if bns[0][0].training:  # one batch statistic serves every edge: the sources are shared
            sources = ([nhwc(x)] if identity else []) + [nhwc(batch_norm(pool_frames(x, pool), b))
                                                         for pool, b in zip(pools, bns)]
            with torch.autocast(x.device.type, enabled=False):  # in the alphas' dtype: their gradients too
                free = (torch.stack(sources, -1).to(coef.dtype) @ coef.t()).split(self.group, dim=-1)
            return [nchw((nhwc(y).unflatten(-1, (x.shape[1], -1)) + f.to(y.dtype)).flatten(-2)) for y, f in zip(ys, free)]
        pooled = [pool_frames(x, pool) for pool in pools]
        terms = []
        for e in range(len(mods)):
            sources = ([nhwc(x)] if identity else []) + [nhwc(batch_norm(p, [b[e]])) for p, b in zip(pooled, bns)]
            terms.append(sum(s * coef[e, k] for k, s in enumerate(sources)))
        free = torch.stack(terms, dim=-1).split(self.group, dim=-1)
        return [nchw((nhwc(y).unflatten(-1, (x.shape[1], -1)) + f).flatten(-2)) for y, f in zip(ys, free)]
