"""benchmarks/gpu_check.py --smoke: every section of the GPU check runs (on the CPU here) and reports."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_smoke_run_reports_every_section():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    report = check.main(["--smoke", "--deadline", "600"])
    for section in ("search", "agreement", "retrain", "estimate"):
        assert "error" not in report[section], (section, report[section])
    assert report["search"]["fast_k1"]["steps"] >= 1 and report["search"]["fast_k4"]["mean_s"] > 0
    assert "speedup_vs_reference_k1" in report["search"]["fast_k1"]
    assert report["agreement"]["fast_fp32"]["agrees"] and report["agreement"]["fast_fp32"]["same_genotype"]
    assert report["retrain"]["train_speedup"] > 0 and report["retrain"]["best_batch"] in (2, 4)
    for name in ("search_k1", "search_k4", "retrain_L"):
        assert report["estimate"][name]["ratio"] > 0, name
