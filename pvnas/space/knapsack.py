"""The exact multiple-choice knapsack behind derivation (docs/design.md, "Budgets"), on plain arrays.

A cell is ``(scores (E, O), costs (d, E, O), free (O,), node_rows)``: node k keeps 2 of the edges
``node_rows[k]`` (input j is position j), one op each; ``scores`` is -inf where an op may not be kept, ``free``
marks the parameter-free ops that P-DARTS' cap counts. A genotype's score and each cost are sums over its kept
(edge, op) pairs, so dynamic programming over Pareto fronts is exact: after each node (then each cell) only the
choices that no other choice beats on every cost and on score survive, grouped by the cell's count of
parameter-free edges while the cap applies. With no costs (d = 0) that is one best choice per count: the cap's
derivation. Costs are float64 sums, exact for integer counts below 2**53.

Ties (equal score) go to the cheaper choice (costs compared in order), then to the earlier one in enumeration
order (nodes in order; input pairs ascending; ops in column order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

Cell = tuple[np.ndarray, np.ndarray, np.ndarray, Sequence[Sequence[int]]]
Choice = tuple[int, int, int, int]  # (j1, o1, j2, o2) of one node, j1 < j2


def pareto(costs: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of the points that no other point of their group beats (every cost <= and score >=; of exact
    ties the lowest index survives), sorted by group, first cost ascending, score descending."""
    n, d = costs.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    g = np.zeros(n, dtype=np.int64) if groups is None else groups
    order = np.lexsort([np.arange(n)] + [costs[:, k] for k in reversed(range(d))] + [-scores, g])
    bounds = np.flatnonzero(np.r_[True, g[order][1:] != g[order][:-1], True])
    kept = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        idx = order[lo:hi]  # score descending, then costs lexicographic, then index
        if d == 0:
            kept.append(idx[:1])
            continue
        if d == 1:
            idx = idx[np.lexsort((-scores[idx], costs[idx, 0]))]  # cost ascending, score descending (stable)
            s = scores[idx]
            kept.append(idx[s > np.maximum.accumulate(np.r_[-np.inf, s[:-1]])])
            continue
        c = costs[idx]  # a point falls if one before it (score >=) costs no more on every metric
        alive = np.ones(len(idx), dtype=bool)
        for start in range(0, len(idx), 256):
            block = c[start : start + 256]
            rows = start + np.arange(len(block))
            le = (c[None, : rows[-1]] <= block[:, None]).all(-1) & (np.arange(rows[-1])[None, :] < rows[:, None])
            alive[rows] = ~le.any(1)
        idx = idx[alive]
        kept.append(idx[np.lexsort((-scores[idx], costs[idx, 0]))])
    return np.concatenate(kept)


@dataclass
class States:
    """Partial solutions: costs (n, d), scores (n,), the choice taken at each stage (n, stages), group (n,)."""

    costs: np.ndarray
    scores: np.ndarray
    picks: np.ndarray
    groups: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> "States":
        return States(self.costs[idx], self.scores[idx], self.picks[idx], None if self.groups is None else self.groups[idx])


def _combine(a: States, b: States, cap: int | None, room: np.ndarray | None) -> States:
    """Every state of ``a`` followed by every choice of ``b``, beaten ones dropped; ``room`` (per metric): the most
    the combined costs may reach (the limit less what the remaining stages cost at least)."""
    ia, ib = np.divmod(np.arange(len(a.scores) * len(b.scores)), len(b.scores))
    costs, scores = a.costs[ia] + b.costs[ib], a.scores[ia] + b.scores[ib]
    groups = None if a.groups is None or b.groups is None else a.groups[ia] + b.groups[ib]
    ok = np.isfinite(scores)
    if groups is not None and cap is not None:
        ok &= groups <= cap
    if room is not None:
        ok &= (costs <= room).all(1)
    ia, ib, costs, scores = ia[ok], ib[ok], costs[ok], scores[ok]
    groups = None if groups is None else groups[ok]
    keep = pareto(costs, scores, groups)
    picks = np.concatenate([a.picks[ia[keep]], b.picks[ib[keep]]], axis=1)
    return States(costs[keep], scores[keep], picks, None if groups is None else groups[keep])


def _node_choices(cell: Cell, k: int) -> tuple[States, np.ndarray]:
    """Every (pair of inputs, op per input) of node ``k`` that nothing beats, grouped by parameter-free edges,
    and the ``(j1, o1, j2, o2)`` table their picks index."""
    scores, costs, free, node_rows = cell
    rows = np.asarray(node_rows[k])
    ops = np.flatnonzero(np.isfinite(scores[rows[0]]))
    j1, j2 = np.triu_indices(len(rows), 1)
    o1, o2 = np.meshgrid(ops, ops, indexing="ij")
    table = np.stack(np.broadcast_arrays(j1[:, None], o1.ravel()[None], j2[:, None], o2.ravel()[None]), -1).reshape(-1, 4)
    r1, r2 = rows[table[:, 0]], rows[table[:, 2]]
    s = scores[r1, table[:, 1]] + scores[r2, table[:, 3]]
    c = (costs[:, r1, table[:, 1]] + costs[:, r2, table[:, 3]]).T
    g = free[table[:, 1]].astype(np.int64) + free[table[:, 3]]
    keep = pareto(c, s, g)
    return States(c[keep], s[keep], keep[:, None], g[keep]), table


def cell_front(cell: Cell, cap: int | None) -> tuple[States, list[list[Choice]]]:
    """The Pareto front of one cell, cheapest first; the states' single pick indexes the returned node choices."""
    d = cell[1].shape[0]
    states = States(np.zeros((1, d)), np.zeros(1), np.zeros((1, 0), dtype=np.int64),
                    None if cap is None else np.zeros(1, dtype=np.int64))
    tables = []
    for k in range(len(cell[3])):
        choices, table = _node_choices(cell, k)
        if cap is None:
            choices.groups = None
        tables.append(table)
        states = _combine(states, choices, cap, None)
    states = states.take(pareto(states.costs, states.scores))
    nodes = [[tuple(int(v) for v in tables[k][states.picks[i, k]]) for k in range(len(tables))]
             for i in range(len(states.scores))]
    return States(states.costs, states.scores, np.arange(len(nodes))[:, None]), nodes  # type: ignore[misc]


def solve(cells: Sequence[Cell], cap: int | None, limits: np.ndarray | None = None
          ) -> tuple[States, list[list[list[Choice]]]]:
    """The exact front of a space of cells (``limits`` (d,): only what fits). The final states' pick c indexes
    cell c's list of node choices."""
    fronts = [cell_front(cell, cap) for cell in cells]
    d = cells[0][1].shape[0]
    floors = [f.costs.min(0) if len(f.scores) else np.full(d, np.inf) for f, _ in fronts]
    states = States(np.zeros((1, d)), np.zeros(1), np.zeros((1, 0), dtype=np.int64))
    for i, (cell_states, _) in enumerate(fronts):
        room = None if limits is None else limits - np.sum([np.zeros(d)] + floors[i + 1 :], axis=0)
        states = _combine(states, cell_states, None, room)
    return states, [nodes for _, nodes in fronts]


def best(states: States) -> int:
    """The state of largest score, then the cheaper (costs in order), then the first."""
    return int(np.lexsort((states.costs[:, 0], -states.scores))[0])


MAX_TILT = 1e6  # the tilt :func:`spend` goes up to: a cost term a million times the score, the dearest choice within


@dataclass
class _Vertex:
    """The choice a solve at some tilt picks: its picks (into that solve's node choices) and costs, its untilted
    score, its costs as summed shares."""

    picks: np.ndarray
    costs: np.ndarray
    score: float
    weight: float
    choices: list[list[list[Choice]]]

    def value(self, tilt: float) -> float:
        return self.score + tilt * self.weight


def spend(cells: Sequence[Cell], cap: int | None, limits: np.ndarray, floors: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, list[list[list[Choice]]]] | None:
    """A budget to spend: the choice within ``limits`` of largest score, or where that costs less than ``floors``
    on some metric, the choice of largest score + tilt x (its costs as shares of ``limits``, summed) for the smallest
    tilt that reaches every floor: of the upper hull of (cost, score), the first vertex in the band, found exactly by
    walking the hull between the tilts 0 and :data:`MAX_TILT` (each step a solve at the tilt where two known vertices
    tie; exact for one metric, a walk along the summed shares for several). Where no tilt reaches the floors, the
    choice of largest score. Returns (picks, costs) of the choice and the cells' node choices, or None if nothing fits."""
    shares = 1.0 / np.maximum(np.abs(limits), 1e-300)

    def at(tilt: float) -> _Vertex | None:
        tilted = [(sc + tilt * np.tensordot(shares, co, axes=1), co, fr, ro) for sc, co, fr, ro in cells] if tilt else cells
        states, choices = solve(tilted, cap, limits)
        if not len(states.scores):
            return None
        i = best(states)
        weight = float(shares @ states.costs[i])
        return _Vertex(states.picks[i], states.costs[i], float(states.scores[i]) - tilt * weight, weight, choices)

    low = at(0.0)
    if low is None:
        return None
    high = None if (low.costs >= floors).all() else at(MAX_TILT)
    if high is None or not (high.costs >= floors).all():
        return low.picks, low.costs, low.choices
    while high.weight > low.weight:
        tilt = (low.score - high.score) / (high.weight - low.weight)  # where the two tie
        mid = at(tilt)
        assert mid is not None
        if mid.value(tilt) <= max(low.value(tilt), high.value(tilt)) + 1e-12 * (1 + abs(mid.value(tilt))):
            break  # nothing between them: ``high`` is the next vertex after ``low``
        low, high = (low, mid) if (mid.costs >= floors).all() else (mid, high)
    return high.picks, high.costs, high.choices
