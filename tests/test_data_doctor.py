"""`pvnas data SPEC`: the dataset check report."""

from __future__ import annotations

import json
import shutil

import pytest

from pvnas.data.doctor import check_dataset, format_report
from pvnas.errors import ConfigError


@pytest.fixture()
def tree(tmp_path, real_clips, generated_videos, bad_videos):
    root = tmp_path / "ds"
    files = [
        ("train", "cook", real_clips["flipping_pancake.mkv"]),
        ("train", "swim", generated_videos["vp9.webm"]),
        ("train", "swim", bad_videos["truncated.mp4"]),
        ("val", "cook", real_clips["cleaning_pool_32f.mp4"]),
    ]
    for split, cls, src in files:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / split / cls / src.name)
    return root


def test_report_lists_classes_counts_and_unreadable_files(tree):
    report = check_dataset(f"folder:{tree}", workers=2)
    json.dumps(report)  # JSON-ready
    assert report["usable"] is True and report["classes"] == ["cook", "swim"]
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert (train["videos"], train["readable"], val["videos"], val["readable"]) == (3, 2, 1, 1)
    assert [u["path"].split("/")[-1] for u in train["unreadable"]] == ["truncated.mp4"]
    assert train["readable_per_class"] == {"cook": 1, "swim": 1} and val["readable_per_class"] == {"cook": 1, "swim": 0}
    assert train["duration_s"]["max"] == pytest.approx(10.33, abs=0.05) and train["width"]["max"] == 426
    text = format_report(report)
    assert "usable" in text and "truncated.mp4" in text and "classes without a readable video: swim" in text


def test_unusable_dataset(tree):
    shutil.rmtree(tree / "val")
    report = check_dataset(f"folder:{tree}")
    assert report["usable"] is False and "error" in report["splits"]["val"]
    assert "NOT usable" in format_report(report)
    (tree / "val" / "cook").mkdir(parents=True)
    (tree / "val" / "cook" / "x.mp4").write_text("not a video")
    report = check_dataset(f"folder:{tree}")
    assert report["usable"] is False and any("none of the 1 listed videos is readable" in p for p in report["problems"])


def test_synthetic_and_bad_spec():
    assert check_dataset("synthetic:8")["usable"] is True
    with pytest.raises(ConfigError):
        check_dataset("nonsense:/x")
