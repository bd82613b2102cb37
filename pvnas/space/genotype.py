"""Genotypes as data (docs/design.md §3): load, save, validate, derive from alphas, sample at random.

A genotype is never ``eval``-ed: it is JSON, validated field by field, and every error says
which cell, which edge and which value broke which rule.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pvnas.errors import GenotypeError
from pvnas.space.knapsack import Cell, Choice, solve, spend
from pvnas.space.ops import CELL_KINDS, CONV_OPS, PARAMETER_FREE, SPATIAL_OPS, TEMPORAL_OPS, ops_for

FORMAT = "pvnas-genotype/1"
NODES = 4  # intermediate nodes per cell
EDGES_PER_CELL = 14  # supernet edges: 2 + 3 + 4 + 5
CONCAT = (2, 3, 4, 5)


def edge_inputs() -> list[tuple[int, int]]:
    """(node, input) of the 14 supernet edges in DARTS order: node 2 from 0,1; node 3 from 0,1,2; ..."""
    return [(node, j) for node in range(2, 2 + NODES) for j in range(node)]


def node_rows() -> list[list[int]]:
    """Per intermediate node, the rows (in :func:`edge_inputs` order) of its candidate input edges."""
    starts = [sum(range(2, node)) for node in range(2, 2 + NODES)]
    return [list(range(start, start + node)) for start, node in zip(starts, range(2, 2 + NODES))]


def op_scores(alphas: Mapping[str, torch.Tensor], edge_weights: Mapping[str, torch.Tensor] | None = None
              ) -> dict[str, torch.Tensor]:
    """The score the paper's rule ranks by, per cell kind ``(14, n_ops)``: softmax over the ops, times the edge's
    PC-DARTS weight where the search normalised edges (float32, on the CPU). A genotype's score is the sum over its
    kept edges."""
    alphas = check_alphas(alphas)
    edge_weights = None if edge_weights is None else check_alphas(edge_weights, "edge weights", per_edge=True)
    out = {}
    for kind in CELL_KINDS:
        weights = torch.softmax(alphas[kind].detach().float().cpu(), dim=-1)
        if edge_weights is not None:
            weights = weights * edge_weights[kind].detach().float().cpu()[:, None]
        out[kind] = weights
    return out


def check_alphas(alphas: Any, source: str = "alphas", per_edge: bool = False) -> dict[str, torch.Tensor]:
    """The ``alphas/epoch_NNN.pt`` contract (docs/design.md §2): a dict of one finite tensor per cell kind, shape
    ``(14, n_ops)`` (``per_edge``: ``(14,)``, the edge weights of edge normalisation). Errors name source,
    kind and shape."""
    if not isinstance(alphas, Mapping):
        raise GenotypeError(f"{source}: expected a dict of cell kind -> tensor, got {type(alphas).__name__}")
    out = {}
    for kind in CELL_KINDS:
        a = alphas.get(kind)
        shape = (EDGES_PER_CELL,) if per_edge else (EDGES_PER_CELL, len(ops_for(kind)))
        if not isinstance(a, torch.Tensor) or tuple(a.shape) != shape or not a.is_floating_point():
            found = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise GenotypeError(f"{source}: cell {kind} needs a float tensor of shape {shape}, got {found}")
        if not torch.isfinite(a).all():
            raise GenotypeError(f"{source}: cell {kind} holds non-finite values")
        out[kind] = a
    return out


@dataclass(frozen=True)
class CellGenotype:
    """One cell: 8 ``(op, input_node)`` pairs, entries 2k and 2k+1 feed node k+2."""

    edges: tuple[tuple[str, int], ...]
    concat: tuple[int, ...] = CONCAT

    def count(self, ops: frozenset[str]) -> int:
        return sum(op in ops for op, _ in self.edges)


@dataclass(frozen=True)
class Genotype:
    cells: Mapping[str, CellGenotype]
    meta: Mapping[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "cells": {
                kind: {"edges": [[op, j] for op, j in cell.edges], "concat": list(cell.concat)}
                for kind, cell in self.cells.items()
            },
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> "Genotype":
        """Build and validate; ``source`` (usually the file name) prefixes every error."""
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise GenotypeError(f"{source}: field 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        cells_raw = data.get("cells")
        if not isinstance(cells_raw, dict):
            raise GenotypeError(f"{source}: field 'cells' must be an object with keys {', '.join(CELL_KINDS)}")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise GenotypeError(f"{source}: field 'meta' must be an object, got {type(meta).__name__}")
        cells: dict[str, CellGenotype] = {}
        for kind, raw in cells_raw.items():
            where = f"{source}: cell {kind}"
            if not isinstance(raw, dict) or not isinstance(raw.get("edges"), list):
                raise GenotypeError(f"{where}: expected an object with an 'edges' list")
            edges = []
            for e, entry in enumerate(raw["edges"]):
                if (
                    not isinstance(entry, (list, tuple))
                    or len(entry) != 2
                    or not isinstance(entry[0], str)
                    or not isinstance(entry[1], int)
                    or isinstance(entry[1], bool)
                ):
                    raise GenotypeError(f"{where}, edge {e}: expected [op_name, input_node], got {entry!r}")
                edges.append((entry[0], entry[1]))
            concat = raw.get("concat", list(CONCAT))
            if not isinstance(concat, list):
                raise GenotypeError(f"{where}: 'concat' must be a list, got {concat!r}")
            cells[kind] = CellGenotype(tuple(edges), tuple(concat))
        genotype = cls(cells, meta)
        genotype.validate(source)
        return genotype

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Genotype":
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise GenotypeError(f"{path}: genotype file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise GenotypeError(f"{path}: cannot read genotype file ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically so a reader never sees half a file."""
        self.validate()
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            raise GenotypeError(f"{path}: cannot write the genotype ({exc.strerror or exc})") from None

    # ----------------------------------------------------------------- validation
    def validate(self, source: str = "genotype") -> None:
        """Check every rule of docs/design.md §3; raise :class:`GenotypeError` naming cell, edge and value."""
        unknown = [k for k in self.cells if k not in CELL_KINDS]
        if unknown:
            raise GenotypeError(f"{source}: unknown cell kind {unknown[0]!r}; expected {', '.join(CELL_KINDS)}")
        missing = [k for k in CELL_KINDS if k not in self.cells]
        if missing:
            raise GenotypeError(f"{source}: missing cell {missing[0]!r}; a genotype needs {', '.join(CELL_KINDS)}")
        for kind in CELL_KINDS:
            cell = self.cells[kind]
            where = f"{source}: cell {kind}"
            if len(cell.edges) != 2 * NODES:
                raise GenotypeError(f"{where}: expected {2 * NODES} edges (2 per node), got {len(cell.edges)}")
            for e, (op, j) in enumerate(cell.edges):
                node = 2 + e // 2
                at = f"{where}, edge {e} (node {node})"
                if op == "zero":
                    raise GenotypeError(f"{at}: op 'zero' is not allowed in a derived genotype")
                if op not in TEMPORAL_OPS:
                    raise GenotypeError(f"{at}: unknown op {op!r}; expected one of {', '.join(TEMPORAL_OPS[1:])}")
                if op not in ops_for(kind):
                    raise GenotypeError(
                        f"{at}: temporal op {op!r} in spatial cell; spatial cells allow {', '.join(SPATIAL_OPS[1:])}"
                    )
                if not 0 <= j < node:
                    raise GenotypeError(f"{at}: input node {j} must be an earlier node, in 0..{node - 1}")
                if e % 2 == 1 and j == cell.edges[e - 1][1]:
                    raise GenotypeError(f"{at}: duplicate input node {j}; node {node} needs 2 distinct inputs")
            if tuple(cell.concat) != CONCAT:
                raise GenotypeError(f"{where}: 'concat' must be {list(CONCAT)}, got {list(cell.concat)}")

    # ----------------------------------------------------------------- derivation / sampling
    @classmethod
    def derive(
        cls,
        alphas: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
        edge_weights: Mapping[str, torch.Tensor] | None = None,
        max_param_free: int | None = None,
        budget: "Budget | None" = None,
    ) -> "Genotype":
        """docs/design.md §2: per edge the best non-``zero`` op by softmax score; per node the 2 best edges.

        Kept edges are listed by input node (ties keep the earlier edge), so the file is canonical.
        ``edge_weights`` (PC-DARTS edge normalisation, 14 per kind) multiply the scores that rank edges.
        ``max_param_free`` (P-DARTS' cap on skip connections, extended to pools): a cell that keeps more
        parameter-free edges is derived again as the highest-scoring choice within the cap; cells within it are
        the paper's rule unchanged. ``budget`` (docs/design.md, "Budgets"): where the result costs more than a
        limit, the genotype of largest score within every limit instead (exact; ties: the cheaper), or
        :class:`BudgetError` naming the cheapest reachable cost; a budget with ``spend`` also spends it.
        """
        if max_param_free is not None and not 0 <= max_param_free <= 2 * NODES:
            raise GenotypeError(f"max_param_free must be in 0..{2 * NODES}, got {max_param_free}")
        weights_of = op_scores(alphas, edge_weights)
        meta = {k: dict(v) if isinstance(v, Budget) else v for k, v in (meta or {}).items()}  # recorded as plain data
        cells = {}
        for kind in CELL_KINDS:
            ops = ops_for(kind)
            weights = weights_of[kind].clone()
            weights[:, ops.index("zero")] = -1.0
            best_score, best_op = weights.max(dim=-1)
            edges: list[tuple[str, int]] = []
            row = 0
            for node in range(2, 2 + NODES):
                scores = best_score[row : row + node].tolist()
                keep = sorted(sorted(range(node), key=lambda j: (-scores[j], j))[:2])
                edges += [(ops[int(best_op[row + j])], j) for j in keep]
                row += node
            cell = CellGenotype(tuple(edges))
            if max_param_free is not None and cell.count(PARAMETER_FREE) > max_param_free:
                cell = _capped_cell(weights, ops, max_param_free)
            cells[kind] = cell
        genotype = cls(cells, dict(meta or {}))
        if budget is None or budget.met(genotype):
            return genotype
        found = spend(_knapsack_cells(weights_of, [t for t, _ in budget.limits]), max_param_free,
                      np.array([most - table.fixed for table, most in budget.limits], dtype=np.float64),
                      np.array([(budget.spend or 0.0) * most - table.fixed for table, most in budget.limits]))
        if found is None:
            low = cheapest([t for t, _ in budget.limits], max_param_free)
            wanted = ", ".join(_amount(t.metric, most) for t, most in budget.limits)
            within = "" if max_param_free is None else f" with at most {max_param_free} parameter-free edges per cell"
            raise BudgetError(f"no genotype fits {wanted}: the cheapest reachable network{within} costs "
                              + ", ".join(_amount(k, v) for k, v in low.items()), low)
        picks, _, choices = found
        return _from_choices([choices[c][picks[c]] for c in range(len(CELL_KINDS))], meta)

    @classmethod
    def random(cls, seed: int, min_conv: int = 0, meta: Mapping[str, Any] | None = None) -> "Genotype":
        """Uniform random cells (paper Table 3 baseline), resampled until each has >= ``min_conv`` conv ops."""
        if not 0 <= min_conv <= 2 * NODES:
            raise GenotypeError(f"min_conv must be in 0..{2 * NODES}, got {min_conv}")
        rng = random.Random(seed)
        cells = {}
        for kind in CELL_KINDS:
            ops = ops_for(kind)[1:]  # never zero
            while True:
                edges: list[tuple[str, int]] = []
                for node in range(2, 2 + NODES):
                    edges += [(rng.choice(ops), j) for j in sorted(rng.sample(range(node), 2))]
                cell = CellGenotype(tuple(edges))
                if cell.count(CONV_OPS) >= min_conv:
                    break
            cells[kind] = cell
        return cls(cells, {"source": "random", "seed": seed, "min_conv": min_conv, **(meta or {})})

    # ----------------------------------------------------------------- summaries
    def parameter_free_edges(self) -> dict[str, int]:
        """Per cell, how many kept edges are identity/pool (paper Fig. 4 collapse signal)."""
        return {k: c.count(PARAMETER_FREE) for k, c in self.cells.items()}

    def parameter_free_share(self) -> dict[str, float]:
        """Per cell, the share of kept edges that are identity/pool."""
        return {k: c.count(PARAMETER_FREE) / len(c.edges) for k, c in self.cells.items()}

    def describe(self) -> str:
        """One line per cell, e.g. ``S-NC: n2 <- sep_conv_1x3x3(0) + identity(1) | ...``."""
        lines = []
        for kind, cell in self.cells.items():
            nodes = [
                f"n{2 + k} <- {cell.edges[2 * k][0]}({cell.edges[2 * k][1]}) + {cell.edges[2 * k + 1][0]}({cell.edges[2 * k + 1][1]})"
                for k in range(NODES)
            ]
            lines.append(f"{kind}: " + " | ".join(nodes))
        return "\n".join(lines)


def _capped_cell(weights: torch.Tensor, ops: tuple[str, ...], cap: int) -> CellGenotype:
    """The cell with the largest total op score among those with <= ``cap`` parameter-free edges: the budget
    knapsack without costs (:mod:`pvnas.space.knapsack`), exact."""
    scores = weights.double().numpy().copy()
    scores[:, ops.index("zero")] = -np.inf
    free = np.array([op in PARAMETER_FREE for op in ops])
    states, nodes = solve([(scores, np.zeros((0,) + scores.shape), free, node_rows())], cap)
    best = nodes[0][int(states.picks[int(np.argmax(states.scores)), 0])]
    return CellGenotype(tuple(e for j1, o1, j2, o2 in best for e in ((ops[o1], j1), (ops[o2], j2))))


UNITS = {"macs": ("GFLOPs", 1e9), "params": ("parameters", 1.0), "ms": ("ms", 1.0)}  # how a budget is said


def _amount(metric: str, value: float) -> str:
    name, scale = UNITS.get(metric, (metric, 1.0))
    return f"{value / scale:.6g} {name}"


class BudgetError(GenotypeError):
    """No genotype fits the limits; ``cheapest`` holds, per metric, the lowest cost any genotype reaches."""

    def __init__(self, message: str, cheapest: dict[str, float]) -> None:
        super().__init__(message)
        self.cheapest = cheapest


class Budget(dict):  # type: ignore[type-arg]
    """Limits on a network's costs for :meth:`Genotype.derive`: ``limits`` pairs a cost table (anything with
    ``metric``, ``fixed``, ``ops`` per kind and ``of(genotype)``, e.g. :class:`pvnas.space.budget.CostTable`) with
    the most it may reach. As a mapping it is what a genotype's meta records: ``{"max_<metric>": most, ...}`` and
    the ``network`` the tables describe.

    ``spend`` (a target search's budget: 0.95): a derivation that would cost under that share of a limit spends it
    (:func:`pvnas.space.knapsack.spend`): of the genotypes in the band, the one a tilt of the score toward cost
    picks first, not always the one of largest score; where none is reachable, the best within."""

    def __init__(self, limits: Sequence[tuple[Any, float]], network: str = "", spend: float | None = None) -> None:
        if spend is not None and not 0 < spend <= 1:
            raise GenotypeError(f"a budget's spend must be in (0, 1], got {spend}")
        super().__init__({f"max_{t.metric}": float(most) for t, most in limits}, **({"network": network} if network else {}),
                         **({"spend": float(spend)} if spend is not None else {}))
        self.limits = tuple((t, float(most)) for t, most in limits)
        self.spend = spend

    def met(self, genotype: "Genotype") -> bool:
        """Within every limit, and (with ``spend``) costing at least that share of each."""
        return all((self.spend or 0.0) * most <= table.of(genotype) <= most for table, most in self.limits)

    def __reduce__(self) -> Any:  # copy and pickle keep the tables
        return (Budget, (self.limits, self.get("network", ""), self.spend))


def _knapsack_cells(weights: Mapping[str, torch.Tensor], tables: Sequence[Any]) -> list[Cell]:
    """The derivation as knapsack cells (:mod:`pvnas.space.knapsack`): op scores (zero forbidden), each table's
    costs, the parameter-free ops."""
    cells = []
    for kind in CELL_KINDS:
        ops = ops_for(kind)
        scores = weights[kind].double().numpy().copy()
        scores[:, ops.index("zero")] = -np.inf
        costs = np.array([t.ops[kind] for t in tables], dtype=np.float64).reshape(len(tables), *scores.shape)
        cells.append((scores, costs, np.array([op in PARAMETER_FREE for op in ops]), node_rows()))
    return cells


def _from_choices(nodes_per_kind: Sequence[Sequence[Choice]], meta: Mapping[str, Any] | None) -> Genotype:
    cells = {}
    for kind, nodes in zip(CELL_KINDS, nodes_per_kind):
        ops = ops_for(kind)
        cells[kind] = CellGenotype(tuple(e for j1, o1, j2, o2 in nodes for e in ((ops[o1], j1), (ops[o2], j2))))
    return Genotype(cells, dict(meta or {}))


def budget_front(alphas: Mapping[str, torch.Tensor], tables: Sequence[Any],
                 edge_weights: Mapping[str, torch.Tensor] | None = None, max_param_free: int | None = None,
                 meta: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray, list[Genotype]]:
    """The exact front of (score, costs): every genotype that no other beats on every cost and on score, cheapest
    first by the first table: costs (n, len(tables)), scores (n,), genotypes."""
    states, choices = solve(_knapsack_cells(op_scores(alphas, edge_weights), tables), max_param_free)
    genotypes = [_from_choices([choices[c][states.picks[i, c]] for c in range(len(CELL_KINDS))], meta)
                 for i in range(len(states.scores))]
    return states.costs + np.array([t.fixed for t in tables]), states.scores, genotypes


def cheapest(tables: Sequence[Any], max_param_free: int | None = None) -> dict[str, float]:
    """Per table, the lowest cost any genotype reaches (within the cap)."""
    zeros = {k: torch.zeros(EDGES_PER_CELL, len(ops_for(k))) for k in CELL_KINDS}
    return {t.metric: float(budget_front(zeros, [t], max_param_free=max_param_free)[0][:, 0].min()) for t in tables}
