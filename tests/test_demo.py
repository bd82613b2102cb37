"""`pvnas demo`: the whole pipeline end to end (quick budget), its run directory and closing lines."""

from __future__ import annotations

import contextlib
import html as htmllib
import io
import json
import re

import pytest

from pvnas.cli import main
from pvnas.demo import _winner, demo_budget
from pvnas.space.genotype import Genotype


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["demo", "--quick", "--data", "synthetic:16", "--out", str(out)])
    assert code == 0
    return out, stdout.getvalue()


@pytest.mark.slow  # the first test runs the demo (the module's fixture)
def test_demo_leaves_every_artifact(demo_run):
    out, _ = demo_run
    for name in ("genotype.json", "random_genotype.json", "eval_searched.json", "eval_random.json", "summary.json",
                 "search/metrics.jsonl", "searched/model.pt", "random/model.pt", "searched/flops.json"):
        assert (out / name).is_file(), name
    pngs = sorted(out.rglob("*.png"))
    assert {p.name for p in pngs} >= {"alphas_S-NC.png", "alphas_T-RC.png", "collapse.png", "cells.png", "curves.png", "views.png"}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    for name in ("searched", "random"):
        result = json.loads((out / f"eval_{name}.json").read_text())
        assert 0.0 <= result["top5"] <= 1.0 and result["top1"] <= result["top5"]
        assert result["views"] == "2x3" and result["videos"] > 0


def test_demo_report_is_self_contained_and_holds_the_genotype(demo_run):
    out, _ = demo_run
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r'<img[^>]+src="(?!data:)', html)  # no image read from disk
    genotype = Genotype.load(out / "genotype.json")
    assert htmllib.escape(genotype.describe()) in html
    # the comparison is a table a person reads at a glance, not a JSON dump
    summary = json.loads((out / "summary.json").read_text())
    head = html.split("<h2>Summary</h2>", 1)[1].split("<h2>", 1)[0]
    assert '"winner"' not in head and head.count("<table>") == 2
    assert f"<td>{100 * summary['searched']['top1']:.1f}</td>" in head and "<td>random</td>" in head
    for kind, drop in summary["search"]["entropy_drop"].items():
        assert f"<td>{kind}</td><td>{drop:.3f}</td>" in head


def test_demo_closing_lines_report_both_models_honestly(demo_run):
    out, stdout = demo_run
    summary = json.loads((out / "summary.json").read_text())
    lines = stdout.strip().splitlines()
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert lines[-2].startswith("result: ")
    searched = next(line for line in lines if line.startswith("searched:"))
    random = next(line for line in lines if line.startswith("random"))
    assert f"top-1 {100 * summary['searched']['top1']:.1f}%" in searched
    assert f"top-1 {100 * summary['random']['top1']:.1f}%" in random
    assert "params" in searched and "GMACs" in searched
    for kind in ("S-NC", "S-RC", "T-NC", "T-RC"):
        assert any(line.strip().startswith(f"{kind}:") for line in lines), kind
    drops = next(line for line in lines if line.startswith("alpha entropy drop"))
    assert all(f"{kind} {drop:.3f}" in drops for kind, drop in summary["search"]["entropy_drop"].items())
    assert summary["winner"] == _winner(summary["searched"], summary["random"])


def test_demo_refuses_a_non_empty_out(demo_run, capsys):
    out, _ = demo_run
    assert main(["demo", "--quick", "--data", "synthetic:16", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_winner_is_top1_then_top5():
    assert _winner({"top1": 0.5, "top5": 0.9}, {"top1": 0.4, "top5": 1.0}) == "searched"
    assert _winner({"top1": 0.5, "top5": 0.8}, {"top1": 0.5, "top5": 0.9}) == "random"
    assert _winner({"top1": 0.5, "top5": 0.9}, {"top1": 0.5, "top5": 0.9}) == "tie"


def test_full_budget_is_the_demo_presets():
    full, quick = demo_budget(), demo_budget(quick=True)
    assert full.views == "4x3" and full.search.epochs > quick.search.epochs
    assert full.train.epochs > quick.train.epochs
