"""``pvnas prepare SRC DST``: re-encode a dataset tree so that training reads it fast.

Training at 112-224 px from 340x256 or HD sources spends most of its time decoding pixels it
then throws away, and sparse keyframes (or AVI B-frames, see :mod:`pvnas.data.decode`) force
long decodes per clip. This writes every video of ``SRC`` to the same relative path under
``DST``, scaled down to ``short_side`` (never up), upright (rotation applied), without audio,
as H.264 (VP9 for ``.webm``) with no B-frames and a keyframe every ``keyint`` frames. Frames
keep their order and count (variable-rate sources become constant-rate at their average rate,
which is what frame-index sampling sees anyway). Manifests (``.csv``, ``.json``, ``.txt``) are
copied, so every dataset spec that worked on ``SRC`` works on ``DST``.

Each file is written under a temporary name and renamed when complete, and finished files are
not redone: an interrupted prepare resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np

from pvnas.data.decode import DecodeError, is_video_file, rotate_frames
from pvnas.data.encode import write_video
from pvnas.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = frozenset({".csv", ".json", ".txt"})


def _scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Stored size after scaling the short side down to ``short_side`` (even, for 4:2:0)."""
    short = min(width, height)
    if short <= short_side:
        return width, height
    scale = short_side / short
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _frames(container: av.container.InputContainer, short_side: int) -> Iterator[np.ndarray]:
    """Upright RGB frames in display order, scaled by FFmpeg's area filter while converting."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    size = None
    for frame in container.decode(stream):
        rotation = int(frame.rotation or 0)
        if size is None:  # decide from the displayed size, convert in the stored orientation
            w, h = (frame.width, frame.height) if rotation % 180 == 0 else (frame.height, frame.width)
            w, h = _scaled_size(w, h, short_side)
            size = (w, h) if rotation % 180 == 0 else (h, w)
        array = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
        yield rotate_frames(array[None], rotation)[0] if rotation % 90 == 0 else array


def transcode(
    src: str | os.PathLike, dst: str | os.PathLike, *, short_side: int = 128, keyint: int = 16, crf: int = 23
) -> int:
    """Re-encode one video (see the module docstring); returns its frame count."""
    src, dst = Path(src), Path(dst)
    if not src.is_file() or src.stat().st_size == 0:
        raise DecodeError(src, "missing or empty file")
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")  # same extension: the muxer is chosen by it
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(src)) as container:
            if not container.streams.video:
                raise DecodeError(src, "no video stream (audio-only or not a video)")
            rate = container.streams.video[0].average_rate or container.streams.video[0].guessed_rate
            n = write_video(tmp, _frames(container, short_side), float(rate) if rate else 30.0, keyint=keyint, crf=crf)
        os.replace(tmp, dst)
    except (av.FFmpegError, ValueError) as e:  # write_video raises ValueError when nothing decodes
        raise DecodeError(src, f"cannot re-encode: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _transcode_job(args: tuple[str, str, int, int, int]) -> tuple[str, str | None]:
    src, dst, short_side, keyint, crf = args
    try:
        transcode(src, dst, short_side=short_side, keyint=keyint, crf=crf)
        return src, None
    except DecodeError as e:
        return src, e.reason


def prepare_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    short_side: int = 128,
    keyint: int = 16,
    crf: int = 23,
    workers: int | None = None,
) -> dict:
    """Re-encode every video of the tree ``src`` into ``dst`` and copy its manifests.

    Returns ``{"converted", "already_done", "copied", "failed": [{"path", "reason"}]}``; failed
    videos are left out of ``dst`` with a warning (the datasets then report them missing).
    """
    src, dst = Path(src), Path(dst)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers (encoder processes) must be >= 1, got {workers}")
    if not src.is_dir():
        raise DataError(f"prepare: {src} is not a directory")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise DataError(f"prepare: destination {dst} must be outside the source tree {src}")
    jobs, done, copied = [], 0, 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            s = Path(dirpath) / name
            d = dst / s.relative_to(src)
            if is_video_file(name):
                if d.exists():
                    done += 1
                else:
                    jobs.append((str(s), str(d), short_side, keyint, crf))
            elif s.suffix.lower() in MANIFEST_EXTENSIONS:
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, d)
                copied += 1
    workers = workers or os.cpu_count() or 1
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_transcode_job, jobs, chunksize=4))
    else:
        results = [_transcode_job(job) for job in jobs]
    failed = [{"path": path, "reason": reason} for path, reason in results if reason is not None]
    for item in failed:
        logger.warning("prepare: left out %s: %s", item["path"], item["reason"])
    return {"converted": len(jobs) - len(failed), "already_done": done, "copied": copied, "failed": failed}
