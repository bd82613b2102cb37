"""The decoder interface every backend implements, and what it returns: exact frames by index.

:class:`Decoder` is the one seam between datasets and backends (:mod:`~pvnas.data.decode.pyav`, the default,
and :mod:`~pvnas.data.decode.decord`); a damaged file is a :class:`DecodeError`, which datasets turn into a skip.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from pvnas.errors import DataError

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp", ".ts"}
)


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether a file name looks like a video (by extension; content is checked when decoding)."""
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder knows about a video; ``width``/``height`` are those of the frames it returns."""

    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int  # degrees counter-clockwise applied to the stored frames (display matrix)
    duration: float  # seconds


@dataclass(frozen=True)
class VideoScan:
    """What a sequential decode of a whole file finds (:meth:`PyAVDecoder.scan`): how damaged it is."""

    header_frames: int  # the frame count the container header claims (0: it does not say)
    header_seconds: float  # the duration the header claims for the video (or the file); 0: unknown
    packets: int  # video packets in the file: the frames the index (and ``info``) counts
    decoded: int  # frames a decode from the start outputs, going on past errors
    corrupt: int  # decoded frames FFmpeg flags as corrupt (errors it concealed)
    errors: int  # packets or demux steps that raised an error
    first_error: str | None


class DecodeError(DataError):
    """One video cannot be read; datasets turn this into a :class:`~pvnas.data.loader.Skipped`."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path, self.reason = os.fspath(path), reason


class Decoder(Protocol):
    """A video backend: ``read`` returns exactly the requested frames, in the requested order."""

    name: str

    def info(self, path: str | os.PathLike) -> VideoInfo: ...

    def read(self, path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
        """uint8 ``(len(indices), H, W, 3)`` RGB; indices may repeat and be unsorted."""
        ...



def rotate_frames(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation to ``(N, H, W, 3)`` frames (multiples of 90 only)."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames
