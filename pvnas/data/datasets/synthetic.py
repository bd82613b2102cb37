"""``synthetic[:N]``: the moving-patterns generator held in memory, for tests and smoke runs."""

from __future__ import annotations

import numpy as np
import torch

from pvnas.config import ClipConfig
from pvnas.data.synthetic import CLASSES, moving_pattern_clip
from pvnas.data.transforms import normalize


class SyntheticDataset(torch.utils.data.Dataset):
    """``size`` clips per split, labels cycling over the 8 motion classes, rendered on demand.

    Train items get a random temporal offset and flip-free crop jitter from the sample seed;
    test items are deterministic. Left/right flips would swap shift_left/right, so no flips.
    """

    classes = list(CLASSES)

    def __init__(self, size: int, clip: ClipConfig, *, train: bool, seed: int = 0) -> None:
        self.size, self.clip, self.train = size, clip, train
        self.base_seed = seed * 1_000_003 + (0 if train else 500_009)
        self.render = max(clip.crop, clip.scale[0])

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        return index % len(CLASSES)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        frames = self.clip.frames
        video = moving_pattern_clip(self.label(index), self.base_seed + index, frames=2 * frames, size=self.render)
        rng = np.random.default_rng(seed)
        start = int(rng.integers(0, frames + 1)) if self.train else frames // 2
        clip = torch.from_numpy(video[start : start + frames])  # T, H, W, 3 uint8
        c = self.clip.crop
        y = int(rng.integers(0, self.render - c + 1)) if self.train else (self.render - c) // 2
        x = int(rng.integers(0, self.render - c + 1)) if self.train else (self.render - c) // 2
        clip = clip[:, y : y + c, x : x + c]
        return normalize(clip), self.label(index), index
