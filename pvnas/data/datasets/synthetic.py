"""``synthetic[:N]``: the moving-patterns generator held in memory, for tests and smoke runs."""

from __future__ import annotations

import numpy as np
import torch

from pvnas.config import ClipConfig
from pvnas.data.sampling import eval_crop_boxes, eval_indices
from pvnas.data.generators.moving_patterns import CLASSES, moving_pattern_clip
from pvnas.data.transforms import crop, normalize


class SyntheticDataset(torch.utils.data.Dataset):
    """``size`` clips per split, labels cycling over the 8 motion classes, rendered on demand.

    ``train`` picks the split's content; ``views`` (default ``"train"`` for the training split,
    ``"single"`` otherwise) has the meaning of :class:`~pvnas.data.datasets.video.VideoDataset`.
    Train items get a random temporal offset and crop from the sample seed; other views are
    deterministic. Left/right flips would swap shift_left/right, so no flips.
    """

    classes = list(CLASSES)

    def __init__(self, size: int, clip: ClipConfig, *, train: bool, seed: int = 0, views: str | None = None) -> None:
        self.size, self.clip, self.train = size, clip, train
        self.views = views or ("train" if train else "single")
        self.base_seed = seed * 1_000_003 + (0 if train else 500_009)
        self.render = max(clip.crop, clip.scale[0])

    def __len__(self) -> int:
        return self.size

    def label(self, index: int) -> int:
        return index % len(CLASSES)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        frames, c = self.clip.frames, self.clip.crop
        video = torch.from_numpy(
            moving_pattern_clip(self.label(index), self.base_seed + index, frames=2 * frames, size=self.render)
        )  # (2 * frames, H, W, 3) uint8
        if self.views == "train":
            rng = np.random.default_rng(seed)
            start = int(rng.integers(0, frames + 1))
            y = int(rng.integers(0, self.render - c + 1))
            x = int(rng.integers(0, self.render - c + 1))
            return normalize(crop(video[start : start + frames], y, x, c)), self.label(index), index
        clips, crops = (self.clip.test_clips, self.clip.test_crops) if self.views == "multi" else (1, 1)
        boxes = eval_crop_boxes(self.render, self.render, c, crops)
        views = torch.stack(
            [
                normalize(crop(video[torch.from_numpy(t)], y, x, c))
                for t in eval_indices(2 * frames, frames, frames, clips)
                for y, x in boxes
            ]
        )
        return (views if self.views == "multi" else views[0]), self.label(index), index
