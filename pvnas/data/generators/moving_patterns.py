"""The "moving patterns" generator (docs/design.md §5): classes defined by motion, not appearance.

Each clip is a random texture moved by one of 8 motions. Any single frame is a plain texture,
so only a model that compares frames over time can tell the classes apart: temporal cells have
to earn their place, which is what makes this a meaningful smoke test for a video NAS.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

CLASSES: tuple[str, ...] = (
    "shift_left",
    "shift_right",
    "shift_up",
    "shift_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
)


def _texture(rng: np.random.Generator, size: int) -> torch.Tensor:
    """A smooth random colour texture, (3, size, size) in [0, 1], tileable-ish via blurred noise."""
    coarse = torch.from_numpy(rng.random((1, 3, max(4, size // 6), max(4, size // 6)), dtype=np.float32))
    fine = torch.from_numpy(rng.random((1, 3, max(8, size // 2), max(8, size // 2)), dtype=np.float32))
    tex = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    tex = 0.7 * tex + 0.3 * F.interpolate(fine, size=(size, size), mode="bilinear", align_corners=False)
    lo, hi = tex.amin(), tex.amax()
    return ((tex - lo) / (hi - lo + 1e-6))[0]


def _motion_grid(label: int, t: float, speed: float, size: int) -> torch.Tensor:
    """Sampling grid (size, size, 2) for time step ``t`` of the motion of class ``label``."""
    lin = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    name = CLASSES[label]
    if name.startswith("shift"):
        dx, dy = {"shift_left": (1, 0), "shift_right": (-1, 0), "shift_up": (0, 1), "shift_down": (0, -1)}[name]
        gx, gy = xx + dx * speed * t, yy + dy * speed * t
    elif name.startswith("rotate"):
        angle = (1.0 if name == "rotate_cw" else -1.0) * speed * t * math.pi / 2
        c, s = math.cos(angle), math.sin(angle)
        gx, gy = c * xx - s * yy, s * xx + c * yy
    else:
        scale = math.exp((-1.0 if name == "zoom_in" else 1.0) * speed * t)
        gx, gy = xx * scale, yy * scale
    return torch.stack([gx, gy], dim=-1)


def moving_pattern_clip(
    label: int, seed: int, frames: int = 16, size: int = 64, speed_range: tuple[float, float] = (0.5, 0.9)
) -> np.ndarray:
    """Render one clip of class ``label`` as uint8 ``(frames, size, size, 3)``; same seed -> same clip.

    ``speed_range``: the range the clip's speed is drawn from (a fraction of the frame over the clip).
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    rng = np.random.default_rng(seed)
    tex = _texture(rng, 2 * size)  # twice the frame so motion never runs off the texture
    speed = float(rng.uniform(*speed_range))
    phase = float(rng.uniform(-0.3, 0.3))
    out = []
    for i in range(frames):
        t = phase + i / max(frames - 1, 1)
        grid = _motion_grid(label, t, speed, size) * 0.5  # sample the central half of the texture
        grid = torch.remainder(grid + 1.0, 2.0) - 1.0  # wrap around so shifts never leave the texture
        frame = F.grid_sample(tex[None], grid[None], mode="bilinear", padding_mode="reflection", align_corners=False)
        out.append(frame[0])
    video = torch.stack(out).permute(0, 2, 3, 1)  # T, H, W, 3
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
