"""``demo``: the moving-patterns generator written once as real mp4 files, then read like user data.

Going through files (not tensors in memory) means the demo exercises exactly the decode, sample
and transform path of a real dataset. The tree is a ``folder:`` layout in
``$PVNAS_CACHE/demo-v<VERSION>`` (default ``~/.cache/pvnas``), deterministic by seed, built in a
temporary directory and renamed into place: a run that is interrupted leaves no half dataset,
and two runs racing to build it both end up reading one complete copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pvnas.data.encode import write_video
from pvnas.data.synthetic import CLASSES, moving_pattern_clip

logger = logging.getLogger(__name__)

VERSION = 1  # bump when the generator or the defaults below change: a new cache directory
TRAIN_PER_CLASS, VAL_PER_CLASS = 40, 10
FRAMES, SIZE, FPS = 32, 64, 15
FLIP = False  # left/right and cw/ccw are different classes


def cache_dir() -> Path:
    """Where pvnas keeps generated data: ``$PVNAS_CACHE`` or ``~/.cache/pvnas``."""
    return Path(os.environ.get("PVNAS_CACHE") or Path.home() / ".cache" / "pvnas")


def _clip_seed(seed: int, split: str, label: int, i: int) -> int:
    return int(np.random.SeedSequence([seed, 0 if split == "train" else 1, label, i]).generate_state(1)[0])


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
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    t0, threads = time.perf_counter(), torch.get_num_threads()
    logger.info("writing the demo dataset (%d clips) to %s", len(CLASSES) * (train_per_class + val_per_class), final)
    torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves (7x here)
    try:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for label, name in enumerate(CLASSES):
                (tmp / split / name).mkdir(parents=True)
                for i in range(per_class):
                    video = moving_pattern_clip(label, _clip_seed(seed, split, label, i), frames=frames, size=size)
                    path = tmp / split / name / f"{name}_{i:03d}.mp4"
                    write_video(path, video, FPS, keyint=8, options={"threads": "1"})
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("demo dataset ready in %.1f s", time.perf_counter() - t0)
    return final
