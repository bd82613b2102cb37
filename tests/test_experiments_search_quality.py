"""experiments/search_quality.py --quick: searched vs random, two schedules side by side, on tiny data."""

import json

import pytest
import torch

from test_experiments_ablation import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "search_quality.py"


@pytest.mark.slow
def test_quick_study_compares_searched_with_randoms_per_seed_and_schedule(tmp_path):
    study = load_script(SCRIPT)
    threads = torch.get_num_threads()
    out = tmp_path / "q"
    assert study.main(["--quick", "--out", str(out), "--schedules", "step", "converge", "--randoms", "2"]) == 0
    assert torch.get_num_threads() == threads
    for name in ("results.md", "results.json", "search_quality.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    assert [(p["seed"], p["schedule"]) for p in result["per_seed"]] == [(0, "step"), (0, "converge")]
    for p in result["per_seed"]:
        assert len(p["random_top1"]) == 2 and p["win"] == (p["searched"]["top1"] > sum(p["random_top1"]) / 2)
        assert set(p["param_free"]) == set(p["entropy_drop"]) == {"S-NC", "S-RC", "T-NC", "T-RC"}
        assert p["searched"]["genotype"]["meta"]["source"] == "search" and p["search_seconds"] > 0
    # the randoms are retrained once per seed and shared by the schedules
    assert result["per_seed"][0]["random_top1"] == result["per_seed"][1]["random_top1"]
    assert [r["schedule"] for r in result["summary"]] == ["step", "converge"]
    md = (out / "results.md").read_text()
    assert "| step | 0 |" in md and "| converge | 0 |" in md and "wins" in md


@pytest.mark.parametrize("args", [["--randoms", "0"], ["--seeds", "1", "1"], ["--search-preset", "XL"]])
def test_bad_study_arguments_are_user_errors(tmp_path, capsys, args):
    study = load_script(SCRIPT)
    assert study.main(["--quick", "--out", str(tmp_path / "x"), *args]) == 2
    assert capsys.readouterr().err.startswith("error: ")
