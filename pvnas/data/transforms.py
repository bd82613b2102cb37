"""Clip transforms in plain torch (no torchvision): uint8 until the final normalisation."""

from __future__ import annotations

import torch

MEAN = (0.45, 0.45, 0.45)  # Kinetics RGB statistics, as in PyTorchVideo / SlowFast
STD = (0.225, 0.225, 0.225)


def normalize(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> float ``(3, T, H, W)`` with Kinetics mean/std."""
    x = clip.permute(3, 0, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1, 1)
    return (x - mean) / std
