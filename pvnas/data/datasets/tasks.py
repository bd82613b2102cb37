"""``task:NAME[?seed=S&train=N]``: a task of the suite (:mod:`pvnas.data.generators.task_suite`) written once as mp4 files in
``$PVNAS_CACHE/task-v<VERSION>/<NAME>-s<S>`` (``VERSION``: the task's own, bumped when its clips or split change)
and read like user data (a ``folder:`` layout).

Clips are stored in 4:4:4 colour at a high quality (crf 12), so the fine detail and noise a task is made of
survive the encoder.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pvnas.data.datasets.generated import cache_dir, ensure_tree
from pvnas.data.generators.task_suite import FPS, get_task, render_clip, task_of
from pvnas.errors import ConfigError

VIDEO_OPTIONS = {"pix_fmt": "yuv444p", "crf": 12}


def parse_seed(options: dict[str, str]) -> int:
    """The ``?seed=S`` option of a task spec (default 0): another seed, another draw of the same task."""
    return _non_negative(options, "seed", 0)


def parse_options(options: dict[str, str]) -> dict[str, int | None]:
    """``?seed=S&train=N`` of a task spec: the draw, and N training clips per class instead of the task's (the
    search-budget study varies the data a search sees)."""
    train = _non_negative(options, "train", 0) if "train" in options else None
    if train == 0:
        raise ConfigError("task spec: train=N needs N >= 1 training clips per class")
    return {"seed": parse_seed(options), "train_per_class": train}


def _non_negative(options: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(options.get(key, str(default)))
    except ValueError:
        raise ConfigError(f"task {key} must be a non-negative integer, got {options[key]!r}") from None
    if value < 0:
        raise ConfigError(f"task {key} must be a non-negative integer, got {value}")
    return value


def ensure_task(name: str, seed: int = 0, root: Path | None = None, train_per_class: int | None = None) -> Path:
    """The folder tree of task ``name`` drawn with ``seed`` (``train_per_class`` training clips per class if given),
    written on first use."""
    task = get_task(name)
    if train_per_class is not None:
        task = dataclasses.replace(task, train_per_class=train_per_class)
    suffix = "" if train_per_class is None else f"-train{train_per_class}"
    final = root if root is not None else cache_dir() / f"task-v{task.version}" / f"{name}-s{seed}{suffix}"
    return ensure_tree(final, task.classes, lambda label, s: render_clip(task, label, s),
                       {"train": task.train_per_class, "val": task.val_per_class}, FPS, seed=seed,
                       video_options=VIDEO_OPTIONS)


def study_slug(spec: str) -> str:
    """A folder name for the data of a study's cached units. A suite task's names its version (``task_order_v4``),
    so the units of a task whose clips or split changed are redone, never reused."""
    slug, task = re.sub(r"[:/?&]", "_", spec).replace("=", ""), task_of(spec)
    return f"{slug}_v{task.version}" if task else slug
