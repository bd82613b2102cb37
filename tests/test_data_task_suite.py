"""The task suite: deterministic clips of every task, its spec through the normal decode path, its sizes."""

import numpy as np
import pytest

from pvnas.config import SEARCH_PRESETS
from pvnas.data import build_dataset
from pvnas.data.datasets.video import VideoDataset
from pvnas.data.generators.task_suite import FRAMES, SIZE, TASKS, get_task, render_clip
from pvnas.estimate.datasets import dataset_of
from pvnas.errors import ConfigError
from pvnas.space.ops import CELL_KINDS


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_renders_deterministic_distinct_clips(name):
    task = TASKS[name]
    assert len(set(task.classes)) == len(task.classes) >= 4 and set(task.needs) <= set(CELL_KINDS) and task.demands
    clip = render_clip(task, 1, 7)
    assert clip.shape == (FRAMES, SIZE, SIZE, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, render_clip(task, 1, 7))  # same seed, same clip
    assert not np.array_equal(clip, render_clip(task, 1, 8)) and not np.array_equal(clip, render_clip(task, 0, 7))
    assert clip.std() > 10  # not blank
    with pytest.raises(ValueError):
        render_clip(task, len(task.classes), 0)


def test_motion_tasks_move_and_appearance_shows_in_one_frame():
    """Consecutive frames differ where a class is motion; the first frame differs between appearance classes."""
    for name in ("motion", "order", "fine_motion", "appearance_motion"):
        clip = render_clip(TASKS[name], 0, 3).astype(float)
        assert np.abs(clip[-1] - clip[0]).mean() > np.abs(clip[1] - clip[0]).mean() * 0.5 > 0


def test_task_spec_is_written_once_and_read_like_user_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PVNAS_CACHE", str(tmp_path))
    clip = SEARCH_PRESETS["demo"].clip
    train = build_dataset("task:order", "train", clip)
    task = get_task("order")
    assert isinstance(train, VideoDataset) and train.classes == sorted(task.classes)
    assert len(train) == task.train_size and len(build_dataset("task:order", "val", clip)) == task.val_size
    assert train.flip is False  # left and right are different classes
    x, label, _ = train[(3, 11)]
    assert x.shape == (3, clip.frames, clip.crop, clip.crop)
    assert dataset_of("task:appearance") == (TASKS["appearance"].train_size, "task:appearance (train split)", 8)
    assert not (tmp_path / "task-v1" / "appearance-s0").exists()  # sizes known without writing it
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        build_dataset("task:nope", "train", clip)
    with pytest.raises(ConfigError, match="seed"):
        build_dataset("task:order?seed=x", "train", clip)
