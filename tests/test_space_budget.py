"""Derivation under a budget: the exact knapsack against brute force (ties made real), and the genotype API."""

import itertools
import json

import numpy as np
import pytest
import torch

from pvnas.errors import GenotypeError
from pvnas.space.budget import Budget, BudgetError, CostTable, cheapest, front, genotype_score
from pvnas.space.genotype import EDGES_PER_CELL, CellGenotype, Genotype
from pvnas.space.knapsack import pareto, solve, spend
from pvnas.space.ops import CELL_KINDS, ops_for


def _brute_pareto(costs, scores, groups):
    keep = []
    for i in range(len(scores)):
        beaten = any(groups[j] == groups[i] and (costs[j] <= costs[i]).all() and scores[j] >= scores[i]
                     and (j < i or (costs[j] != costs[i]).any() or scores[j] != scores[i]) for j in range(len(scores)) if j != i)
        keep.append(not beaten)
    return set(np.flatnonzero(keep))


@pytest.mark.parametrize("d", [0, 1, 2, 3])
def test_pareto_keeps_exactly_the_unbeaten_points(d):
    rng = np.random.default_rng(d)
    costs = rng.integers(0, 4, (300, d)).astype(float)  # few values: many exact ties
    scores = rng.integers(0, 5, 300) / 4
    groups = rng.integers(0, 3, 300)
    for g in (None, groups):
        got = pareto(costs, scores, g)
        assert set(got) == _brute_pareto(costs, scores, np.zeros(300) if g is None else g)
        assert len(set(got)) == len(got)


def _reduced_space(rng, n_cells, nodes, n_ops, d):
    """Cells of a smaller space: ``nodes`` input counts, op 0 forbidden (the zero op), ops 1.. half free.
    Scores are multiples of 1/8 and costs small integers, so ties are exact and frequent."""
    rows, r = [], 0
    for inputs in nodes:
        rows.append(list(range(r, r + inputs)))
        r += inputs
    cells = []
    for _ in range(n_cells):
        scores = rng.integers(0, 9, (r, n_ops)) / 8
        scores[:, 0] = -np.inf
        costs = rng.integers(0, 4, (d, r, n_ops)).astype(float)
        free = np.arange(n_ops) % 2 == 1
        cells.append((scores, costs, free, rows))
    return cells


def _brute_force(cells, cap):
    """Every genotype of the space: (scores, costs (n, d)) after the cap, by plain enumeration."""
    per_cell = []
    for scores, costs, free, rows in cells:
        ops = range(1, scores.shape[1])
        options = []
        for choice in itertools.product(*[[(a, b, oa, ob) for a, b in itertools.combinations(range(len(r)), 2)
                                             for oa in ops for ob in ops] for r in rows]):
            edges = [(r[a], oa) for r, (a, b, oa, ob) in zip(rows, choice)] + [(r[b], ob) for r, (a, b, oa, ob) in zip(rows, choice)]
            if cap is not None and sum(free[o] for _, o in edges) > cap:
                continue
            options.append((sum(scores[e, o] for e, o in edges), sum(costs[:, e, o] for e, o in edges)))
        per_cell.append((np.array([s for s, _ in options]), np.array([c for _, c in options])))
    scores, costs = np.zeros(1), np.zeros((1, cells[0][1].shape[0]))
    for s, c in per_cell:  # every combination of the cells' options
        scores = (scores[:, None] + s[None]).ravel()
        costs = (costs[:, None] + c[None]).reshape(len(scores), -1)
    return scores, costs


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    d = 1 + seed % 2
    cells = _reduced_space(rng, 3, (2, 3), 3, d)
    for cap in (None, 0, 1, 2):
        all_scores, all_costs = _brute_force(cells, cap)
        lows, highs = all_costs.min(0), all_costs.max(0)
        for q in (0.0, 0.2, 0.5, 0.8, 1.0):
            limits = np.floor(lows + q * (highs - lows))
            states, _ = solve(cells, cap, limits)
            fits = (all_costs <= limits).all(1)
            assert (states.costs <= limits).all()  # never over budget
            if not fits.any():
                assert len(states.scores) == 0
                continue
            best = all_scores[fits].max()
            assert states.scores.max() == best  # exact: multiples of 1/8 add up exactly
            cheapest_best = all_costs[fits & (all_scores == best), 0].min()
            assert states.costs[states.scores == best, 0].min() == cheapest_best  # ties go to the cheaper
        # without limits, the front holds every unbeaten (cost, score): check the single-metric staircase
        states, _ = solve(cells, cap)
        if d == 1:
            staircase = {(c, all_scores[all_costs[:, 0] <= c].max()) for c in np.unique(all_costs[:, 0])}
            expect = {(c, s) for c, s in staircase if not any(c2 < c and s2 >= s for c2, s2 in staircase)}
            assert set(zip(states.costs[:, 0], states.scores)) == expect


def _first_vertex_in_band(all_scores, all_costs, limit, floor):
    """Brute force: along the upper hull of (cost, score) of what fits, from the best score (the cheaper of ties)
    toward cost, the first vertex costing >= ``floor``; the best score where none does."""
    fits = all_costs[:, 0] <= limit
    top = {}
    for c, s in zip(all_costs[fits, 0], all_scores[fits]):
        top[c] = max(top.get(c, -np.inf), s)
    best = max(top.values())
    start = cur = (min(c for c, s in top.items() if s == best), best)
    while cur[0] < floor:
        right = [(c, s) for c, s in top.items() if c > cur[0]]
        if not right:
            return start
        cur = max(right, key=lambda p: ((p[1] - cur[1]) / (p[0] - cur[0]), p[0]))  # the steepest, the farthest
    return cur


@pytest.mark.parametrize("seed", range(4))
def test_spending_a_budget_walks_to_the_first_hull_vertex_in_the_band(seed):
    rng = np.random.default_rng(100 + seed)
    cells, tilted = _reduced_space(rng, 3, (2, 3), 3, 1), 0
    for cap in (None, 1):
        all_scores, all_costs = _brute_force(cells, cap)
        for q in (0.3, 0.6, 0.9):
            limit = np.floor(all_costs.min() + q * (all_costs.max() - all_costs.min()))
            for band in (0, 2, 5):
                picks, costs, choices = spend(cells, cap, np.array([limit]), np.array([limit - band]))
                cost, score = _first_vertex_in_band(all_scores, all_costs, limit, limit - band)
                assert (costs[0], _score_of(cells, picks, choices)) == (cost, score), (cap, q, band)
                tilted += cost != _first_vertex_in_band(all_scores, all_costs, limit, -np.inf)[0]
    assert tilted >= 4  # (most of these bands are out of the best score's reach: the walk is what is tested)


def _score_of(cells, picks, choices):
    """The score of the choice ``picks`` (one per cell) indexes in ``choices``."""
    total = 0.0
    for (scores, _, _, rows), nodes, pick in zip(cells, choices, picks):
        for (j1, o1, j2, o2), r in zip(nodes[pick], rows):
            total += scores[r[j1], o1] + scores[r[j2], o2]
    return total


def _table(seed, metric="macs", fixed=1000.0):
    """Costs that depend on the edge and the op (stride-2 edges dearer in reduction cells), plus real ties."""
    g = torch.Generator().manual_seed(seed)
    ops = {}
    for kind in CELL_KINDS:
        names = ops_for(kind)
        rows = []
        for r in range(EDGES_PER_CELL):
            base = torch.randint(1, 6, (len(names),), generator=g).tolist()
            rows.append(tuple(0.0 if name in ("zero", "max_pool_1x3x3", "avg_pool_1x3x3") else
                              float(b * (3 if kind.endswith("RC") and r in (0, 1, 2, 3, 5, 6, 9, 10) else 1))
                              for name, b in zip(names, base)))
        ops[kind] = tuple(rows)
    return CostTable(metric, fixed, ops)


def _alphas(seed, ties=False):
    g = torch.Generator().manual_seed(seed)
    alphas = {k: torch.randn(EDGES_PER_CELL, len(ops_for(k)), generator=g) * 2 for k in CELL_KINDS}
    return {k: a.round() for k, a in alphas.items()} if ties else alphas


@pytest.mark.parametrize("seed", range(3))
def test_derive_within_is_never_over_budget_and_beats_every_random_genotype_that_fits(seed):
    alphas, table = _alphas(seed, ties=seed == 2), _table(seed)
    edge_weights = {k: torch.rand(EDGES_PER_CELL, generator=torch.Generator().manual_seed(seed)) for k in CELL_KINDS}
    randoms = [Genotype.random(s) for s in range(300)]
    r_cost = np.array([table.of(r) for r in randoms])
    r_score = np.array([genotype_score(r, alphas, edge_weights) for r in randoms])
    r_free = np.array([max(r.parameter_free_edges().values()) for r in randoms])
    for cap in (None, 3):
        plain = Genotype.derive(alphas, edge_weights=edge_weights, max_param_free=cap)
        low = cheapest([table], cap)["macs"]
        for q in np.linspace(0, 1, 10):
            most = low + q * (table.of(plain) - low)
            got = Genotype.derive(alphas, edge_weights=edge_weights, max_param_free=cap, budget=Budget([(table, most)]))
            got.validate()
            assert table.of(got) <= most
            assert cap is None or max(got.parameter_free_edges().values()) <= cap
            fits = (r_cost <= most) & (r_free <= (8 if cap is None else cap))
            assert (r_score[fits] <= genotype_score(got, alphas, edge_weights) + 1e-9).all()


def test_no_budget_or_a_loose_one_gives_the_paper_rule_exactly():
    for seed in range(4):
        alphas, table = _alphas(seed, ties=seed % 2 == 1), _table(seed)
        for cap in (None, 2, 8):
            plain = Genotype.derive(alphas, max_param_free=cap)
            assert Genotype.derive(alphas, max_param_free=cap, budget=None) == plain
            assert Genotype.derive(alphas, max_param_free=cap, budget=Budget([(table, table.of(plain))])) == plain
            # the front's best score is the paper rule's: the cap's derivation is the knapsack without costs
            found = front(alphas, [table], max_param_free=cap)
            assert found.scores.max() == pytest.approx(genotype_score(plain, alphas), abs=1e-9)
            assert (np.diff(found.costs[:, 0]) > 0).all() and (np.diff(found.scores) > 0).all()


def _one_op_changed(genotype):
    """Every genotype that differs from ``genotype`` in the op of one kept edge."""
    for kind, cell in genotype.cells.items():
        for i, (op, j) in enumerate(cell.edges):
            for other in ops_for(kind)[1:]:
                if other != op:
                    edges = cell.edges[:i] + ((other, j),) + cell.edges[i + 1 :]
                    yield Genotype({**genotype.cells, kind: CellGenotype(edges)}, {})


@pytest.mark.parametrize("cap", [None, 3])
def test_a_budget_to_spend_lands_in_its_band_and_nothing_as_dear_scores_more(cap):
    """A target search's budget (spend 0.95): alphas that favour cheap ops leave the best genotype within the limit
    far under it; the tilted derivation lands in [95%, 100%], and no genotype that fits and costs as much or more
    scores higher (the tilt's optimum: score + tilt x cost beats them all). A band out of reach leaves the best."""
    table, noise = _table(1, fixed=10.0), _alphas(1)
    alphas = {k: noise[k] - 0.5 * torch.tensor(table.ops[k]) for k in CELL_KINDS}
    plain = Genotype.derive(alphas, max_param_free=cap)
    for q in (1.3, 2.5):
        most = q * table.of(plain)
        assert Genotype.derive(alphas, max_param_free=cap, budget=Budget([(table, most)])) == plain  # far under
        got = Genotype.derive(alphas, max_param_free=cap, budget=Budget([(table, most)], spend=0.95))
        assert 0.95 * most <= table.of(got) <= most
        assert cap is None or max(got.parameter_free_edges().values()) <= cap
        dear = [g for g in _one_op_changed(got) if table.of(got) <= table.of(g) <= most
                and (cap is None or max(g.parameter_free_edges().values()) <= cap)]
        assert len(dear) > 10 and all(genotype_score(g, alphas) <= genotype_score(got, alphas) + 1e-9 for g in dear)
    dearest = Genotype.derive({k: 10 * torch.tensor(table.ops[k]) for k in CELL_KINDS})
    out_of_reach = Budget([(table, 2 * table.of(dearest))], spend=0.95)
    assert Genotype.derive(alphas, max_param_free=cap, budget=out_of_reach) == plain
    with pytest.raises(GenotypeError, match="spend must be in"):
        Budget([(table, 100.0)], spend=1.5)


def test_edge_weights_change_the_budgeted_derivation():
    alphas, table = _alphas(0), _table(0)
    # edge weights that favour the last input of every node flip which edges the budget keeps
    weights = {k: torch.tensor([0.1 + j for node in range(2, 6) for j in range(node)], dtype=torch.float) for k in CELL_KINDS}
    low = cheapest([table])["macs"]
    most = low + 0.5 * (table.of(Genotype.derive(alphas)) - low)
    plain = Genotype.derive(alphas, budget=Budget([(table, most)]))
    weighted = Genotype.derive(alphas, edge_weights=weights, budget=Budget([(table, most)]))
    assert plain != weighted
    assert genotype_score(weighted, alphas, weights) >= genotype_score(plain, alphas, weights)


def test_two_limits_at_once():
    alphas, macs, params = _alphas(1), _table(1), _table(2, "params", 50.0)
    plain, randoms = Genotype.derive(alphas), [Genotype.random(s) for s in range(200)]
    for q in (0.3, 0.6):
        lm = cheapest([macs])["macs"] + q * (macs.of(plain) - cheapest([macs])["macs"])
        lp = cheapest([params])["params"] + q * (params.of(plain) - cheapest([params])["params"])
        got = Genotype.derive(alphas, budget=Budget([(macs, lm), (params, lp)]))
        assert macs.of(got) <= lm and params.of(got) <= lp
        score = genotype_score(got, alphas)
        for r in randoms:
            if macs.of(r) <= lm and params.of(r) <= lp:
                assert genotype_score(r, alphas) <= score + 1e-9


def test_an_infeasible_budget_names_the_cheapest_reachable_cost():
    alphas, table = _alphas(0), _table(0)
    for cap in (None, 0):
        low = cheapest([table], cap)["macs"]
        assert table.of(Genotype.derive(alphas, max_param_free=cap, budget=Budget([(table, low)]))) == low  # reachable
        with pytest.raises(BudgetError, match=f"cheapest reachable network.* costs {low / 1e9:.6g} GFLOPs") as info:
            Genotype.derive(alphas, max_param_free=cap, budget=Budget([(table, low - 1)]))
        assert info.value.cheapest == {"macs": low}
    assert cheapest([table], 0)["macs"] > cheapest([table])["macs"]  # the cap forbids the free cheap ops


def test_cost_table_checks_and_round_trip(tmp_path):
    table = _table(3)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table.to_dict()))
    assert CostTable.load(path) == CostTable(table.metric, table.fixed, table.ops, {})
    bad = table.to_dict()
    bad["ops"]["S-NC"] = bad["ops"]["S-NC"][:3]
    path.write_text(json.dumps(bad))
    with pytest.raises(GenotypeError, match="cell S-NC needs 14 rows of 6 costs"):
        CostTable.load(path)
    with pytest.raises(GenotypeError, match="cost table not found"):
        CostTable.load(tmp_path / "none.json")
