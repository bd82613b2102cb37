"""Plots and the HTML report from a tiny run's files; the collapse guard on hand-made alphas."""

import base64
import json
import logging
import shutil

import pytest
import torch
import yaml

from pvnas.cli import main
from pvnas.config import NETWORK_PRESETS, override
from pvnas.metrics.flops import count_flops
from pvnas.nn.network import network_from_config
from pvnas.retrain.modelfile import load_model
from pvnas.retrain.train import run_train
from pvnas.search.collapse import alpha_entropy, collapse_stats, warn_if_collapsed
from pvnas.space.genotype import EDGES_PER_CELL, Genotype
from pvnas.space.ops import CELL_KINDS, ops_for
from pvnas.viz.report import build_report, search_verdict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_search_run):
    run = tmp_path_factory.mktemp("viz") / "run"
    shutil.copytree(tiny_search_run, run)  # plots, the report and an eval file are written into it
    (run / "eval_val.json").write_text(json.dumps(
        {"top1": 0.5, "top5": 1.0, "videos": 8, "skipped": 0, "views": "2x3",
         "by_views": {"1x1": {"top1": 0.25, "top5": 0.75}, "2x1": {"top1": 0.375, "top5": 1.0},
                      "2x3": {"top1": 0.5, "top5": 1.0}}}))
    return run


def test_plot_command_writes_valid_pngs(tiny_run, capsys):
    assert main(["plot", str(tiny_run)]) == 0
    printed = capsys.readouterr().out.split()
    names = {p.rsplit("/", 1)[-1] for p in printed}
    expected = {f"alphas_{k}.png" for k in CELL_KINDS} | {"alphas_final.png", "cells.png", "curves.png",
                                                          "collapse.png", "views.png"}
    assert expected <= names
    for name in expected:
        data = (tiny_run / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


@pytest.fixture(scope="module")
def report_page(tiny_run) -> str:
    """`pvnas report` of the tiny run, once for the tests that read it (~3 s a report)."""
    assert main(["report", str(tiny_run)]) == 0
    return (tiny_run / "report.html").read_text()


def test_report_is_self_contained_html_with_genotype(tiny_run, report_page):
    page = report_page
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    genotype = Genotype.load(tiny_run / "genotype.json")
    for line in genotype.describe().splitlines():
        assert line.split(": ", 1)[1].replace("<", "&lt;") in page
    images = page.count('src="data:image/png;base64,')
    assert images >= 8
    first = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(first).startswith(PNG_MAGIC)
    assert "src=\"http" not in page and "<link" not in page  # nothing external
    # the search's per-epoch alpha entropy drop per cell kind, as logged in metrics.jsonl
    record = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "<th>drop T-RC</th>" in page and f"<td>{record['entropy_drop']['T-RC']:.3f}</td>" in page


def test_plot_and_report_reject_missing_run(tmp_path):
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert main(["report", str(tmp_path)]) == 2


def dominated_alphas(winners: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for kind in CELL_KINDS:
        a = torch.zeros(EDGES_PER_CELL, len(ops_for(kind)))
        a[:, ops_for(kind).index(winners[kind])] = 5.0
        out[kind] = a
    return out


def test_collapse_guard_fires_on_parameter_free_cells(caplog):
    alphas = dominated_alphas({"S-NC": "identity", "S-RC": "max_pool_1x3x3", "T-NC": "avg_pool_1x3x3",
                               "T-RC": "sep_conv_1x3x3"})
    with caplog.at_level(logging.WARNING):
        cells = warn_if_collapsed(Genotype.derive(alphas), epoch=7, schedule="cosine")
    assert cells == ["S-NC", "S-RC", "T-NC"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "cell S-NC" in messages[0] and "100% parameter-free" in messages[0] and "--schedule converge" in messages[0]
    stats = collapse_stats(alphas)
    assert stats["param_free_share"] == {"S-NC": 1.0, "S-RC": 1.0, "T-NC": 1.0, "T-RC": 0.0}


def test_collapse_guard_silent_on_conv_dominated_cells(caplog):
    alphas = dominated_alphas({"S-NC": "sep_conv_1x3x3", "S-RC": "dil_conv_1x3x3", "T-NC": "conv_3x3x3",
                               "T-RC": "conv_3x1x1"})
    with caplog.at_level(logging.WARNING):
        assert warn_if_collapsed(Genotype.derive(alphas), epoch=7, schedule="step") == []
    assert not caplog.records


def test_collapse_guard_ignores_zero_dominance():
    """`zero` never enters a derivation, so a zero-heavy cell is judged by its best non-zero ops."""
    alphas = dominated_alphas({k: "zero" for k in CELL_KINDS})
    for kind in CELL_KINDS:
        alphas[kind][:, ops_for(kind).index("sep_conv_1x3x3")] = 1.0
    assert collapse_stats(alphas)["param_free_share"] == {k: 0.0 for k in CELL_KINDS}


def test_entropy_is_max_for_uniform_and_low_for_decided():
    uniform = {k: torch.zeros(14, len(ops_for(k))) for k in CELL_KINDS}
    ent = alpha_entropy(uniform)
    assert ent["S-NC"] == pytest.approx(torch.log(torch.tensor(6.0)).item())
    assert ent["T-NC"] == pytest.approx(torch.log(torch.tensor(8.0)).item())
    decided = alpha_entropy(dominated_alphas({k: "identity" for k in CELL_KINDS}))
    assert all(v < 0.3 for v in decided.values())  # vs ln 6 = 1.79 and ln 8 = 2.08 undecided


def search_records(drops: list[dict[str, float]], collapsed: list[list[str]], genotypes: list[str]) -> list[dict]:
    return [{"epoch": i + 1, "entropy_drop": d, "collapsed": c, "genotype": g}
            for i, (d, c, g) in enumerate(zip(drops, collapsed, genotypes))]


def test_search_verdict_says_whether_the_alphas_moved_and_collapsed():
    still = {k: 1e-4 for k in CELL_KINDS}  # the "entropy drop 0.000 after one epoch"
    verdict = search_verdict(search_records([still], [[]], ["g"]))
    assert verdict["undecided"] == list(CELL_KINDS) and "barely moved" in verdict["text"]
    moved = {k: 0.2 for k in CELL_KINDS}
    verdict = search_verdict(search_records([still, moved, moved], [[], [], ["S-NC"]], ["a", "b", "b"]))
    assert verdict["undecided"] == [] and verdict["collapsed"] == ["S-NC"] and verdict["settled_at"] == 2
    assert "moved in every cell" in verdict["text"] and "Collapse: S-NC" in verdict["text"]
    # 1% of ln(#ops): 0.0208 nats for the 8 ops of a temporal cell, 0.0179 for the 6 of a spatial one
    mixed = {"S-NC": 0.019, "S-RC": 0.019, "T-NC": 0.019, "T-RC": 0.5}
    assert search_verdict(search_records([mixed], [[]], ["g"]))["undecided"] == ["T-NC"]


def test_report_shows_the_search_verdict_and_the_derived_networks_cost(tiny_run, report_page):
    page = report_page
    assert "<h3>Verdict</h3>" in page and "The alphas" in page
    classes = yaml.safe_load((tiny_run / "config.yaml").read_text())["classes"]
    model = network_from_config(Genotype.load(tiny_run / "genotype.json"), NETWORK_PRESETS["tiny"], len(classes))
    clip = NETWORK_PRESETS["tiny"].clip
    cost = count_flops(model, (3, clip.frames, clip.crop, clip.crop))
    assert f"<td>{cost['params']}</td>" in page and f"<td>{cost['gmacs']:.4g}</td>" in page
    assert "GMACs per view" in page


def test_a_train_report_shows_cost_diagnosis_and_per_class_accuracy(tmp_path):
    run = tmp_path / "train"
    cfg = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, epochs=1, seed=1)
    run_train(Genotype.random(1, min_conv=4), cfg, "synthetic:16", run)
    page = build_report(run).read_text()
    trained = load_model(run / "model.pt")
    cost = count_flops(trained.model, (3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop))
    assert f"<td>{cost['params']}</td>" in page and "GMACs per view" in page
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "<h3>Diagnosis</h3>" in page and ("learned" if last["diagnosis"]["learned"] else "did not learn") in page
    assert "<h3>Per-class accuracy</h3>" in page and all(f"<td>{c}</td>" in page for c in trained.classes)
    assert (run / "plots" / "confusion_val.png").read_bytes().startswith(PNG_MAGIC)
    assert sum(map(sum, last["val_confusion"])) == last["val_videos"]
