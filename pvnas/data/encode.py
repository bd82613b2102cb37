"""Writing videos with PyAV: the demo dataset, ``pvnas prepare`` and test fixtures share this writer.

Defaults favour what training reads well: H.264 (VP9 for ``.webm``), no B-frames and a short
keyframe interval, so that :mod:`pvnas.data.decode` can seek close to any window and even an
AVI stays seekable.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction

import av
import numpy as np


def _available(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:  # av raises UnknownCodecError (a ValueError) or FFmpegError depending on build
        return False


def default_codec(path: str | os.PathLike) -> str:
    """VP9 for ``.webm``, else H.264 when this FFmpeg build has libx264, else MPEG-4 part 2."""
    if os.fspath(path).lower().endswith(".webm"):
        return "libvpx-vp9"
    return "libx264" if _available("libx264") else "mpeg4"


def _pix_fmt(codec: str, width: int, height: int) -> str:
    if codec == "mjpeg":
        return "yuvj420p"
    if codec == "libx264" and (width % 2 or height % 2):
        return "yuv444p"  # 4:2:0 needs even sizes in x264
    return "yuv420p"


def _codec_options(codec: str, crf: int, bframes: int) -> dict[str, str]:
    if codec == "libx264":
        return {"crf": str(crf), "preset": "veryfast", "bf": str(bframes)}
    if codec.startswith("libvpx"):
        return {"crf": str(crf + 8), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
    return {}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    codec: str | None = None,
    keyint: int = 16,
    bframes: int = 0,
    crf: int = 23,
    pix_fmt: str | None = None,
    rotation: int = 0,
    times: Sequence[float] | None = None,
    options: dict[str, str] | None = None,
) -> int:
    """Encode uint8 RGB ``(H, W, 3)`` frames into ``path`` (container from the extension).

    ``times`` (seconds, increasing) gives a variable frame rate; ``rotation`` writes a display
    matrix (counter-clockwise degrees) as phones do. Returns the number of frames written.
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{os.fspath(path)}: no frames to write")
    height, width = first.shape[:2]
    codec = codec or default_codec(path)
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(
            codec, rate=rate, options={**_codec_options(codec, crf, bframes), **(options or {})}
        )
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or _pix_fmt(codec, width, height)
        stream.codec_context.gop_size = keyint
        stream.codec_context.max_b_frames = bframes
        time_base = Fraction(1, 1000) if times is not None else 1 / rate
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i, array in enumerate(itertools.chain([first], it)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            frame.pts = round(times[i] * 1000) if times is not None else i
            frame.time_base = time_base
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count
