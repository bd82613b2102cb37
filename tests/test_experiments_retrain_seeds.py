"""experiments/retrain_seeds.py: fixed genotypes retrained over seeds, the pooled noise and the failed seeds."""

from __future__ import annotations

import json

import pytest

from test_experiments_ablation import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "retrain_seeds.py"


def test_two_seeds_of_a_tiny_retrain_are_probed_cached_and_summarised(tmp_path, capsys):
    study = load_script(SCRIPT)
    args = ["--data", "synthetic:8", "--preset", "tiny", "--epochs", "2", "--genotypes", "r0", "--seeds", "0", "1",
            "--set", "channels=4", "--out", str(tmp_path)]
    assert study.main(args) == 0
    runs = sorted((tmp_path / "default" / "synthetic_8").glob("r0_r*/result.json"))
    results = [json.loads(p.read_text()) for p in runs]
    assert [r["seed"] for r in results] == [0, 1] and all(r["steps"][0]["grad_stem"] > 0 for r in results)
    a, b = (100 * r["top1"] for r in results)
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())["synthetic:8"]
    assert summary["pooled_std"] == pytest.approx(abs(a - b) / 2**0.5) and summary["dof"] == 1  # std of two
    stamp = [p.stat().st_mtime_ns for p in runs]
    assert study.main(args) == 0 and [p.stat().st_mtime_ns for p in runs] == stamp  # cached: not retrained
    longer = [x if x != "2" else "3" for x in args]  # another length under the same name: redone, not reused
    assert study.main(longer) == 0 and all(len(json.loads(p.read_text())["epochs"]) == 3 for p in runs)
    assert study.main([*args, "--set", "dropout=2"]) == 2 and capsys.readouterr().err.startswith("error: ")


def test_a_genotype_that_learns_on_one_seed_and_stays_at_chance_on_another_is_named():
    study = load_script(SCRIPT)
    run = lambda g, s, top1: {"genotype": g, "seed": s, "top1": top1, "classes": 8, "epochs": [], "warmup_epochs": 2}
    # chance 12.5: r0 at 20.0 (within 10 of chance) and 90.0 (>= chance + 30): failed; r1 at 20 and 40: not
    summary = study.summarise([run("r0", 0, 0.9), run("r0", 1, 0.2), run("r1", 0, 0.2), run("r1", 1, 0.4)])
    assert summary["failed"] == ["r0 seed 1"]
    assert summary["pooled_std"] == pytest.approx(((35**2 * 2 + 10**2 * 2) / 2) ** 0.5)  # by hand, 2 dof
