"""``demo``: the moving-patterns generator written once as real mp4 files in the cache, then read like user
data (see :mod:`pvnas.data.datasets.generated`), in ``$PVNAS_CACHE/demo-v<VERSION>``."""

from __future__ import annotations

import os
from pathlib import Path

from pvnas.data.datasets.generated import cache_dir, ensure_tree
from pvnas.data.generators.moving_patterns import CLASSES, moving_pattern_clip

VERSION = 2  # bump when the generator or the defaults below change: a new cache directory
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 10
FRAMES, SIZE, FPS = 32, 64, 15
FLIP = False  # left/right and cw/ccw are different classes


def ensure_demo(
    root: str | os.PathLike | None = None,
    *,
    train_per_class: int = TRAIN_PER_CLASS,
    val_per_class: int = VAL_PER_CLASS,
    frames: int = FRAMES,
    size: int = SIZE,
    seed: int = 0,
) -> Path:
    """Return the demo tree at ``root`` (default ``cache_dir()/demo-v<VERSION>``), writing it if absent."""
    final = Path(root) if root is not None else cache_dir() / f"demo-v{VERSION}"
    return ensure_tree(final, CLASSES, lambda label, s: moving_pattern_clip(label, s, frames=frames, size=size),
                       {"train": train_per_class, "val": val_per_class}, FPS, seed=seed)
