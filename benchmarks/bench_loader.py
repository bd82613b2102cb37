"""Clips per second of the seek-decoding loader vs decoding whole videos, on 10-second videos.

Usage: python benchmarks/bench_loader.py [--videos 6] [--clips 24] [--rounds 3] [--size 320x240] [--keyint 48]

Writes synthetic 10 s, 30 fps videos (H.264, B-frames, a keyframe every ``keyint`` frames: a
typical camera/YouTube encode), then times the search-preset clip pipeline (64-frame window,
8 frames, random scale 128-164, crop 112) with three decoders:

* ``seek``: :class:`pvnas.data.decode.PyAVDecoder` (demux-only index pass, seek, decode to the
  last needed frame), cold (no index cache: every clip pays the index pass, as in a first
  epoch) and warm (index cached, as in later epochs with persistent workers);
* ``full_decode``: decode the whole video to RGB, then index (what ``read_video``-style loaders do);
* ``full_decode_lazy_rgb``: decode the whole video, converting only the needed frames to RGB.

Each rate is the best of ``rounds`` interleaved rounds (robust to other load on the machine).
Prints one JSON object; ``speedup`` is seek (cold, the conservative number) over full_decode.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from pvnas.config import ClipConfig
from pvnas.data.datasets.video import VideoDataset
from pvnas.data.decode import PyAVDecoder
from pvnas.data.encode import write_video


class FullDecoder(PyAVDecoder):
    """Baseline: decode every frame of the video, then pick the requested ones."""

    def __init__(self, convert_all: bool = True) -> None:
        super().__init__()
        self.convert_all = convert_all

    def __getstate__(self) -> dict:
        return {"convert_all": self.convert_all}

    def read(self, path, indices):
        wanted = set(int(i) for i in indices)
        reformatter = VideoReformatter()  # same conversion path as the seek decoder: compare decoding only
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            frames = {
                i: reformatter.reformat(f, format="rgb24").to_ndarray()
                for i, f in enumerate(c.decode(stream))
                if self.convert_all or i in wanted
            }
        return torch.from_numpy(np.stack([frames[int(i)] for i in indices]))


def make_videos(root: Path, count: int, width: int, height: int, keyint: int, frames: int = 300) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for v in range(count):
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]

        def gen(v=v, texture=texture):
            for i in range(frames):
                frame = np.roll(texture, (i * (v + 1)) % width, axis=1).copy()
                y, x = (3 * i) % (height - 40), (5 * i) % (width - 40)
                frame[y : y + 40, x : x + 40] = 255 - frame[y : y + 40, x : x + 40]
                yield frame

        path = root / f"video_{v}.mp4"
        write_video(path, gen(), 30, keyint=keyint, bframes=2)
        paths.append(path)
    return paths


def clips_per_second(dataset: VideoDataset, clips: int, seed0: int = 0) -> float:
    start = time.perf_counter()
    for k in range(clips):
        item = dataset[(k % len(dataset), seed0 + k)]
        assert not hasattr(item, "reason"), item
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--keyint", type=int, default=48)
    parser.add_argument("--dir", type=Path, default=None, help="keep the generated videos here")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    torch.set_num_threads(1)  # like a loader worker
    root = args.dir or Path(tempfile.mkdtemp(prefix="pvnas-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = make_videos(root, args.videos, width, height, args.keyint)
    gen_s = time.perf_counter() - t0
    samples = [(str(p), 0) for p in paths]
    clip = ClipConfig()  # search preset: 8 of 64 frames, scale 128-164, crop 112

    def dataset(decoder) -> VideoDataset:
        return VideoDataset(samples, ["x"], clip, decoder=decoder)

    n = args.clips
    modes = {
        "seek_cold": dataset(PyAVDecoder(cache_size=0)),
        "seek_warm": dataset(PyAVDecoder()),
        "full": dataset(FullDecoder(convert_all=True)),
        "lazy": dataset(FullDecoder(convert_all=False)),
    }
    clips_per_second(modes["seek_warm"], args.videos)  # fill the index cache
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for m, ds in modes.items():
            rates[m].append(clips_per_second(ds, n, seed0=1000 * r))
    seek_cold, seek_warm, full, lazy = (max(rates[m]) for m in modes)
    result = {
        "videos": args.videos,
        "video": f"{width}x{height}, 30 fps, 300 frames (10 s), H.264 with B-frames, keyframe every {args.keyint}",
        "clip": "8 frames from a 64-frame window, scale 128-164, crop 112",
        "clips_timed": f"{n} per round, best of {args.rounds} rounds",
        "seek_cold_clips_per_s": round(seek_cold, 2),
        "seek_warm_clips_per_s": round(seek_warm, 2),
        "full_decode_clips_per_s": round(full, 2),
        "full_decode_lazy_rgb_clips_per_s": round(lazy, 2),
        "speedup": round(seek_cold / full, 2),
        "speedup_warm": round(seek_warm / full, 2),
        "speedup_vs_lazy_rgb": round(seek_cold / lazy, 2),
        "generate_s": round(gen_s, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
