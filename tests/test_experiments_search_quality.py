"""experiments/search_quality.py --quick: searched vs random on tiny data, cached units, variants, noise."""

import json

import pytest
import torch

from test_experiments_ablation import EXPERIMENTS, load_script

SCRIPT = EXPERIMENTS / "search_quality.py"


@pytest.mark.slow
def test_quick_study_caches_its_units_and_compares_searched_with_randoms(tmp_path):
    study = load_script(SCRIPT)
    threads = torch.get_num_threads()
    out = tmp_path / "q"
    assert study.main(["--quick", "--out", str(out), "--randoms", "2"]) == 0
    assert torch.get_num_threads() == threads
    for name in ("results.md", "results.json", "search_quality.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    (task,) = result["tasks"]
    (row,) = task["rows"]
    assert len(task["randoms"]) == 2 and all(len(r["top1_each"]) == 2 for r in task["randoms"])  # 2 retrain seeds
    assert row["win"] == (row["searched"]["top1"] > task["random_mean_top1"])
    assert row["clear_win"] == (row["margin"] > task["margin_noise"]) and task["retrain_noise"] >= 0
    assert row["stop_at"]["epoch"] == 1 and set(row["param_free"]) == {"S-NC", "S-RC", "T-NC", "T-RC"}
    # a second study with another selection reuses the search and every retrain it can (cached units)
    searches = sorted((out / "runs").rglob("search_*/seed_0/result.json"))
    stamp = searches[0].stat().st_mtime_ns
    assert study.main(["--quick", "--out", str(out), "--randoms", "2", "--select", "perturbation", "--variant", "pt",
                       "--stop-at", "0"]) == 0
    pt = json.loads((out / "results_pt.json").read_text())
    assert pt["tasks"][0]["randoms"] == task["randoms"] and len(list((out / "runs").rglob("search_*"))) == 1
    assert pt["tasks"][0]["rows"][0]["genotype"]["meta"]["selection"] == "perturbation"
    assert "perturbation" in json.loads(searches[0].read_text()) and searches[0].stat().st_mtime_ns != stamp
    # a capped derivation of the same search: no cell beyond the cap, the search reused
    assert study.main(["--quick", "--out", str(out), "--randoms", "2", "--max-param-free", "0", "--variant", "pf0",
                       "--stop-at", "0"]) == 0
    (pf_row,) = json.loads((out / "results_pf0.json").read_text())["tasks"][0]["rows"]
    assert set(pf_row["param_free"].values()) == {0} and pf_row["genotype"]["meta"]["max_param_free"] == 0
    assert len(list((out / "runs").rglob("search_*"))) == 1 and "alpha_pf0" in json.loads(searches[0].read_text())


@pytest.mark.parametrize("args", [["--randoms", "0"], ["--seeds", "1", "1"], ["--search-preset", "XL"],
                                  ["--set", "nope=1"], ["--tasks", "nope"], ["--max-param-free", "9"],
                                  ["--select", "perturbation", "--max-param-free", "2"]])
def test_bad_study_arguments_are_user_errors(tmp_path, capsys, args):
    study = load_script(SCRIPT)
    assert study.main(["--quick", "--out", str(tmp_path / "x"), *args]) == 2
    assert capsys.readouterr().err.startswith("error: ")
