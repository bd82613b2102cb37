"""``task:NAME[?seed=S]``: a task of the suite (:mod:`pvnas.data.generators.task_suite`) written once as mp4 files in
``$PVNAS_CACHE/task-v<VERSION>/<NAME>-s<S>`` and read like user data (a ``folder:`` layout).

Clips are stored in 4:4:4 colour at a high quality (crf 12), so the fine detail and noise a task is made of
survive the encoder.
"""

from __future__ import annotations

from pathlib import Path

from pvnas.data.datasets.generated import cache_dir, ensure_tree
from pvnas.data.generators.task_suite import FPS, get_task, render_clip
from pvnas.errors import ConfigError

VERSION = 2  # bump when a task's generator or size changes: a new cache directory
VIDEO_OPTIONS = {"pix_fmt": "yuv444p", "crf": 12}


def parse_seed(options: dict[str, str]) -> int:
    """The ``?seed=S`` option of a task spec (default 0): another seed, another draw of the same task."""
    try:
        seed = int(options.get("seed", "0"))
    except ValueError:
        raise ConfigError(f"task seed must be a non-negative integer, got {options['seed']!r}") from None
    if seed < 0:
        raise ConfigError(f"task seed must be a non-negative integer, got {seed}")
    return seed


def ensure_task(name: str, seed: int = 0, root: Path | None = None) -> Path:
    """The folder tree of task ``name`` drawn with ``seed``, written on first use."""
    task = get_task(name)
    final = root if root is not None else cache_dir() / f"task-v{VERSION}" / f"{name}-s{seed}"
    return ensure_tree(final, task.classes, lambda label, s: render_clip(task, label, s),
                       {"train": task.train_per_class, "val": task.val_per_class}, FPS, seed=seed,
                       video_options=VIDEO_OPTIONS)
