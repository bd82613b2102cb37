"""benchmarks/fuzz_videos.py at 40 files: --deep names every file a search epoch or predict skips.

The script is not part of the package, so it is loaded from its file. Every stage runs as its own
``python -m pvnas`` subprocess under a time and an address-space limit, as in the full campaign.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_videos.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fuzz_videos_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_damaged_copies_are_deterministic_by_seed(tmp_path):
    fuzz = load_script()
    first = fuzz.build_dataset(tmp_path / "a", 24, seed=3)
    again = fuzz.build_dataset(tmp_path / "b", 24, seed=3)
    assert [(r["mutation"], r["detail"]) for r in first] == [(r["mutation"], r["detail"]) for r in again]
    assert all(Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes() for a, b in zip(first, again))
    assert [r["mutation"] for r in first[:8]] == ["clean"] * 8  # one clean copy of each clip per split
    assert {Path(r["path"]).parts[-3] for r in first} == {"train", "val"}


@pytest.mark.slow
def test_fuzz_campaign_40_files(tmp_path):
    fuzz = load_script()
    result = fuzz.campaign(40, 0, tmp_path / "fuzz", timeout=600, memory_mb=4096)
    json.dumps(result)
    assert result["crashes"] == [] and result["hangs"] == [], result["stages"]
    assert result["skipped_not_named"] == [] and result["clean_named"] == []
    # the campaign found damage each stage had to deal with
    assert min(result["named_by_deep"], result["skipped_by_search"], result["failed_predict"]) > 0
    assert result["skipped_by_search"] == result["search_skip_count"]  # one epoch: each skipped file once
