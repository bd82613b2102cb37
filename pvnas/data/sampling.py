"""Where clips come from in a video: frame indices in time, crop boxes in space (paper §4.2).

Pure index arithmetic, no tensors, so that every random choice is drawn from the one
``numpy.random.Generator`` a dataset builds from its sample seed.

Temporal convention: a clip spans ``window`` frames at the source frame rate (the dataset converts the
configured duration with the video's fps) and takes ``frames`` of them evenly (stride
``window / frames``). A video shorter than the window is not
stretched: indices past its end are clamped to the last frame (the clip keeps the source speed
and ends on a still), so the temporal scale the network sees never depends on video length.
"""

from __future__ import annotations

import numpy as np


def _clip_indices(start: int, num_frames: int, frames: int, window: int) -> np.ndarray:
    offsets = np.floor(np.arange(frames) * (window / frames)).astype(np.int64)
    return np.minimum(start + offsets, num_frames - 1)


def train_indices(num_frames: int, frames: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """``frames`` indices evenly spaced in a random ``window``-frame span (clamped for short videos)."""
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    start = int(rng.integers(0, max(num_frames - window, 0) + 1))
    return _clip_indices(start, num_frames, frames, window)


def eval_indices(num_frames: int, frames: int, window: int, clips: int) -> np.ndarray:
    """``(clips, frames)`` indices of ``clips`` windows spread uniformly over the video.

    One clip is the centre window (cheap single-view validation); several go from the first
    window to the last, as in SlowFast/PyTorchVideo multi-view testing.
    """
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    span = max(num_frames - window, 0)
    starts = [span // 2] if clips == 1 else np.round(np.linspace(0, span, clips)).astype(np.int64).tolist()
    return np.stack([_clip_indices(s, num_frames, frames, window) for s in starts])


def random_crop_box(height: int, width: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left ``(y, x)`` of a uniformly random ``crop`` x ``crop`` box inside the frame."""
    return int(rng.integers(0, max(height - crop, 0) + 1)), int(rng.integers(0, max(width - crop, 0) + 1))


def eval_crop_boxes(height: int, width: int, crop: int, crops: int) -> list[tuple[int, int]]:
    """Top-left corners of ``crops`` boxes along the long side (left/centre/right or top/centre/bottom).

    The short side is centred; ``crops=1`` is the centre crop.
    """
    cy, cx = max(height - crop, 0) // 2, max(width - crop, 0) // 2
    if crops == 1:
        return [(cy, cx)]
    along = np.round(np.linspace(0, max(max(height, width) - crop, 0), crops)).astype(np.int64).tolist()
    return [(cy, a) for a in along] if width >= height else [(a, cx) for a in along]
