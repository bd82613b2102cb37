"""``pvnas pareto`` (exact budgeted derivations at a sweep of budgets) and ``pvnas latency`` (a measured ms table)."""

import json

import pytest
import torch
import yaml

from pvnas.cli import main
from pvnas.config import NETWORK_PRESETS
from pvnas.metrics.cost import network_costs
from pvnas.space.budget import CostTable, genotype_score
from pvnas.space.genotype import EDGES_PER_CELL, Genotype
from pvnas.space.ops import CELL_KINDS, ops_for


@pytest.fixture()
def search_run(tmp_path):
    run = tmp_path / "search"
    (run / "alphas").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    alphas = {k: torch.randn(EDGES_PER_CELL, len(ops_for(k)), generator=g) for k in CELL_KINDS}
    torch.save(alphas, run / "alphas" / "epoch_001.pt")
    torch.save({k: torch.rand(EDGES_PER_CELL, generator=g) for k in CELL_KINDS}, run / "alphas" / "edges_001.pt")
    (run / "config.yaml").write_text(yaml.safe_dump({"search": {"max_param_free": 4}}))
    return run


def test_pareto_sweeps_exact_budgets_from_the_cheapest_to_the_unconstrained(search_run, capsys):
    assert main(["pareto", str(search_run), "--preset", "demo", "--points", "10"]) == 0
    assert capsys.readouterr().out.split() == [str(search_run / f) for f in ("pareto.json", "pareto.md", "pareto.png")]
    data = json.loads((search_run / "pareto.json").read_text())
    macs, params = network_costs(NETWORK_PRESETS["demo"], 400, 4, 32)
    alphas = torch.load(search_run / "alphas" / "epoch_001.pt")
    edges = torch.load(search_run / "alphas" / "edges_001.pt")
    points = data["points"]
    assert len(points) == 10 and data["network"]["input"] == [3, 4, 32, 32] and data["max_param_free"] == 4
    for p in points:
        genotype = Genotype.from_dict(p["genotype"])
        assert macs.of(genotype) == round(p["gflops"] * 1e9) <= p["budget_gflops"] * 1e9 * (1 + 1e-12)
        assert params.of(genotype) == p["params"] and max(p["parameter_free"].values()) <= 4
        assert p["score"] == pytest.approx(genotype_score(genotype, alphas, edges))
    assert [p["score"] for p in points] == sorted(p["score"] for p in points)
    assert points[0]["gflops"] == pytest.approx(min(f["cost"] for f in data["front"]))  # the cheapest reachable
    plain = Genotype.derive(alphas, edge_weights=edges, max_param_free=4)
    assert Genotype.from_dict(points[-1]["genotype"]).cells == plain.cells  # the top of the sweep: today's genotype
    assert len({json.dumps(p["genotype"]["cells"]) for p in points}) >= 6
    assert data["paper_L"] is None  # only marked at the paper's L input
    assert "| budget (gflops) |" in (search_run / "pareto.md").read_text()
    shown = search_run.parent / "shown"  # the report of a folder holding the front (alpha plots left out: slow)
    shown.mkdir()
    for name in ("config.yaml", "pareto.json", "pareto.png"):
        (shown / name).write_bytes((search_run / name).read_bytes())
    assert main(["report", str(shown)]) == 0
    html = (shown / "report.html").read_text()
    assert "Pareto front" in html and f"{points[0]['params']:,}" in html and "data:image/png;base64" in html


def test_pareto_bad_arguments(search_run, capsys):
    assert main(["pareto", str(search_run), "--preset", "demo", "--metric", "ms"]) == 2
    assert "--metric must be one of gflops, params" in capsys.readouterr().err
    assert main(["pareto", str(search_run), "--preset", "demo", "--epoch", "7"]) == 2
    assert "--epoch 7" in capsys.readouterr().err


def test_latency_table_records_how_it_was_measured_and_checks_its_sum(tmp_path, capsys):
    out = tmp_path / "lat.json"
    assert main(["latency", "--preset", "tiny", "--threads", "1", "--warmup", "0", "--runs", "1", "--check", "2",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| random 3 |" in printed and "| random 4 |" in printed and str(out) in printed
    table = CostTable.load(out)
    meta = table.meta
    assert table.metric == "ms" and meta["device"] == "cpu" and meta["threads"] == 1 and meta["batch"] == 1
    assert meta["dtype"] == "float32" and meta["warmup"] == 0 and meta["runs"] == 1 and meta["input"] == [3, 4, 32, 32]
    assert [c["seed"] for c in meta["check"]] == [3, 4]
    for c in meta["check"]:  # the table's sum, as stored, is what the check compared
        assert c["table_ms"] == pytest.approx(table.of(Genotype.random(c["seed"])))
        assert c["error"] == pytest.approx((c["table_ms"] - c["measured_ms"]) / c["measured_ms"])
    # the table is the sum of its positions; every op was timed at every position of its kind
    for kind in CELL_KINDS:
        positions = [p for p in meta["positions"] if p["kind"] == kind]
        assert len(positions) == 1  # tiny: Fig. 5b's four cells
        for r in range(EDGES_PER_CELL):
            assert list(table.ops[kind][r]) == pytest.approx(positions[0]["ms"][r])
            assert all(v > 0 for v in positions[0]["ms"][r][1:] if kind[0] == "T")


def test_latency_bad_arguments(capsys):
    assert main(["latency", "--preset", "tiny", "--device", "tpu"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["latency", "--preset", "tiny", "--dtype", "int8"]) == 2
    assert "--dtype must be one of float32, bfloat16, float16" in capsys.readouterr().err
