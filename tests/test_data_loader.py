"""Loader: same seed -> same clips whatever the worker count; bad videos dropped, counted, warned once; workers
outlive a stop signal to their process group."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import subprocess

import pytest
import torch

from pvnas.config import ClipConfig
from pvnas.data import build_dataset
from pvnas.data.datasets.video import VideoDataset
from pvnas.runtime.distributed import DistEnv
from pvnas.runtime.run import training_set
from pvnas.data.decode.pyav import PyAVDecoder
from pvnas.data.loader import TAKES_STOP_SIGNALS, CachedItems, build_loader

CLIP = ClipConfig(frames=4, window_seconds=0.32, crop=32, scale=(32, 40), test_clips=2, test_crops=3)


def _epochs(loader, epochs):
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        out.append([(b.clips, b.labels, b.indices) for b in loader])
    return out


def test_same_seed_same_clips_with_0_and_2_workers(tmp_path, generated_videos, real_clips):
    names = ["h264_bframes.mp4", "h264.mkv", "vp9.webm", "mpeg4.avi", "mpeg4_bframes.avi", "low_fps_5.mp4"]
    samples = [(str(generated_videos[n]), i % 3) for i, n in enumerate(names)]
    samples.append((str(real_clips["apply_eye_makeup.avi"]), 2))
    ds = VideoDataset(samples, ["a", "b", "c"], CLIP)
    serial = _epochs(build_loader(ds, 3, shuffle=True, seed=7, workers=0), 2)
    parallel = _epochs(build_loader(ds, 3, shuffle=True, seed=7, workers=2), 2)
    for e in range(2):
        assert len(serial[e]) == len(parallel[e]) == 3
        for (c0, l0, i0), (c1, l1, i1) in zip(serial[e], parallel[e]):
            assert torch.equal(i0, i1) and torch.equal(l0, l1) and torch.equal(c0, c1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(serial[0], serial[1]))  # new epoch, new clips
    other = _epochs(build_loader(ds, 3, shuffle=True, seed=8, workers=0), 1)
    assert not all(torch.equal(a[2], b[2]) for a, b in zip(serial[0], other[0]))


def test_bad_videos_skipped_once_with_labels_intact(tmp_path, generated_videos, bad_videos, caplog):
    root = tmp_path / "tree" / "train"
    good = {"a": "h264.mkv", "b": "mpeg4.avi", "c": "vp9.webm"}
    for label, name in good.items():
        (root / label).mkdir(parents=True)
        shutil.copyfile(generated_videos[name], root / label / name)
    bad_names = sorted(bad_videos)
    for i, name in enumerate(bad_names):
        shutil.copyfile(bad_videos[name], root / "abc"[i % 3] / f"bad_{name}")
    (tmp_path / "tree" / "val" / "a").mkdir(parents=True)  # (a validation folder: the training split stays whole)
    shutil.copyfile(generated_videos["h264.mkv"], tmp_path / "tree" / "val" / "a" / "v.mkv")
    ds = build_dataset(f"folder:{tmp_path / 'tree'}", "train", CLIP)
    expected = {i: label for i, (_, label) in enumerate(ds.samples)}
    for workers in (0, 2):
        caplog.clear()
        loader = build_loader(ds, 4, shuffle=True, seed=0, workers=workers)
        with caplog.at_level(logging.WARNING, logger="pvnas.data"):
            for epoch in range(2):
                loader.sampler.set_epoch(epoch)
                seen = {}
                for batch in loader:
                    assert batch.clips.shape[0] == batch.labels.shape[0] == batch.indices.shape[0]
                    seen.update(zip(batch.indices.tolist(), batch.labels.tolist()))
                assert len(seen) == len(good)
                assert all(expected[i] == label for i, label in seen.items())
        assert loader.skip_count == 2 * len(bad_names)
        assert sorted(loader.skipped) == sorted(str(root / "abc"[i % 3] / f"bad_{n}") for i, n in enumerate(bad_names))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == len(bad_names), warnings  # one per file, not per epoch or worker
        for name in bad_names:
            assert sum(f"bad_{name}" in w for w in warnings) == 1


def test_all_bad_batch_is_empty_not_an_error(generated_videos, bad_videos):
    ds = VideoDataset([(str(generated_videos["h264.mkv"]), 0), (str(bad_videos["empty.mp4"]), 0)], ["a"], CLIP)
    loader = build_loader(ds, 1, shuffle=False, seed=0)
    batches = list(loader)
    assert batches[1].clips.numel() == 0 and len(batches[1].skipped) == 1


class CountingDecoder(PyAVDecoder):
    """Counts the reads of each file (in this process: a worker's counts stay in the worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: dict[str, int] = {}

    def read(self, path, indices):
        self.reads[str(path)] = self.reads.get(str(path), 0) + 1
        return super().read(path, indices)


def test_cached_items_decode_each_video_once_and_equal_a_fresh_load(generated_videos, bad_videos):
    names = ["h264_bframes.mp4", "h264.mkv", "vp9.webm", "mpeg4.avi", "low_fps_5.mp4"]
    samples = [(str(generated_videos[n]), i % 2) for i, n in enumerate(names)] + [(str(bad_videos["empty.mp4"]), 0)]
    fresh = VideoDataset(samples, ["a", "b"], CLIP, views="single")
    expected = _epochs(build_loader(fresh, 2, shuffle=False, seed=0), 1)[0]
    one_clip = fresh[0][0].nbytes
    for workers in (0, 2):
        decoder = CountingDecoder()
        ds = VideoDataset(samples, ["a", "b"], CLIP, views="single", decoder=decoder)
        cached = CachedItems(ds, max_bytes=3 * one_clip)
        loader = build_loader(cached, 2, shuffle=False, seed=0, workers=workers)
        for epoch in _epochs(loader, 3):
            assert len(epoch) == len(expected)
            for (c0, l0, i0), (c1, l1, i1) in zip(expected, epoch):
                assert torch.equal(c0, c1) and torch.equal(l0, l1) and torch.equal(i0, i1)
        assert loader.skip_count == 3  # a damaged file is skipped every epoch, as without the cache
    decoder = CountingDecoder()
    cached = CachedItems(VideoDataset(samples, ["a", "b"], CLIP, views="single", decoder=decoder), 3 * one_clip)
    _epochs(build_loader(cached, 2, shuffle=False, seed=0), 3)
    reads = [decoder.reads.get(p, 0) for p, _ in samples]
    assert reads == [1, 1, 1, 3, 3, 0]  # the first three fit under the cap; the bad file fails before reading
    assert sorted(cached.items) == [0, 1, 2, 5] and cached.bytes == 3 * one_clip


def test_training_decodes_each_video_whole_once_and_samples_the_same_clips(tmp_path, generated_videos, monkeypatch):
    names = ["h264_bframes.mp4", "h264.mkv", "vp9.webm", "mpeg4.avi"]
    for split in ("train", "val"):
        for i, name in enumerate(names):
            (tmp_path / split / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(generated_videos[name], tmp_path / split / "ab"[i % 2] / name)
    plain = _epochs(build_loader(build_dataset(f"folder:{tmp_path}", "train", CLIP), 2, shuffle=True, seed=3,
                                 drop_last=True), 2)
    reads = []
    read = PyAVDecoder.read
    monkeypatch.setattr(PyAVDecoder, "read", lambda self, path, ix: reads.append(len(ix)) or read(self, path, ix))
    cached = _epochs(training_set(f"folder:{tmp_path}", CLIP, 2, 0, 3, DistEnv()).loader, 2)
    frames = sorted(PyAVDecoder().info(generated_videos[n]).num_frames for n in names)
    assert sorted(reads) == frames  # one whole decode per video over both epochs
    for e in range(2):
        for (c0, l0, i0), (c1, l1, i1) in zip(plain[e], cached[e], strict=True):
            assert torch.equal(c0, c1) and torch.equal(l0, l1) and torch.equal(i0, i1)


@pytest.mark.skipif(not TAKES_STOP_SIGNALS, reason="Linux only: elsewhere workers keep torch's signal handling")
def test_workers_outlive_a_stop_signal_to_the_group_but_not_the_loaders_own():
    """SLURM, Kubernetes, `timeout`, torchrun and Ctrl-C signal the whole process group: the workers must keep
    loading until the main process has checkpointed and shuts them down. torch's fallback, a SIGTERM from the
    main process to a worker that does not stop, must still end it."""
    loader = build_loader(build_dataset("synthetic:12", "train", CLIP), 1, shuffle=False, seed=0, workers=2)
    before = set(multiprocessing.active_children())
    batches = iter(loader)
    labels = [next(batches).labels]
    workers = sorted(set(multiprocessing.active_children()) - before, key=lambda w: w.pid)
    assert len(workers) == 2
    for sig in ("TERM", "INT"):  # from another process, as a group signal is
        subprocess.run(["kill", f"-{sig}", *(str(w.pid) for w in workers)], check=True)
    labels += [b.labels for b in batches]
    assert len(labels) == 12 and all(w.is_alive() for w in workers)
    os.kill(workers[0].pid, signal.SIGTERM)
    workers[0].join(timeout=60)
    assert workers[0].exitcode == 0
