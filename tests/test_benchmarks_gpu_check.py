"""benchmarks/gpu_check.py always answers: every section runs (on the CPU here, --smoke) and reports; a run stopped
by SIGTERM still leaves valid JSON with the sections it finished; a failing item is recorded and the next runs."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def test_a_failing_item_is_recorded_saved_and_the_next_one_runs(tmp_path):
    check = load_check()
    path = tmp_path / "section.json"
    items = check.Items(str(path), seconds=60)

    def boom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    failed = items.item("a", boom)
    assert failed.pop("item_seconds") >= 0  # (no timing threshold: the box may be loaded)
    assert failed == {"error": "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"}
    assert items.item("b", lambda: {"mean_s": 1.0})["mean_s"] == 1.0
    assert items.item("c", lambda: {"mean_s": 2.0}, need=120)["skipped"].startswith("deadline")
    saved = json.loads(path.read_text())
    assert saved["a"]["error"].startswith("RuntimeError") and saved["b"]["mean_s"] == 1.0 and "skipped" in saved["c"]


@pytest.mark.slow
def test_sigterm_mid_run_leaves_valid_json_with_the_finished_sections(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--smoke", "--sections", "agreement", "search", "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = json.loads(proc.stdout.readline())  # written when the first section ends
    assert "agreement" in first and "search" not in first
    time.sleep(2)  # (the search section, >= 10 s, has started: the stop lands inside it, not between sections)
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read().strip().splitlines()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    report = json.loads(rest[-1])
    assert report["interrupted"] == "SIGTERM" and report["search"]["interrupted"] == "SIGTERM"
    assert report["agreement"] == first["agreement"] and report["agreement"]["fast_fp32"]["agrees"]
    assert json.loads(out.read_text()) == report  # the file holds the same report


@pytest.mark.slow
def test_smoke_run_reports_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--deadline", "900", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert len(lines) == 4 and json.loads(out.read_text()) == report  # one line per section, the last complete
    assert report["device"].startswith("cpu") and report["torch"]
    for section in ("search", "agreement", "retrain", "estimate"):
        assert not any("error" in v for v in report[section].values() if isinstance(v, dict)), report[section]
    search = report["search"]
    assert search["fast_k1"]["steps"] >= 1 and search["fast_k4"]["mean_s"] > 0
    assert search["fast_k1"]["speedup_vs_reference_k1"] > 0
    both = search["largest_batch_both_fit"]  # (--smoke: half the preset batch)
    assert (both["batch"], both["preset_batch"]) == (2, 4) and both["fast_k1"]["speedup_vs_reference_k1"] > 0
    agreement = report["agreement"]
    assert agreement["fast_fp32"]["agrees"] and agreement["fast_fp32"]["same_genotype"]
    assert agreement["fast_fp32"]["first_alpha_grad_cosine"] > 0.999
    retrain = report["retrain"]
    assert retrain["train_speedup"] > 0 and retrain["test_speedup"] > 0
    assert retrain["fast"]["test_30_views_end_to_end"]["mean_s"] > 0 and retrain["batch_sweep"]["best_batch"] in (2, 4)
    for name in ("search_k1", "search_k4", "retrain_L"):
        assert report["estimate"][name]["ratio"] > 0, name
