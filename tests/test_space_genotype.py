"""Genotype JSON (docs/design.md §3): round trip, every validation rule, derivation, random sampling."""

import copy
import json

import pytest
import torch

from pvnas.errors import GenotypeError
from pvnas.space.genotype import EDGES_PER_CELL, FORMAT, Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, CONV_OPS, PARAMETER_FREE, SPATIAL_OPS, TEMPORAL_OPS, ops_for


def valid_dict():
    spatial = [["sep_conv_1x3x3", 0], ["dil_conv_1x3x3", 1], ["identity", 0], ["sep_conv_1x3x3", 2],
               ["avg_pool_1x3x3", 1], ["max_pool_1x3x3", 3], ["sep_conv_1x3x3", 0], ["dil_conv_1x3x3", 4]]
    temporal = [["conv_3x3x3", 0], ["conv_3x1x1", 1], ["identity", 0], ["sep_conv_1x3x3", 2],
                ["conv_3x3x3", 1], ["max_pool_1x3x3", 3], ["sep_conv_1x3x3", 0], ["conv_3x1x1", 4]]
    cells = {k: {"edges": copy.deepcopy(spatial if k.startswith("S") else temporal), "concat": [2, 3, 4, 5]}
             for k in CELL_KINDS}
    return {"format": FORMAT, "cells": cells, "meta": {"source": "test"}}


def test_round_trip(tmp_path):
    g = Genotype.from_dict(valid_dict())
    g.save(tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert data == valid_dict()
    assert Genotype.load(tmp_path / "g.json") == g


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.update(format="other/1"), "field 'format' must be 'pvnas-genotype/1'"),
        (lambda d: d.update(cells=[]), "field 'cells' must be an object"),
        (lambda d: d["cells"].pop("T-RC"), "missing cell 'T-RC'"),
        (lambda d: d["cells"].update({"X-NC": d["cells"]["S-NC"]}), "unknown cell kind 'X-NC'"),
        (lambda d: d["cells"]["S-NC"]["edges"].pop(), "cell S-NC: expected 8 edges"),
        (lambda d: d["cells"]["S-RC"]["edges"].__setitem__(3, ["conv_7x7", 1]), "cell S-RC, edge 3 .*unknown op 'conv_7x7'"),
        (lambda d: d["cells"]["T-NC"]["edges"].__setitem__(5, ["zero", 1]), "cell T-NC, edge 5 .*'zero' is not allowed"),
        (lambda d: d["cells"]["S-NC"]["edges"].__setitem__(0, ["conv_3x3x3", 0]), "cell S-NC, edge 0 .*temporal op 'conv_3x3x3' in spatial cell"),
        (lambda d: d["cells"]["S-RC"]["edges"].__setitem__(1, ["conv_3x1x1", 1]), "cell S-RC, edge 1 .*temporal op 'conv_3x1x1'"),
        (lambda d: d["cells"]["T-RC"]["edges"].__setitem__(2, ["identity", 3]), "cell T-RC, edge 2 \\(node 3\\): input node 3 must be an earlier node"),
        (lambda d: d["cells"]["T-RC"]["edges"].__setitem__(6, ["identity", -1]), "cell T-RC, edge 6 \\(node 5\\): input node -1"),
        (lambda d: d["cells"]["S-NC"]["edges"].__setitem__(7, ["identity", 0]), "cell S-NC, edge 7 \\(node 5\\): duplicate input node 0"),
        (lambda d: d["cells"]["S-NC"]["edges"].__setitem__(2, ["identity"]), "cell S-NC, edge 2: expected \\[op_name, input_node\\]"),
        (lambda d: d["cells"]["S-NC"]["edges"].__setitem__(2, ["identity", "0"]), "cell S-NC, edge 2: expected"),
        (lambda d: d["cells"]["S-NC"].update(concat=[2, 3]), "cell S-NC: 'concat' must be \\[2, 3, 4, 5\\]"),
        (lambda d: d.update(meta=[]), "field 'meta' must be an object"),
    ],
)
def test_each_validation_rule_has_its_message(mutate, message):
    d = valid_dict()
    mutate(d)
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(d, source="g.json")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(GenotypeError, match="nope.json: genotype file not found"):
        Genotype.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="bad.json: not valid JSON \\(line 1"):
        Genotype.load(bad)


def alphas_with(best: dict, rest: float = 0.0) -> dict:
    """Alphas where ``best[(kind, edge)] = {op: logit}`` and every other logit is ``rest``."""
    out = {}
    for kind in CELL_KINDS:
        a = torch.full((EDGES_PER_CELL, len(ops_for(kind))), rest)
        for (k, e), logits in best.items():
            if k == kind:
                for op, v in logits.items():
                    a[e, ops_for(kind).index(op)] = v
        out[kind] = a
    return out


def test_edge_order_is_darts_order():
    assert edge_inputs()[:5] == [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert len(edge_inputs()) == 14 and edge_inputs()[-1] == (5, 4)


def test_derive_known_answer_with_zero_largest():
    # node 2 = edges 0,1; node 3 = edges 2,3,4; node 4 = 5..8; node 5 = 9..13
    best = {
        ("S-NC", 0): {"zero": 9.0, "sep_conv_1x3x3": 3.0},  # zero dominates but never chosen
        ("S-NC", 1): {"dil_conv_1x3x3": 2.0},
        ("S-NC", 2): {"zero": 8.0, "identity": 0.5},  # weak non-zero score despite huge zero
        ("S-NC", 3): {"max_pool_1x3x3": 4.0},
        ("S-NC", 4): {"avg_pool_1x3x3": 3.5},
        ("S-NC", 6): {"sep_conv_1x3x3": 5.0},
        ("S-NC", 8): {"identity": 5.0},
        ("S-NC", 12): {"dil_conv_1x3x3": 5.0},
        ("S-NC", 9): {"sep_conv_1x3x3": 4.0},
        ("T-NC", 0): {"conv_3x1x1": 2.0},
        ("T-NC", 1): {"conv_3x3x3": 2.0},
    }
    g = Genotype.derive(alphas_with(best))
    g.validate()
    assert g.cells["S-NC"].edges == (
        ("sep_conv_1x3x3", 0), ("dil_conv_1x3x3", 1),
        ("max_pool_1x3x3", 1), ("avg_pool_1x3x3", 2),
        ("sep_conv_1x3x3", 1), ("identity", 3),
        ("sep_conv_1x3x3", 0), ("dil_conv_1x3x3", 3),
    )
    assert g.cells["T-NC"].edges[:2] == (("conv_3x1x1", 0), ("conv_3x3x3", 1))
    for cell in g.cells.values():
        assert all(op != "zero" for op, _ in cell.edges)


def test_derive_uses_softmax_score_not_raw_logit():
    # edge 0: logits (5 for sep, 5 for dil) -> each ~0.5 weight; edge 1: sep 4 alone -> ~0.9 weight.
    a = alphas_with({("S-NC", 0): {"sep_conv_1x3x3": 5.0, "dil_conv_1x3x3": 5.0}, ("S-NC", 1): {"sep_conv_1x3x3": 4.0}})
    a["S-NC"][2, :] = 0  # node 3: edges 2, 3, 4
    a["S-NC"][2, SPATIAL_OPS.index("sep_conv_1x3x3")] = 4.5
    a["S-NC"][3, SPATIAL_OPS.index("sep_conv_1x3x3")] = 5.0
    a["S-NC"][3, SPATIAL_OPS.index("dil_conv_1x3x3")] = 5.0
    a["S-NC"][4, SPATIAL_OPS.index("identity")] = 4.0
    g = Genotype.derive(a)
    assert [j for _, j in g.cells["S-NC"].edges[2:4]] == [0, 2]


def test_derive_rejects_wrong_shape():
    a = alphas_with({})
    a["T-RC"] = torch.zeros(14, 6)
    with pytest.raises(GenotypeError, match="cell T-RC needs a float tensor of shape \\(14, 8\\), got \\(14, 6\\)"):
        Genotype.derive(a)


def _cell_score(alphas, kind, cell, edge_weights=None):
    weights = torch.softmax(alphas[kind], -1).double()
    if edge_weights is not None:
        weights = weights * edge_weights[kind].double()[:, None]
    rows = {pair: r for r, pair in enumerate(edge_inputs())}
    return sum(float(weights[rows[(2 + e // 2, j)], ops_for(kind).index(op)]) for e, (op, j) in enumerate(cell.edges))


def _best_within_cap(alphas, kind, cap, edge_weights=None):
    """Brute force over every pair of inputs and ops of each node, combined over the nodes by parameter-free count:
    the best total score within the cap."""
    weights = torch.softmax(alphas[kind], -1).double()
    if edge_weights is not None:
        weights = weights * edge_weights[kind].double()[:, None]
    ops = ops_for(kind)
    best_per_node = []
    for node in range(2, 6):
        rows = [r for r, (n, _) in enumerate(edge_inputs()) if n == node]
        options = {}  # parameter-free count -> best score of this node
        for a in range(node):
            for b in range(a + 1, node):
                for oa in range(1, len(ops)):
                    for ob in range(1, len(ops)):
                        free = (ops[oa] in PARAMETER_FREE) + (ops[ob] in PARAMETER_FREE)
                        score = float(weights[rows[a], oa] + weights[rows[b], ob])
                        options[free] = max(options.get(free, -1.0), score)
        best_per_node.append(options)
    totals = {0: 0.0}
    for options in best_per_node:
        totals = {n + f: max(t + s for (n2, t) in totals.items() for (f2, s) in options.items() if n2 + f2 == n + f)
                  for n in totals for f in options}
    return max(t for n, t in totals.items() if n <= cap)


@pytest.mark.parametrize("seed", range(4))
def test_derive_max_param_free_is_the_best_cell_within_the_cap(seed):
    torch.manual_seed(seed)
    alphas = {k: torch.randn(EDGES_PER_CELL, len(ops_for(k))) for k in CELL_KINDS}
    for k in CELL_KINDS:  # parameter-free ops lead, so that the paper's rule exceeds the cap
        for o, name in enumerate(ops_for(k)):
            if name in PARAMETER_FREE:
                alphas[k][:, o] += 2.0
    free = Genotype.derive(alphas)
    for cap in (0, 2, 4):
        capped = Genotype.derive(alphas, max_param_free=cap)
        capped.validate()
        for kind in CELL_KINDS:
            cell = capped.cells[kind]
            assert cell.count(PARAMETER_FREE) <= cap
            if free.cells[kind].count(PARAMETER_FREE) <= cap:  # within the cap: the paper's rule unchanged
                assert cell == free.cells[kind]
            else:
                assert _cell_score(alphas, kind, cell) == pytest.approx(_best_within_cap(alphas, kind, cap), abs=1e-5)
    assert Genotype.derive(alphas, max_param_free=8) == free


@pytest.mark.parametrize("seed", range(6))
def test_derive_max_param_free_with_edge_weights_and_ties(seed):
    """Random weights (no op family leads everywhere), integer logits (equal weights: real ties), and PC-DARTS edge
    weights, which rank edges and so must rank them in the capped derivation too."""
    g = torch.Generator().manual_seed(seed)
    alphas = {k: (torch.randn(EDGES_PER_CELL, len(ops_for(k)), generator=g) * 1.5).round() for k in CELL_KINDS}
    edge_weights = {k: torch.rand(EDGES_PER_CELL, generator=g) for k in CELL_KINDS}
    free = Genotype.derive(alphas, edge_weights=edge_weights)
    binding = below = 0
    for cap in range(0, 9):
        capped = Genotype.derive(alphas, edge_weights=edge_weights, max_param_free=cap)
        capped.validate()
        for kind in CELL_KINDS:
            cell = capped.cells[kind]
            assert cell.count(PARAMETER_FREE) <= cap
            if free.cells[kind].count(PARAMETER_FREE) <= cap:
                assert cell == free.cells[kind]
            else:
                binding += 1
                below += cell.count(PARAMETER_FREE) < cap  # the best cell within the cap need not sit at the cap
                best = _best_within_cap(alphas, kind, cap, edge_weights)
                assert _cell_score(alphas, kind, cell, edge_weights) == pytest.approx(best, abs=1e-6)
    assert binding >= 4 and below >= 1  # the cap decided some cells, and some best cells have fewer than the cap


def test_derive_max_param_free_known_answer():
    # node 2: identity on both inputs leads; second best on edge 0 is dil_conv, on edge 1 sep_conv
    a = alphas_with({("S-NC", 0): {"identity": 6.0, "dil_conv_1x3x3": 4.0},
                     ("S-NC", 1): {"identity": 6.0, "sep_conv_1x3x3": 5.0}})
    assert Genotype.derive(a).cells["S-NC"].edges[:2] == (("identity", 0), ("identity", 1))
    one = Genotype.derive(a, max_param_free=1).cells["S-NC"]
    # every other op ties, so node 2 decides: identity(0) + sep(1) scores 0.87 + 0.27, dil(0) + identity(1) 0.12 + 0.73
    assert one.count(PARAMETER_FREE) <= 1
    assert one.edges[:2] == (("identity", 0), ("sep_conv_1x3x3", 1))
    with pytest.raises(GenotypeError, match="max_param_free must be in 0..8"):
        Genotype.derive(a, max_param_free=9)


@pytest.mark.parametrize("seed", range(20))
def test_random_respects_rules_and_min_conv(seed):
    g = Genotype.random(seed, min_conv=4)
    g.validate()
    for kind, cell in g.cells.items():
        assert cell.count(CONV_OPS) >= 4
        allowed = set(ops_for(kind)) - {"zero"}
        assert {op for op, _ in cell.edges} <= allowed
    assert Genotype.random(seed, min_conv=4) == g


def test_random_covers_the_space():
    ops = {op for s in range(50) for c in Genotype.random(s).cells.values() for op, _ in c.edges}
    assert ops == set(TEMPORAL_OPS) - {"zero"}


def test_random_min_conv_bounds():
    with pytest.raises(GenotypeError, match="min_conv must be in 0..8"):
        Genotype.random(0, min_conv=9)
    g = Genotype.random(0, min_conv=8)
    assert all(c.count(CONV_OPS) == 8 for c in g.cells.values())


def test_parameter_free_share():
    g = Genotype.from_dict(valid_dict())
    assert g.parameter_free_share()["S-NC"] == pytest.approx(3 / 8)
