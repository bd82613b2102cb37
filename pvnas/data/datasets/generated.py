"""Generated datasets written once as real video files, then read like user data (``demo``, ``task:NAME``).

Going through files (not tensors in memory) means generated data exercises exactly the decode, sample and
transform path of a real dataset. A tree is a ``folder:`` layout under ``$PVNAS_CACHE`` (default
``~/.cache/pvnas``), deterministic by seed, built in a temporary directory and renamed into place: an
interrupted build leaves no half dataset, and two processes racing to build it both end up reading one
complete copy.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from pvnas.data.encode import write_video

logger = logging.getLogger(__name__)

Render = Callable[[int, int], np.ndarray]  # (label, clip seed) -> uint8 (T, H, W, 3)


def cache_dir() -> Path:
    """Where pvnas keeps generated data: ``$PVNAS_CACHE`` or ``~/.cache/pvnas``."""
    return Path(os.environ.get("PVNAS_CACHE") or Path.home() / ".cache" / "pvnas")


def clip_seed(seed: int, split: str, label: int, i: int) -> int:
    """The seed of clip ``i`` of class ``label`` in ``split``: independent streams per split, class and clip."""
    return int(np.random.SeedSequence([seed, 0 if split == "train" else 1, label, i]).generate_state(1)[0])


def ensure_tree(
    final: Path,
    classes: Sequence[str],
    render: Render,
    per_split: dict[str, int],
    fps: float,
    *,
    seed: int = 0,
    video_options: dict | None = None,
) -> Path:
    """Return the tree at ``final``, writing ``per_split[split]`` clips per class (``render(label, clip_seed)``)
    as mp4 files if it is not there yet. ``video_options`` go to :func:`~pvnas.data.encode.write_video`."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    t0, threads = time.perf_counter(), torch.get_num_threads()
    logger.info("writing %d generated clips to %s", len(classes) * sum(per_split.values()), final)
    torch.set_num_threads(1)  # tiny tensors: thread start-up costs more than it saves (7x here)
    try:
        for split, per_class in per_split.items():
            for label, name in enumerate(classes):
                (tmp / split / name).mkdir(parents=True)
                for i in range(per_class):
                    video = render(label, clip_seed(seed, split, label, i))
                    write_video(tmp / split / name / f"{name}_{i:03d}.mp4", video, fps,
                                **{"keyint": 8, "options": {"threads": "1"}, **(video_options or {})})
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generated dataset ready in %.1f s", time.perf_counter() - t0)
    return final
