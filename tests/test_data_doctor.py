"""`pvnas data SPEC`: the dataset check report."""

from __future__ import annotations

import json
import shutil

import pytest

from pvnas.data.doctor import check_dataset, deep_check_files, format_report
from pvnas.errors import ConfigError, DataError


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


def test_unusable_dataset_by_the_rule_runs_apply(tree):
    """`pvnas data` calls a split unusable exactly when building it for a run fails, with the same reason."""
    from pvnas.config import ClipConfig
    from pvnas.data import build_dataset

    shutil.rmtree(tree / "val")
    (tree / "val" / "cook").mkdir(parents=True)
    (tree / "val" / "cook" / "x.mp4").write_text("not a video")
    report = check_dataset(f"folder:{tree}")
    assert report["usable"] is False and report["usable_for"] == {"search": True, "train": False, "eval": False}
    (problem,) = [p for p in report["problems"] if "runs refuse" in p]
    with pytest.raises(DataError) as refused:
        build_dataset(f"folder:{tree}", "val", ClipConfig(crop=32, scale=(32, 40)))
    assert str(refused.value).split(" (e.g.")[0] in problem and "none of the 1 videos is readable" in problem
    text = format_report(report)
    assert "NOT usable (only by search: it reads the training split alone)" in text
    assert build_dataset(f"folder:{tree}", "train", ClipConfig(crop=32, scale=(32, 40)))  # what search reads works


def test_listing_errors_are_one_line_and_a_split_is_drawn_without_val(tree):
    shutil.rmtree(tree / "val")
    report = check_dataset(f"folder:{tree}")  # train/ alone: validation drawn from it, as the runs do
    assert report["usable"] is True and "train/ without a validation folder; validation drawn" in report["layout"]
    assert report["splits"]["train"]["videos"] + report["splits"]["val"]["videos"] == 3
    with pytest.raises(DataError, match="is not a directory"):
        check_dataset(f"folder:{tree / 'nowhere'}")


def test_synthetic_and_bad_spec():
    assert check_dataset("synthetic:8")["usable"] is True
    with pytest.raises(ConfigError):
        check_dataset("nonsense:/x")


# -- --deep: every frame through the decoder's own reads ------------------------------------------------


def _packet_starts(path) -> list[tuple[int, int]]:
    import av

    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(video=0) if p.size]


def _zero_packet(src, k: int) -> bytes:
    data = bytearray(src.read_bytes())
    pos, size = _packet_starts(src)[k]
    data[pos : pos + size] = bytes(size)
    return bytes(data)


@pytest.fixture(scope="module")
def damaged_tree(tmp_path_factory, real_clips, bad_videos):
    """Real clips, damaged in known ways: three files the quick check passes but reads fail on."""
    avi, mp4, mkv = (real_clips[n] for n in ("apply_eye_makeup.avi", "cleaning_pool_32f.mp4", "flipping_pancake.mkv"))
    flipped = bytearray(mp4.read_bytes())
    pos, size = _packet_starts(mp4)[5]
    at = pos + size // 2
    flipped[at : at + 8] = bytes(b ^ 0xFF for b in flipped[at : at + 8])
    files = {
        "train/cook/clean.mkv": mkv.read_bytes(),
        "train/cook/clean.mp4": mp4.read_bytes(),
        "train/makeup/clean.avi": avi.read_bytes(),
        "train/makeup/zero10.avi": _zero_packet(avi, 10),  # decoding fails at the 10th packet
        "train/makeup/zero80.avi": _zero_packet(avi, 80),  # one frame fewer decodes: the last one is lost
        "train/makeup/truncated.mp4": bad_videos["truncated.mp4"].read_bytes(),
        "train/cook/cut.avi": avi.read_bytes()[: _packet_starts(avi)[100][0] - 8],  # 100 whole packets
        "train/cook/flipped.mp4": bytes(flipped),  # h264 conceals the damage
        "train/cook/cut.mkv": mkv.read_bytes()[: _packet_starts(mkv)[150][0]],  # no frame count, a duration
        "val/cook/clean.mp4": mp4.read_bytes(),
        "val/makeup/clean.avi": avi.read_bytes(),
    }
    root = tmp_path_factory.mktemp("damaged")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _by_name(items):
    return {item["path"].rsplit("/", 1)[-1]: item for item in items}


@pytest.fixture(scope="module")
def deep_report(damaged_tree):
    """The deep check of ``damaged_tree`` (read-only: two tests read it)."""
    return check_dataset(f"folder:{damaged_tree}", workers=2, deep=True)


def test_deep_names_what_the_quick_check_misses(damaged_tree, deep_report):
    quick = check_dataset(f"folder:{damaged_tree}", workers=2)
    assert list(_by_name(quick["splits"]["train"]["unreadable"])) == ["truncated.mp4"]
    report = deep_report
    json.dumps(report)
    train = report["splits"]["train"]
    unreadable, damaged = _by_name(train["unreadable"]), _by_name(train["damaged"])
    assert sorted(unreadable) == ["truncated.mp4", "zero10.avi", "zero80.avi"]
    assert unreadable["zero10.avi"]["reason"].startswith("decoding failed: [Errno 1094995529] Invalid data")
    assert unreadable["zero80.avi"]["reason"] == "frames [163] of 164 could not be decoded (truncated or corrupt file?)"
    frames = {"header_frames": 164, "header_seconds": 6.56, "packets": 164, "decoded": 163}
    assert unreadable["zero80.avi"]["frames"] == frames
    assert {name: item["reason"] for name, item in damaged.items()} == {
        "cut.avi": "the header claims 164 frames, the file holds 100",
        "flipped.mp4": "1 frames decode with concealed errors",
        "cut.mkv": "the header claims 10.4 s, the frames span 5.0 s",
    }
    assert (train["readable"], train["unchecked"], report["splits"]["val"]["readable"]) == (6, [], 2)
    assert train["readable_per_class"] == {"cook": 5, "makeup": 1}
    assert report["usable"] is True and report["all_readable"] is False
    assert any("3 videos would be skipped by training, eval and predict" in p for p in report["problems"])
    text = format_report(report)
    assert "damaged " in text and "zero80.avi: frames [163]" in text and "3 damaged but readable" in text


def test_deep_names_every_file_training_and_predict_skip(damaged_tree, deep_report):
    """The promise of --deep: a file that a training clip or a test view cannot read was named."""
    from pvnas.config import SEARCH_PRESETS, ClipConfig
    from pvnas.data import list_samples
    from pvnas.data.datasets.video import VideoDataset
    from pvnas.data.loader import Skipped

    report = deep_report
    named = {u["path"] for split in report["splits"].values() for u in split["unreadable"]}
    samples, classes, _, _, _ = list_samples("folder", str(damaged_tree), {}, "train")
    skipped = set()
    for clip in (SEARCH_PRESETS["tiny"].clip, ClipConfig(frames=8, window_seconds=8 / 25, crop=32, scale=(32, 40))):
        for views, seeds in (("train", range(8)), ("multi", [0])):
            data = VideoDataset(samples, classes, clip, views=views)
            skipped |= {item.path for i in range(len(data)) for s in seeds if isinstance(item := data[(i, s)], Skipped)}
    assert {p.rsplit("/", 1)[-1] for p in skipped} == {"truncated.mp4", "zero10.avi", "zero80.avi"}
    assert skipped <= named


def test_deep_limits_give_unchecked_verdicts_and_fresh_workers(real_clips):
    """A file over the time or memory limit costs its verdict, not the run: the next file gets a new worker."""
    paths = [str(real_clips["flipping_pancake.mkv"]), str(real_clips["three_frames_rotated.mov"])]
    over_time = dict(deep_check_files(paths, "pyav", workers=1, timeout=1e-6, max_memory_mb=4096))
    over_memory = dict(deep_check_files(paths, "pyav", workers=1, timeout=60, max_memory_mb=1))
    within = dict(deep_check_files(paths, "pyav", workers=1, timeout=60, max_memory_mb=4096))
    assert {v["reason"] for v in over_time.values()} == {"no verdict within 1e-06 s (--timeout)"}
    assert {v["reason"] for v in over_memory.values()} == {"decoding it took more than 1 MB of memory (--max-memory)"}
    assert {p: v["status"] for p, v in within.items()} == {p: "ok" for p in paths}


def test_deep_on_synthetic_and_bad_limits():
    assert check_dataset("synthetic:8", deep=True)["all_readable"] is True
    with pytest.raises(ConfigError, match="--timeout and --max-memory must be > 0"):
        check_dataset("synthetic:8", deep=True, timeout=0)
