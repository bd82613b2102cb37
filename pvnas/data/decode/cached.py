"""Whole decoded videos kept in memory: on a small dataset every epoch after the first decodes nothing.

A training clip needs a few frames at random positions, so the cache holds all of a video's frames and serves
any clip from them. Videos that do not fit (the cap, or one video over 1/64 of it) are read as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from pvnas.data.decode.decoder import DecodeError, Decoder, VideoInfo


class CachedDecoder:
    """A :class:`Decoder` that decodes each video whole once (up to ``max_bytes`` of uint8 frames in all) and
    indexes the stored frames afterwards; the frames are those the wrapped decoder returns for the same indices.

    Each process (loader worker) fills its own copy. A file that changes on disk (size or mtime) is decoded
    again; a video whose whole decode fails (a damaged tail) is read as before, frames as asked.
    """

    def __init__(self, inner: Decoder, max_bytes: int) -> None:
        self.inner, self.max_bytes = inner, max_bytes
        self.name = inner.name
        self.videos: dict[tuple[str, int, int], torch.Tensor] = {}
        self.bytes = 0

    def __getstate__(self) -> dict:
        return {"inner": self.inner, "max_bytes": self.max_bytes}  # workers start with an empty cache

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def info(self, path: str | os.PathLike) -> VideoInfo:
        return self.inner.info(path)

    def read(self, path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
        info = self.inner.info(path)  # (raises DecodeError for a missing or unreadable file, as a read does)
        want = np.asarray(indices, dtype=np.int64).reshape(-1)
        if want.size == 0 or want.min() < 0 or want.max() >= info.num_frames:
            return self.inner.read(path, indices)  # (its error names the file and the valid range)
        st = os.stat(path)
        key = (os.fspath(path), st.st_size, st.st_mtime_ns)
        frames = self.videos.get(key)
        if frames is None:
            size = info.num_frames * info.height * info.width * 3
            if size > self.max_bytes // 64 or self.bytes + size > self.max_bytes:
                return self.inner.read(path, indices)
            try:
                frames = self.inner.read(path, range(info.num_frames))
            except DecodeError:
                return self.inner.read(path, indices)
            self.videos[key] = frames
            self.bytes += frames.nbytes
        return frames[torch.from_numpy(want)]
