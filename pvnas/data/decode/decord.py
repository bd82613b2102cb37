"""The optional Decord backend (``pip install decord``, ``?decoder=decord``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from pvnas.data.decode.decoder import DecodeError, VideoInfo
from pvnas.errors import ConfigError


class DecordDecoder:
    """Optional backend (``pip install decord``): fast random access for mp4/mkv; applies rotation itself.

    Its frame counts come from the container index, so for AVI with B-frames prefer ``pyav``.
    ``rotation`` in its :class:`VideoInfo` is always 0 (decord hides the display matrix).
    """

    name = "decord"

    def __init__(self, threads: int = 0) -> None:
        try:
            import decord
        except ImportError:
            raise ConfigError("decoder 'decord' needs `pip install decord`; or use decoder 'pyav'") from None
        self._decord, self.threads = decord, threads

    def __getstate__(self) -> dict:
        return {"threads": self.threads}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _reader(self, path: str):
        if not os.path.exists(path):
            raise DecodeError(path, "file not found")
        if os.path.getsize(path) == 0:
            raise DecodeError(path, "empty file (0 bytes)")
        try:
            return self._decord.VideoReader(path, num_threads=self.threads)
        except Exception as e:  # decord raises its own DECORDError (a RuntimeError) or RuntimeError
            raise DecodeError(path, f"not a readable video: {e}".splitlines()[0]) from None

    def info(self, path: str | os.PathLike) -> VideoInfo:
        path = os.fspath(path)
        vr = self._reader(path)
        n, fps = len(vr), float(vr.get_avg_fps() or 30.0)
        h, w = vr[0].shape[:2]
        return VideoInfo(num_frames=n, fps=fps, width=w, height=h, rotation=0, duration=n / fps)

    def read(self, path: str | os.PathLike, indices: Sequence[int]) -> torch.Tensor:
        path = os.fspath(path)
        vr = self._reader(path)
        idx = [int(i) for i in indices]
        if not idx or min(idx) < 0 or max(idx) >= len(vr):
            raise ValueError(f"{path}: frame indices must be in [0, {len(vr)}), got {idx[:5]}...")
        try:
            batch = vr.get_batch(idx).asnumpy()
        except Exception as e:
            raise DecodeError(path, f"decoding failed: {e}".splitlines()[0]) from None
        return torch.from_numpy(np.ascontiguousarray(batch[..., :3]))
