"""The identity and pool terms of a node's edges, added by one autograd function that recomputes the
pools in backward rather than keeping pooled maps and max-pool indices (memory)."""

from __future__ import annotations

import torch
from torch import nn

from pvnas.nn.fast.layout import nhwc
from pvnas.nn.fast.norm import batch_norm, batch_norm_frames
from pvnas.nn.fast.pool import pool_frames


def _parameter_free_sources(
    x: torch.Tensor, identity: bool, pools: list[nn.Module], bns: list[list[nn.BatchNorm3d]], record: bool
) -> list[torch.Tensor]:
    """x (if ``identity``) and each pool's affine-free train-mode BN output, as (N', H', W', c); ``record``
    puts the batch statistics into the BN modules of every edge (not when recomputing)."""
    sources = [nhwc(x)] if identity else []
    for pool, edge_bns in zip(pools, bns):
        pooled = pool_frames(x, pool)
        if record:
            y = batch_norm(pooled, edge_bns)
        else:
            y = batch_norm_frames(pooled, None, None, None, True, 0.0, edge_bns[0].eps)
        sources.append(nhwc(y))
    return sources


def _edge_views(ys: tuple[torch.Tensor, ...], c: int) -> list[torch.Tensor]:
    """Per edge, its (N', H', W', c) part of the channel-major batched group frames ``ys``."""
    return [v for y in ys for v in nhwc(y).unflatten(-1, (c, -1)).unbind(-1)]


class ParameterFree(torch.autograd.Function):
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
        # detached: then `pool_frames` takes the index-free separable max pool (backward recomputes with max_pool2d)
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
