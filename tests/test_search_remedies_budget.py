"""A search that aims at a budget (--target-gflops/--target-params/--target-ms) and derive within one (--max-*)."""

import json

import pytest
import torch

from pvnas.cli import main
from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, override
from pvnas.metrics.cost import network_costs
from pvnas.nn.supernet import Supernet
from pvnas.search.remedies import REMEDIES, remedies_of
from pvnas.search.remedies.budget import BAND, budget_network
from pvnas.space.budget import CostTable
from pvnas.space.genotype import NODES, Budget, Genotype
from pvnas.space.ops import CELL_KINDS, ops_for

TINY = override(SEARCH_PRESETS["tiny"], channels=4)
MACS, PARAMS = network_costs(NETWORK_PRESETS["tiny"], 400, 4, 32)


def target(cfg, **values):
    (remedy,) = remedies_of(override(cfg, remedies={**cfg.remedies, **values}))
    return remedy


@pytest.fixture(scope="module")
def target_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("budget") / "run"
    assert main(["search", "--data", "synthetic:8", "--preset", "tiny", "--channels", "4", "--epochs", "2",
                 "--target-gflops", "0.0035", "--out", str(run)]) == 0
    return run


def test_a_target_search_derives_within_the_budget_and_logs_its_costs(target_run, capsys):
    genotype = Genotype.load(target_run / "genotype.json")
    assert 0.95 * 0.0035e9 <= MACS.of(genotype) <= 0.0035e9  # within the target, and spending it
    assert genotype.meta["budget"] == {"max_macs": 0.0035e9, "network": "tiny C=8 K=1 4x32x32 400 classes", "spend": 0.95}
    assert type(Genotype.derive(torch.load(target_run / "alphas" / "epoch_002.pt"), {"budget": Budget([(MACS, 1e9)])})
                .meta["budget"]) is dict  # plain data: YAML and JSON write it
    records = [json.loads(line) for line in (target_run / "metrics.jsonl").read_text().splitlines()]
    for r in records:  # beside the entropy, every epoch
        assert r["target_gflops"] == 0.0035 and "entropy_drop" in r and r["expected_gflops"] > 0
        assert 0.95 * 0.0035e9 <= MACS.of(Genotype.from_dict(r["genotype"])) <= 0.0035e9
    plain = Genotype.derive(torch.load(target_run / "alphas" / "epoch_002.pt"))
    assert records[-1]["derived_gflops"] == pytest.approx(MACS.of(plain) / 1e9)
    # derive reproduces the run's genotype (its targets are the default budget); --max-* replace them
    capsys.readouterr()
    assert main(["derive", str(target_run), "--epoch", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["meta"]["budget"] == genotype.meta["budget"]
    assert first["cells"] == records[0]["genotype"]["cells"]
    assert main(["derive", str(target_run)]) == 0
    assert json.loads(capsys.readouterr().out)["cells"] == genotype.to_dict()["cells"]
    assert main(["derive", str(target_run), "--max-gflops", "0.003", "--max-params", "60000", "-o",
                 str(target_run / "g.json")]) == 0
    derived = Genotype.load(target_run / "g.json")
    assert MACS.of(derived) <= 0.003e9 and PARAMS.of(derived) <= 60000
    assert derived.meta["budget"]["max_params"] == 60000
    assert main(["report", str(target_run)]) == 0
    assert "expected gflops" in (target_run / "report.html").read_text()


def test_derive_budget_errors_are_one_line(target_run, capsys):
    assert main(["derive", str(target_run), "--max-gflops", "0.0001"]) == 2
    err = capsys.readouterr().err
    assert "no genotype fits 0.0001 GFLOPs: the cheapest reachable network costs 0.00250061 GFLOPs" in err
    assert main(["derive", str(target_run), "--max-ms", "3"]) == 2
    assert "--max-ms and --latency go together" in capsys.readouterr().err
    assert main(["derive", str(target_run), "--max-gflops", "1", "--preset", "XL"]) == 2
    assert "unknown preset 'XL'" in capsys.readouterr().err
    assert main(["search", "--data", "synthetic:8", "--preset", "tiny", "--target-gflops", "-1",
                 "--out", str(target_run.parent / "bad")]) == 2
    assert "target_gflops (--target-gflops) must be > 0, got -1.0" in capsys.readouterr().err
    assert main(["search", "--data", "synthetic:8", "--preset", "tiny", "--target-gflops", "0.001",
                 "--out", str(target_run.parent / "bad")]) == 2
    assert "below the cheapest network the search could derive (0.00250061 gflops" in capsys.readouterr().err


def test_expected_cost_is_the_mean_op_cost_times_the_chance_an_edge_is_kept():
    model = Supernet(4, 5)
    remedy = target(TINY, target_gflops=0.003)
    with torch.no_grad():
        for a in model.alphas.values():
            a.zero_()  # every non-zero op alike
        expected = float(remedy.expected(model))
    keep = [2 / node for node in range(2, 2 + NODES) for _ in range(node)]
    by_hand = MACS.fixed + sum(keep[r] * sum(MACS.ops[k][r][1:]) / (len(ops_for(k)) - 1)
                               for k in CELL_KINDS for r in range(len(keep)))
    assert expected == pytest.approx(by_hand, rel=1e-6)  # float32 sums
    normed = Supernet(4, 5, edge_norm=True)  # PC-DARTS: twice the edge weight is the chance to be kept
    with torch.no_grad():
        for a in normed.alphas.values():
            a.zero_()
        for b in normed.betas.values():
            b.normal_()
        weights = {k: normed.edge_weights(k) for k in CELL_KINDS}
        by_hand = MACS.fixed + sum(2 * float(weights[k][r]) * sum(MACS.ops[k][r][1:]) / (len(ops_for(k)) - 1)
                                   for k in CELL_KINDS for r in range(len(keep)))
        assert float(remedy.expected(normed)) == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("where, sign", [("above", 1), ("band", 0), ("below", -1)])
def test_the_term_pushes_the_expected_cost_by_where_the_derived_genotype_stands(where, sign):
    model = Supernet(4, 5)
    with torch.no_grad():
        for a in model.alphas.values():
            a.normal_()
    cost = MACS.of(Genotype.derive(model.alpha_dict())) / 1e9
    value = {"above": cost / 1.5, "band": cost / (1 - BAND / 2), "below": cost * 1.5}[where]
    remedy = target(TINY, target_gflops=value)
    term = remedy.alpha_loss(model, 0.5)
    if sign == 0:
        assert term is None
        return
    before = remedy.expected(model).detach().item()
    optimiser = torch.optim.SGD(list(model.alphas.values()), lr=50.0)
    term.backward()
    optimiser.step()
    assert sign * (remedy.expected(model).detach().item() - before) < 0  # above: cheaper; below: dearer


def test_the_budget_network_of_a_search_is_its_preset_retrain_network():
    assert budget_network(SEARCH_PRESETS["demo"])[0] == "demo"
    assert budget_network(TINY)[0] == "tiny"  # channels are the retrain preset's, whatever the search's
    assert budget_network(SEARCH_PRESETS["search"])[0] == "L"


def test_target_ms_reads_a_latency_table(tmp_path, capsys):
    table = CostTable("ms", 2.0, {k: tuple(tuple(float(o) for o in range(len(ops_for(k)))) for _ in range(14))
                                  for k in CELL_KINDS}, {"device_name": "test", "batch": 1})
    path = tmp_path / "lat.json"
    path.write_text(json.dumps(table.to_dict()))
    remedy = target(TINY, target_ms=f"40:{path}")  # the cheapest genotype: 2 + 32 identities x 1 = 34 ms
    assert remedy.limit() == 40 and remedy.table() == CostTable.load(path)
    assert remedy.derive_options()["budget"]["max_ms"] == 40
    assert "target_ms" in REMEDIES and REMEDIES["target_ms"].type is str
    with pytest.raises(Exception, match="MS:TABLE"):
        target(TINY, target_ms="fast")
    run = tmp_path / "run"
    assert main(["search", "--data", "synthetic:8", "--preset", "tiny", "--channels", "4", "--epochs", "1",
                 "--target-ms", f"45:{path}", "--out", str(run)]) == 0
    assert table.of(Genotype.load(run / "genotype.json")) <= 45
    assert main(["derive", str(run), "--max-ms", "36", "--latency", str(path), "-o", str(tmp_path / "g.json")]) == 0
    assert table.of(Genotype.load(tmp_path / "g.json")) <= 36
    capsys.readouterr()
    assert main(["search", "--data", "synthetic:8", "--preset", "tiny", "--target-ms", f"30:{path}",
                 "--out", str(tmp_path / "never")]) == 2  # refused before anything runs
    assert "--target-ms 30:" in capsys.readouterr().err and not (tmp_path / "never").exists()
