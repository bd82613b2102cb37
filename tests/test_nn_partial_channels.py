"""Partial channels (PC-DARTS) and edge normalisation of the fast supernet against a literal PC-DARTS.

The oracle below is PC-DARTS (github.com/yuhuixu1993/PC-DARTS, ``model_search.py``) written out in 3D.
It calls nothing of the code under test (no ``FastCell.forward``, no ``Supernet.edge_weights``): an edge
runs its ops on the first C/K channels (``MixedOp.forward``), the other channels bypass it (max-pooled
on reduction edges), ``channel_shuffle`` interleaves the two with K groups, and a node sums its incoming
edges, each times ``weights2`` = softmax of the betas over that node's incoming edges only. Like
PC-DARTS with its op registry, it borrows from the repo only the modules: the op modules each supernet
edge owns, the cells' preprocessing, and the stem / pool / classifier.

A forward-only comparison misses gradient bugs (a detached bypass or edge weight still computes the
right output), so every test compares gradients of the input, the alphas, the betas and all weights,
plus the BatchNorm running statistics that the train-mode forward leaves behind.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pvnas.config import SEARCH_PRESETS, override
from pvnas.nn.supernet import ReferenceCell, Supernet, supernet_from_config
from pvnas.space.ops import CELL_KINDS

CLASSES = 5
INCOMING = (2, 3, 4, 5)  # edges into nodes 2..5, in DARTS order: node 2 from 0, 1; node 3 from 0, 1, 2; ...


# ------------------------------------------------------------------ literal PC-DARTS (the oracle)
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS ``channel_shuffle``, on (N, C, T, H, W)."""
    n, c = x.shape[:2]
    x = x.view(n, groups, c // groups, *x.shape[2:])
    return torch.transpose(x, 1, 2).contiguous().view(n, c, *x.shape[3:])


def pc_edge(edge: nn.Module, x: torch.Tensor, weights: torch.Tensor, k: int, reduction: bool) -> torch.Tensor:
    """PC-DARTS ``MixedOp.forward``: the ops mix 1/K of the channels, the rest bypass, then shuffle."""
    dim_2 = x.shape[1]
    xtemp, xtemp2 = x[:, : dim_2 // k], x[:, dim_2 // k :]
    temp1 = sum(w * op(xtemp) for w, op in zip(weights, edge.ops))
    if k == 1:  # nothing bypasses: DARTS' MixedOp (the edge-norm betas still apply)
        return temp1
    if reduction:  # PC-DARTS: nn.MaxPool2d(2, 2); ceil_mode as the strided ops here round odd sizes up
        xtemp2 = F.max_pool3d(xtemp2, (1, 2, 2), (1, 2, 2), ceil_mode=True)
    return channel_shuffle(torch.cat([temp1, xtemp2], dim=1), k)


def pc_weights2(betas: torch.Tensor) -> torch.Tensor:
    """PC-DARTS ``weights2`` (``Network.forward``): softmax of the betas of each node's incoming edges."""
    parts, start = [], 0
    for n in INCOMING:
        parts.append(F.softmax(betas[start : start + n], dim=-1))
        start += n
    return torch.cat(parts)


def pc_cell(cell: nn.Module, kind: str, k: int, s0, s1, weights, weights2=None) -> torch.Tensor:
    """PC-DARTS ``Cell.forward``; a reduction cell strides 1x2x2 on the edges from nodes 0 and 1.

    Without edge normalisation (``weights2`` None) every edge weight is 1.
    """
    states = [cell.pre0(s0), cell.pre1(s1)]
    offset = 0
    for n in INCOMING:
        s = sum(
            (1.0 if weights2 is None else weights2[offset + j])
            * pc_edge(cell.edges[offset + j], h, weights[offset + j], k, kind.endswith("RC") and j < 2)
            for j, h in enumerate(states)
        )
        offset += n
        states.append(s)
    return torch.cat(states[-4:], dim=1)


def pc_supernet(net: nn.Module, x: torch.Tensor, k: int) -> torch.Tensor:
    """PC-DARTS ``Network.forward`` over this repo's layout: stem, S-NC, S-RC, T-NC, T-RC, pool, linear."""
    s0 = s1 = net.stem(x)
    for kind, cell in net.cells.items():
        weights = F.softmax(net.alphas[kind], dim=-1)
        weights2 = pc_weights2(net.betas[kind]) if kind in net.betas else None
        s0, s1 = s1, pc_cell(cell, kind, k, s0, s1, weights, weights2)
    return net.classifier(net.pool(s1).flatten(1))


# ------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=None)
def _built_twins(k: int, edge_norm: bool, channels: int, dtype: torch.dtype):
    torch.manual_seed(0)
    cfg = override(SEARCH_PRESETS["tiny"], channels=channels, partial_channels=k, edge_norm=edge_norm)
    fast = supernet_from_config(cfg, CLASSES, ()).to(dtype)  # the default cells: the fast ones
    assert all(type(cell).__name__ == "FastCell" for cell in fast.cells.values())
    with torch.no_grad():
        for p in fast.arch_parameters():
            p.normal_()
    return fast, copy.deepcopy(fast), {name: t.clone() for name, t in fast.state_dict().items()}


def twins(k: int, edge_norm: bool, channels: int = 8, dtype: torch.dtype = torch.float64):
    """The fast supernet and a copy of it (same weights and buffers) for the oracle to run.

    The alphas and betas are drawn far from uniform, so that a wrong softmax or a lost path shows.
    Built once per configuration (building dominated the run time) and reset to that state here.
    """
    fast, literal, state = _built_twins(k, edge_norm, channels, dtype)
    for net in (fast, literal):
        net.load_state_dict(state)
        net.zero_grad(set_to_none=True)
        net.train()
    return fast, literal


def cell_inputs(cell: nn.Module, dtype=torch.float64, n: int = 2, t: int = 3, size=(7, 5)):
    """Random (s0, s1) for ``cell`` at odd spatial sizes; s0 twice as large after a reduction cell."""
    def c_in(pre: nn.Module) -> int:
        return next(m for m in pre.modules() if isinstance(m, nn.Conv3d)).in_channels

    g = torch.Generator().manual_seed(1)
    reduction_prev = cell.pre0.__class__.__name__ == "FactorizedReduce"
    size0 = tuple(2 * s - 1 for s in size) if reduction_prev else size
    s0 = torch.randn(n, c_in(cell.pre0), t, *size0, generator=g, dtype=dtype)
    s1 = torch.randn(n, c_in(cell.pre1), t, *size, generator=g, dtype=dtype)
    return s0, s1


def probe_like(out: torch.Tensor) -> torch.Tensor:
    """A fixed random tensor: the loss ``(out * probe).sum()`` gives every output element its own gradient."""
    return torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: the error relative to the tensor's scale."""
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)


def rel_norm_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want||, for float32, where single near-zero elements carry rounding noise."""
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def mismatches(fast: nn.Module, oracle: nn.Module, err, tol: float, prefix: str = "", buffers: bool = True) -> list[str]:
    """Every gradient (of the arch parameters and the weights under ``prefix``) and every buffer under
    ``prefix`` (if ``buffers``) on which the fast net and the oracle differ by more than ``tol``, with the error."""
    found, what = [], "relative norm error" if err is rel_norm_err else "relative error"
    want_params, want_buffers = dict(oracle.named_parameters()), dict(oracle.named_buffers())
    for name, p in fast.named_parameters():
        q = want_params[name]
        if not name.startswith((prefix, "alphas", "betas")):
            continue
        if (p.grad is None) != (q.grad is None):
            found.append(f"grad of {name}: {'missing' if p.grad is None else 'present'} in the fast path only")
        elif p.grad is not None and err(p.grad, q.grad) > tol:
            found.append(f"grad of {name}: {what} {err(p.grad, q.grad):.3g}")
    for name, b in fast.named_buffers():
        if buffers and name.startswith(prefix) and err(b.double(), want_buffers[name].double()) > tol:
            found.append(f"buffer {name}: {what} {err(b.double(), want_buffers[name].double()):.3g}")
    return found


# ------------------------------------------------------------------ float64: exact up to rounding
FLOAT64_TOL = 1e-10  # measured <= 3e-14 (max error over the tensor's max); the bugs this catches are > 1e-2


@pytest.mark.parametrize("edge_norm", [False, True], ids=["no-edge-norm", "edge-norm"])
@pytest.mark.parametrize("k", [1, 2, 4], ids=lambda k: f"K{k}")
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_pc_cell_matches_literal_pc_darts(kind, k, edge_norm, kernels):
    """One cell in train mode, float64: output, gradients of s0, s1, alphas, betas and every weight, and
    the BatchNorm running statistics equal the literal PC-DARTS cell's. K=1 is DARTS (+ edge norm)."""
    fast, literal = twins(k, edge_norm)
    s0, s1 = cell_inputs(fast.cells[kind])
    outs, input_grads = [], []
    for net in (fast, literal):
        x0, x1 = s0.clone().requires_grad_(), s1.clone().requires_grad_()
        weights = torch.softmax(net.alphas[kind], dim=-1)
        if net is fast:  # the code under test, edge weights included
            out = net.cells[kind](x0, x1, weights, net.edge_weights(kind))
        else:
            out = pc_cell(net.cells[kind], kind, k, x0, x1, weights, pc_weights2(net.betas[kind]) if edge_norm else None)
        (out * probe_like(out)).sum().backward()
        outs.append(out.detach())
        input_grads.append((x0.grad, x1.grad))
    assert outs[0].shape == outs[1].shape
    found = [f"output: relative error {rel_err(*outs):.3g}"] if rel_err(*outs) > FLOAT64_TOL else []
    for name, g_fast, g_lit in zip(("s0", "s1"), *input_grads):
        if rel_err(g_fast, g_lit) > FLOAT64_TOL:
            found.append(f"grad of {name}: relative error {rel_err(g_fast, g_lit):.3g}")
    found += mismatches(fast, literal, rel_err, FLOAT64_TOL, prefix=f"cells.{kind}.")
    assert not found, f"{kind} K={k} edge_norm={edge_norm}:\n" + "\n".join(found)


@pytest.mark.parametrize("k", [2, 4], ids=lambda k: f"K{k}")
def test_pc_supernet_matches_literal_pc_darts(k):
    """The whole supernet with edge normalisation, float64: logits and the gradients of all alphas, betas
    and weights equal those of a supernet assembled from the literal cells (errors compound across cells)."""
    fast, literal = twins(k, edge_norm=True)
    x = torch.randn(2, 3, 3, 13, 9, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    logits = [fast(x), pc_supernet(literal, x, k)]
    for out in logits:
        (out * probe_like(out)).sum().backward()
    found = [f"logits: relative error {rel_err(*logits):.3g}"] if rel_err(*logits) > FLOAT64_TOL else []
    found += mismatches(fast, literal, rel_err, FLOAT64_TOL)
    assert not found, f"supernet K={k}:\n" + "\n".join(found)


# ------------------------------------------------------------------ float32: the dtype searches run in
# Summation orders differ (batched edges, folded convs, BN-fused op weights, thread count) and every BN divides
# by a batch std: float32 rounding (6e-8) grows to <= 1.2e-5 in relative gradient norms here; 3e-4 leaves 25x
# room for other CPUs' kernels, the bugs this catches are > 1e-2.
FLOAT32_RTOL = 3e-4


@pytest.mark.parametrize("k", [1, 4], ids=["K1-vs-reference", "K4-vs-literal-pc"])
def test_float32_fast_supernet_matches_oracle(k, kernels):
    """float32, train mode, C=16, edge normalisation: K=1 against the reference supernet (literal DARTS
    MixedOp, ``impl="reference"``), K=4 against the literal PC-DARTS supernet; relative norm errors."""
    fast, oracle = twins(k, edge_norm=True, channels=16, dtype=torch.float32)
    if k == 1:  # (the reference cell takes edge factors; a search config does not offer it edge norm)
        oracle = Supernet(16, CLASSES, cell=ReferenceCell, edge_norm=True)
        oracle.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 4, 31, 23, generator=torch.Generator().manual_seed(1))
    logits = [fast(x), oracle(x) if k == 1 else pc_supernet(oracle, x, k)]
    for out in logits:
        (out * probe_like(out)).sum().backward()
    found = [f"logits: relative norm error {rel_norm_err(*logits):.3g}"] if rel_norm_err(*logits) > FLOAT32_RTOL else []
    # (not the buffers: a running mean is ~0, its float32 rounding is relative to the data; float64 checks them)
    found += mismatches(fast, oracle, rel_norm_err, FLOAT32_RTOL, buffers=False)
    assert not found, f"float32 K={k}:\n" + "\n".join(found)
