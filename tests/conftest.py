"""Shared fixtures: real clips, generated videos (written once per session) and broken files.

Generic on purpose: any test that needs a video file on disk can use these.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pvnas.data.encode import write_video
from pvnas.nn.fast.policy import generic_kernels

# One OpenMP team per core in all: with `pytest -n 2` on 2 cores, two workers of 2 threads each (and the
# CLI subprocesses they start, which inherit OMP_NUM_THREADS) made every parallel region wait for a
# descheduled thread, and the suite ran 2-3x slower.
_THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ["OMP_NUM_THREADS"] = str(_THREADS)
torch.set_num_threads(_THREADS)



@pytest.fixture(params=["cpu-tuned", "generic"])
def kernels(request):
    """Each fast-path test twice: with the CPU-tuned kernels and with the generic ones that GPUs take
    (pvnas.nn.fast.policy), both against the same oracle."""
    with generic_kernels(request.param == "generic"):
        yield request.param


DATA_DIR = Path(__file__).parent / "data"
REAL_CLIPS = {p.name: p for p in sorted(DATA_DIR.iterdir()) if p.suffix in {".mp4", ".avi", ".mkv", ".mov", ".webm"}}


def pattern_frames(n: int, width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` smooth, moving RGB frames (uint8 ``(n, H, W, 3)``): realistic P/B-frame material, every frame distinct."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 2 * np.pi, size=3)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            frames[i, :, :, c] = 127 + 100 * np.sin(base[c] + (xx + 3 * i) / (9 + 4 * c) + yy / (13 + 3 * c))
        y, x = (5 * i) % max(height - 12, 1), (7 * i) % max(width - 12, 1)
        frames[i, y : y + 12, x : x + 12] = (255, 255, 255) if i % 2 else (0, 0, 0)
    return frames


# name -> (frame count, write_video keyword arguments)
GENERATED: dict[str, tuple[int, dict]] = {
    "h264_bframes.mp4": (60, {"bframes": 2, "keyint": 12}),
    "h264_open_gop.mp4": (60, {"bframes": 3, "keyint": 12, "options": {"x264-params": "open-gop=1:scenecut=0"}}),
    "h264.mkv": (60, {"bframes": 3, "keyint": 15}),
    "vp9.webm": (48, {"keyint": 12}),
    "mpeg4_bframes.avi": (50, {"codec": "mpeg4", "bframes": 2, "keyint": 12}),
    "mpeg4.avi": (50, {"codec": "mpeg4", "keyint": 10}),
    "mjpeg.avi": (20, {"codec": "mjpeg"}),
    "odd_97x71.mp4": (30, {"size": (97, 71), "keyint": 8}),
    "odd_97x71.avi": (30, {"codec": "mpeg4", "size": (97, 71), "keyint": 8}),
    "low_fps_5.mp4": (20, {"fps": 5, "keyint": 6}),
    "vfr.mkv": (24, {"times": [0.0, 0.04, 0.3, 0.31, 0.5, 1.2, 1.25, 1.3, 2.0, 2.01, 2.02, 2.5,
                               3.0, 3.5, 3.51, 3.6, 4.4, 4.8, 5.0, 5.05, 5.1, 6.0, 6.5, 7.0], "keyint": 6}),
    "rotated_90.mp4": (12, {"rotation": 90, "keyint": 4}),
}  # fmt: skip


def _make_video(
    path: Path, frames: int, *, size: tuple[int, int] = (96, 64), fps: float = 25, seed: int = 0, **kwargs
) -> Path:
    write_video(path, pattern_frames(frames, *size, seed=seed), fps, **kwargs)
    return path


@pytest.fixture(scope="session")
def make_video():
    """``make_video(path, frames, size=(W, H), fps=25, seed=0, **write_video_kwargs) -> path``: a pattern video."""
    return _make_video


@pytest.fixture(scope="session")
def real_clips() -> dict[str, Path]:
    """The real clips of ``tests/data`` (see its README for sources and licences), by file name."""
    return dict(REAL_CLIPS)


@pytest.fixture(scope="session")
def generated_videos(tmp_path_factory) -> dict[str, Path]:
    """The :data:`GENERATED` videos (several containers, codecs, GOP shapes), written once per session."""
    root = tmp_path_factory.mktemp("videos")
    return {name: _make_video(root / name, n, seed=i, **kw) for i, (name, (n, kw)) in enumerate(GENERATED.items())}


@pytest.fixture(params=[*REAL_CLIPS, *GENERATED])
def any_video(request, real_clips, generated_videos) -> Path:
    """Parametrised over every real and generated video."""
    return real_clips.get(request.param) or generated_videos[request.param]


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory, generated_videos) -> dict[str, Path]:
    """Files that look like videos but are not usable: each must be skipped, never crash a run."""
    root = tmp_path_factory.mktemp("bad")
    bad = {
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 20,
        "random.avi": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "truncated.mp4": generated_videos["h264_bframes.mp4"].read_bytes()[:3000],
    }
    paths = {}
    for name, data in bad.items():
        paths[name] = root / name
        paths[name].write_bytes(data)
    audio = root / "audio_only.mp4"
    with av.open(str(audio), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    paths["audio_only.mp4"] = audio
    return paths


@pytest.fixture(scope="session")
def reference_frames():
    """``reference_frames(path) -> uint8 (N, H, W, 3)``: every frame by a plain sequential decode,
    display rotation applied — the ground truth of frame-exactness tests (cached per path)."""
    cache: dict[str, np.ndarray] = {}

    def decode_all(path: str | Path) -> np.ndarray:
        if str(path) not in cache:
            with av.open(str(path)) as c:
                frames = list(c.decode(video=0))
                arrays = np.stack([f.to_ndarray(format="rgb24") for f in frames])
            k = round(frames[0].rotation / 90) % 4
            cache[str(path)] = np.ascontiguousarray(np.rot90(arrays, k=k, axes=(1, 2))) if k else arrays
        return cache[str(path)]

    return decode_all


@pytest.fixture(scope="session")
def tiny_search_run(tmp_path_factory) -> Path:
    """A 2-epoch `pvnas search` (tiny preset, C=4, batch 4, synthetic:8) as the CLI runs it, once per worker and
    shared: read it, or copy it before writing into it."""
    from pvnas.cli import main

    run = tmp_path_factory.mktemp("tiny_search") / "run"
    assert main(["search", "--data", "synthetic:8", "--preset", "tiny", "--epochs", "2", "--channels", "4",
                 "--batch-size", "4", "--out", str(run)]) == 0
    return run


COSTS = Path(__file__).parent / "costs.json"  # seconds per test file, as the last `--write-costs` run measured them
NEW_TEST_SECONDS = 0.5  # a file not in it yet, per test: about the suite's mean (~420 s over ~830 tests)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--write-costs", action="store_true",
                     help=f"write each test file's seconds (setup, call and teardown) into {COSTS.name}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The files with the most seconds first (tests/costs.json), each file's tests in order.

    `make test` runs `--dist loadfile --no-loadscope-reorder`: a worker takes the next file in this order when it
    runs out, so the longest files start at once and short ones fill the end: longest-first list scheduling, within
    a few seconds of the best split. (Ordered by their counts of tests or of slow tests, a 70 s file of quick-looking
    tests started halfway through and one worker finished 18 s after the other.)"""
    costs = json.loads(COSTS.read_text()) if COSTS.exists() else {}
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = sorted(files.items(), key=lambda kv: -costs.get(kv[0], NEW_TEST_SECONDS * len(kv[1])))
    items[:] = [item for _, f in order for item in f]


_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """(Under xdist the controller sees every worker's reports.)"""
    path = report.nodeid.split("::")[0]
    _seconds[path] = _seconds.get(path, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.getoption("--write-costs") and not hasattr(session.config, "workerinput"):
        COSTS.write_text(json.dumps({f: round(s, 1) for f, s in sorted(_seconds.items())}, indent=1) + "\n")
