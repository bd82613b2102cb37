"""Derivation under a budget (docs/design.md, "Budgets"): the genotype of largest alpha score whose retrained
network costs at most a limit, exactly.

The score is the one the paper's rule maximises (:func:`~pvnas.space.genotype.op_scores`: softmax over the ops,
times the PC-DARTS edge weight, summed over the kept edges). A network's cost is a fixed part plus one term per
kept (cell kind, edge, op) (:class:`CostTable`; MACs and parameters are counted from the modules in
:mod:`pvnas.metrics.cost`, milliseconds measured by :mod:`pvnas.metrics.latency`), so the best genotype within
limits is a multiple-choice knapsack, solved exactly in :mod:`pvnas.space.knapsack`: ``Genotype.derive(alphas,
budget=Budget([(table, most), ...]))``. :func:`front` gives the whole exact front of one search (``pvnas pareto``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pvnas.errors import GenotypeError
from pvnas.space.genotype import (  # noqa: F401 (Budget, BudgetError, cheapest: the budget API in one place)
    EDGES_PER_CELL, Budget, BudgetError, Genotype, budget_front, cheapest, edge_inputs, op_scores,
)
from pvnas.space.ops import CELL_KINDS, ops_for

TABLE_FORMAT = "pvnas-costs/1"


@dataclass(frozen=True)
class CostTable:
    """One cost of the retrained network as ``fixed`` + the sum of ``ops[kind][edge][op]`` over kept edges.

    ``ops[kind]`` has one row per supernet edge (:func:`edge_inputs` order) and one column per op of the kind
    (alpha column order); each entry is what that op on that edge adds, summed over every position where the
    kind is stacked. ``metric`` names the unit (``macs``, ``params``, ``ms``); ``meta`` says how it was measured.
    """

    metric: str
    fixed: float
    ops: Mapping[str, tuple[tuple[float, ...], ...]]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in CELL_KINDS:
            rows = self.ops.get(kind)
            shape = (EDGES_PER_CELL, len(ops_for(kind)))
            if rows is None or len(rows) != shape[0] or any(len(r) != shape[1] for r in rows):
                raise GenotypeError(f"cost table {self.metric}: cell {kind} needs {shape[0]} rows of {shape[1]} costs")
            if not all(math.isfinite(v) and v >= 0 for r in rows for v in r):
                raise GenotypeError(f"cost table {self.metric}: cell {kind} holds a negative or non-finite cost")
        if not math.isfinite(self.fixed):  # may be negative: a measured forward can share work between edges
            raise GenotypeError(f"cost table {self.metric}: fixed cost must be finite, got {self.fixed}")

    def of(self, genotype: Genotype) -> float:
        """The cost of ``genotype``'s network: fixed + its kept edges' costs."""
        rows = {pair: r for r, pair in enumerate(edge_inputs())}
        total = self.fixed
        for kind in CELL_KINDS:
            ops = ops_for(kind)
            for e, (op, j) in enumerate(genotype.cells[kind].edges):
                total += self.ops[kind][rows[(2 + e // 2, j)]][ops.index(op)]
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "metric": self.metric, "fixed": self.fixed,
                "ops": {k: [list(r) for r in rows] for k, rows in self.ops.items()}, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "cost table") -> "CostTable":
        """Build and check a table read from a file (``pvnas latency``'s); errors name ``source``."""
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise GenotypeError(f"{source}: expected a JSON object with format {TABLE_FORMAT!r}")
        ops, fixed = data.get("ops"), data.get("fixed")
        if not isinstance(data.get("metric"), str) or not isinstance(ops, dict) or not isinstance(fixed, (int, float)):
            raise GenotypeError(f"{source}: needs 'metric' (a string), 'fixed' (a number) and 'ops' (an object)")
        try:
            rows = {k: tuple(tuple(float(v) for v in r) for r in ops[k]) for k in CELL_KINDS}
        except (KeyError, TypeError, ValueError):
            raise GenotypeError(f"{source}: 'ops' needs, per cell kind {', '.join(CELL_KINDS)}, rows of numbers") from None
        meta = data.get("meta", {})
        try:
            return cls(data["metric"], float(fixed), rows, meta if isinstance(meta, dict) else {})
        except GenotypeError as exc:
            raise GenotypeError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Any) -> "CostTable":
        try:
            data = json.loads(open(path).read())
        except FileNotFoundError:
            raise GenotypeError(f"{path}: cost table not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise GenotypeError(f"{path}: cannot read the cost table ({exc})") from None
        return cls.from_dict(data, str(path))


@dataclass(frozen=True)
class Front:
    """Genotypes no other genotype beats on every cost and on score, cheapest first in ``costs[:, 0]``."""

    costs: np.ndarray  # (n, d) float64, one column per table
    scores: np.ndarray  # (n,)
    genotypes: tuple[Genotype, ...]
    metrics: tuple[str, ...]


def front(alphas: Mapping[str, torch.Tensor], tables: Sequence[CostTable],
          edge_weights: Mapping[str, torch.Tensor] | None = None, max_param_free: int | None = None,
          meta: Mapping[str, Any] | None = None) -> Front:
    """Every genotype on the exact (score, costs) Pareto front."""
    if not tables:
        raise GenotypeError("a budget front needs at least one cost table")
    costs, scores, genotypes = budget_front(alphas, tables, edge_weights, max_param_free, meta)
    return Front(costs, scores, tuple(genotypes), tuple(t.metric for t in tables))


def genotype_score(genotype: Genotype, alphas: Mapping[str, torch.Tensor],
                   edge_weights: Mapping[str, torch.Tensor] | None = None) -> float:
    """The paper rule's score of ``genotype``: the sum of its kept edges' op weights (edge weights included)."""
    weights = op_scores(alphas, edge_weights)
    rows = {pair: r for r, pair in enumerate(edge_inputs())}
    return float(sum(float(weights[kind][rows[(2 + e // 2, j)], ops_for(kind).index(op)])
                     for kind in CELL_KINDS for e, (op, j) in enumerate(genotype.cells[kind].edges)))
