"""experiments/ablation.py --quick: the whole Table 3 + collapse protocol end to end, on tiny data.

The script is not part of the package, so it is loaded from its file; its main() is what
``python experiments/ablation.py`` runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPT = EXPERIMENTS / "ablation.py"


def load_script(script=SCRIPT):
    """Load a study script as ``python experiments/<script>`` would: its folder first on the path (its helpers)."""
    if str(EXPERIMENTS) not in sys.path:
        sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"{script.stem}_script", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_run_writes_every_row_table_and_figures(tmp_path):
    ablation = load_script()
    threads = torch.get_num_threads()
    out = tmp_path / "ablation"
    assert ablation.main(["--quick", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads  # the pinned thread count does not leak into the caller

    for name in ("results.md", "results.json", "ablation.png", "collapse.png"):
        assert (out / name).stat().st_size > 0, name
    rows = ablation.row_names(1)
    assert rows == ["Baseline", "Stop at 1/4", "Stop at 1/2", "Stop at 3/4", "Half Channel", "Double Channel",
                    "Random (mean of 1)"]
    md = (out / "results.md").read_text()
    for row in rows:
        assert f"| {row} |" in md, row
    for kind in ("S-NC", "S-RC", "T-NC", "T-RC"):
        assert f"| {kind} |" in md, kind

    result = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in result["table"]] == rows
    by_name = {r["name"]: r for r in result["runs"]}
    assert set(by_name) == {"baseline", "stop_001", "stop_002", "stop_003", "half_channel", "double_channel", "random_0"}
    assert [by_name[n]["search_epoch"] for n in ("stop_001", "stop_002", "stop_003", "baseline")] == [1, 2, 3, 4]
    assert [by_name[n]["channels"] for n in ("half_channel", "baseline", "double_channel")] == [2, 4, 8]
    assert by_name["half_channel"]["params"] < by_name["baseline"]["params"] < by_name["double_channel"]["params"]
    for r in result["runs"]:
        assert 0.0 <= r["top1"] <= r["top5"] <= 1.0 and r["gflops"] > 0
    for schedule in ("step", "cosine"):
        curve = result["collapse"]["curves"][schedule]["0"]
        assert [e["epoch"] for e in curve] == [1, 2, 3, 4]
    # the two schedules really differ: step decays x0.1 every epoch at 4 epochs, cosine does not
    assert result["collapse"]["curves"]["step"]["0"][1]["lr"] == pytest.approx(0.01)
    assert result["collapse"]["curves"]["cosine"]["0"][1]["lr"] > 0.05
    assert result["wall_seconds"] > 0


def test_non_empty_out_is_refused(tmp_path, capsys):
    ablation = load_script()
    (tmp_path / "old.txt").write_text("previous results")
    assert ablation.main(["--quick", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--search-epochs", "3"], ["--channels", "1"], ["--randoms", "0"], ["--seeds", "1", "1"]])
def test_bad_budget_is_a_user_error(tmp_path, capsys, args):
    ablation = load_script()
    assert ablation.main(["--quick", "--out", str(tmp_path / "x"), *args]) == 2
    assert capsys.readouterr().err.startswith("error: ")
