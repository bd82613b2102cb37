"""Demo data: real mp4 files, deterministic, written atomically, read through the normal decode path."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np

from pvnas.config import SEARCH_PRESETS
from pvnas.data import build_dataset
from pvnas.data.datasets.demo import VERSION, ensure_demo
from pvnas.data.datasets.video import VideoDataset
from pvnas.data.decode import PyAVDecoder
from pvnas.data.generators.moving_patterns import CLASSES

TINY = {"train_per_class": 2, "val_per_class": 1, "frames": 12, "size": 48}


def _build(root: str) -> None:
    ensure_demo(root, **TINY)


def test_demo_tree_is_deterministic(tmp_path):
    a = ensure_demo(tmp_path / "a", **TINY)
    b = ensure_demo(tmp_path / "b", **TINY)
    files = sorted(p.relative_to(a) for p in a.rglob("*.mp4"))
    assert len(files) == len(CLASSES) * 3
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.mp4"))
    decoder = PyAVDecoder()
    for rel in files[::5]:
        assert decoder.info(a / rel).num_frames == 12 and decoder.info(a / rel).width == 48
        assert np.array_equal(decoder.read(a / rel, range(12)), decoder.read(b / rel, range(12)))


def test_concurrent_builds_leave_one_complete_tree(tmp_path):
    root = tmp_path / "demo"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_build, args=(str(root),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(list(root.rglob("*.mp4"))) == len(CLASSES) * 3
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no temporary directories left


def test_demo_spec_reads_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PVNAS_CACHE", str(tmp_path))
    ensure_demo(tmp_path / f"demo-v{VERSION}", **TINY)  # pre-built tiny: the spec must reuse, not regenerate
    clip = SEARCH_PRESETS["demo"].clip
    train = build_dataset("demo", "train", clip)
    assert isinstance(train, VideoDataset) and sorted(train.classes) == sorted(CLASSES)
    assert len(train) == 16 and len(build_dataset("demo", "val", clip)) == 8
    assert train.flip is False  # shift_left vs shift_right: flipping would swap labels
    x, label, index = train[(3, 11)]
    assert x.shape == (3, clip.frames, clip.crop, clip.crop) and label == train.samples[3][1]
