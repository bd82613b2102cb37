"""Clip transforms in plain torch (no torchvision): uint8 until the final normalisation.

Clips travel as uint8 ``(T, H, W, 3)`` — what the decoder returns — through resizing, cropping
and flipping (4x less memory than float, and torch's uint8 antialiased bilinear resize is the
fastest CPU path); :func:`normalize` is the only step that makes floats ``(3, T, H, W)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pvnas.config import ClipConfig
from pvnas.data.sampling import eval_crop_boxes, random_crop_box

MEAN = (0.45, 0.45, 0.45)  # Kinetics RGB statistics, as in PyTorchVideo / SlowFast
STD = (0.225, 0.225, 0.225)


def normalize(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, H, W)`` with Kinetics mean/std."""
    x = clip.permute(3, 0, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1, 1)
    return (x - mean) / std


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``(T, H, W, 3)`` so its short side is ``size``, keeping the aspect ratio.

    Bilinear with antialiasing, so that downscaling a large video does not alias.
    """
    t, h, w, _ = clip.shape
    if min(h, w) == size:
        return clip
    if h <= w:
        out_h, out_w = size, max(1, round(w * size / h))
    else:
        out_h, out_w = max(1, round(h * size / w)), size
    x = clip.permute(0, 3, 1, 2)  # (T, 3, H, W) view, channels-last in memory: the fast uint8 kernel
    y = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    return y.permute(0, 2, 3, 1)


def crop(clip: torch.Tensor, y: int, x: int, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` box at ``(y, x)`` of a ``(T, H, W, 3)`` clip."""
    return clip[:, y : y + size, x : x + size]


def hflip(clip: torch.Tensor) -> torch.Tensor:
    """Mirror a ``(T, H, W, 3)`` clip left-right."""
    return clip.flip(2)


def train_transform(clip: torch.Tensor, cfg: ClipConfig, rng: np.random.Generator, *, flip: bool) -> torch.Tensor:
    """Random short-side scale in ``cfg.scale``, random ``cfg.crop`` crop, optional flip, normalise.

    Draws from ``rng`` in a fixed order (scale, crop, flip) so a sample seed fixes the clip.
    """
    lo, hi = cfg.scale
    clip = resize_short_side(clip, int(rng.integers(lo, hi + 1)))
    y, x = random_crop_box(clip.shape[1], clip.shape[2], cfg.crop, rng)
    clip = crop(clip, y, x, cfg.crop)
    if flip and rng.random() < 0.5:
        clip = hflip(clip)
    return normalize(clip)


def eval_transform(clip: torch.Tensor, cfg: ClipConfig, crops: int) -> torch.Tensor:
    """Resize the short side to ``cfg.scale[0]`` and take ``crops`` crops along the long side.

    Returns float ``(crops, 3, T, crop, crop)``; ``crops=1`` is the centre crop.
    """
    clip = resize_short_side(clip, cfg.scale[0])
    boxes = eval_crop_boxes(clip.shape[1], clip.shape[2], cfg.crop, crops)
    return torch.stack([normalize(crop(clip, y, x, cfg.crop)) for y, x in boxes])
