"""Clip sampling: random train windows, uniform test clips, crop boxes along the long side."""

from __future__ import annotations

import numpy as np
import pytest

from pvnas.data.sampling import eval_crop_boxes, eval_indices, random_crop_box, train_indices


def test_train_window_is_random_strided_and_in_range():
    starts = set()
    for seed in range(50):
        idx = train_indices(300, 8, 64, np.random.default_rng(seed))
        assert idx.tolist() == (idx[0] + 8 * np.arange(8)).tolist()  # 8 frames evenly in 64
        assert 0 <= idx[0] and idx[-1] <= 299 and idx[0] <= 300 - 64
        starts.add(int(idx[0]))
    assert len(starts) > 30
    assert np.array_equal(
        train_indices(300, 8, 64, np.random.default_rng(3)), train_indices(300, 8, 64, np.random.default_rng(3))
    )


def test_non_divisible_window_and_short_videos_clamp():
    assert (
        train_indices(100, 3, 8, np.random.default_rng(0)).max()
        - train_indices(100, 3, 8, np.random.default_rng(0)).min()
        <= 7
    )
    short = train_indices(20, 8, 64, np.random.default_rng(0))
    assert short.tolist() == [0, 8, 16, 19, 19, 19, 19, 19]  # source speed kept, tail clamped
    assert train_indices(1, 4, 8, np.random.default_rng(0)).tolist() == [0, 0, 0, 0]


def test_eval_clips_cover_the_video_uniformly():
    idx = eval_indices(300, 8, 64, 10)
    assert idx.shape == (10, 8)
    assert idx[0, 0] == 0 and idx[-1, -1] == 300 - 64 + 56
    assert np.all(np.diff(idx[:, 0]) > 0)
    centre = eval_indices(300, 8, 64, 1)
    assert centre.tolist() == [(118 + 8 * np.arange(8)).tolist()]
    assert eval_indices(10, 4, 8, 3).tolist() == [[0, 2, 4, 6], [1, 3, 5, 7], [2, 4, 6, 8]]
    assert eval_indices(5, 4, 8, 2).max() == 4


def test_crop_boxes():
    assert eval_crop_boxes(128, 170, 112, 3) == [(8, 0), (8, 29), (8, 58)]  # landscape: left/centre/right
    assert eval_crop_boxes(170, 128, 112, 3) == [(0, 8), (29, 8), (58, 8)]  # portrait: top/centre/bottom
    assert eval_crop_boxes(128, 170, 112, 1) == [(8, 29)]
    rng = np.random.default_rng(0)
    boxes = {random_crop_box(128, 170, 112, rng) for _ in range(100)}
    assert all(0 <= y <= 16 and 0 <= x <= 58 for y, x in boxes) and len(boxes) > 50


def test_needs_a_frame():
    with pytest.raises(ValueError):
        train_indices(0, 8, 64, np.random.default_rng(0))
