"""The "moving patterns" generator (docs/design.md §5): classes defined by motion, not appearance.

Each clip is a random texture moved by one of 8 motions. No single frame tells the class: the texture is a
sum of plane waves with random directions, wavelengths and phases (a stationary, isotropic random field,
evaluated exactly at every pixel: no grid whose axes would show the axis of a shift or a rotation, no seam
where it wraps), drawn at a random base scale (so the magnification of a zoom frame says nothing), and the
motion's time runs symmetrically around the middle of the clip (as much zoomed in as zoomed out, rotated one
way as the other). Only a model that compares frames over time can tell the classes apart: temporal cells
have to earn their place, which is what makes this a meaningful smoke test for a video NAS.
"""

from __future__ import annotations

import math

import numpy as np
import torch

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
WAVES = 32  # plane waves per colour channel
WAVELENGTHS = (5.0, 20.0)  # pixels at base scale 1, drawn log-uniformly
BASE_SCALE = 0.3  # the texture's scale is exp(U(-0.3, 0.3)): a random grain per clip
PHASE = 0.25  # the clip's time window is shifted by U(-0.25, 0.25) of its length


def _waves(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Wave vectors ``(2, 3 * WAVES)`` (radians per pixel; uniform directions) and phases ``(3 * WAVES,)``."""
    n = 3 * WAVES
    direction = rng.uniform(0.0, 2 * math.pi, n)
    wavelength = np.exp(rng.uniform(*np.log(WAVELENGTHS), n))
    k = 2 * math.pi / wavelength * np.stack([np.cos(direction), np.sin(direction)])
    return k, rng.uniform(0.0, 2 * math.pi, n)


def _motion(label: int, t: float, speed: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The affine map ``(A, b)`` from a frame's centred pixel coordinates ``(x, y)`` to the texture's at time ``t``
    of class ``label``'s motion: shifts move ``speed * size / 2`` pixels per unit of t, rotations turn
    ``speed * pi / 2`` radians, zooms scale by ``exp(speed)``."""
    name = CLASSES[label]
    b = np.zeros(2)
    if name.startswith("shift"):
        d = {"shift_left": (1, 0), "shift_right": (-1, 0), "shift_up": (0, 1), "shift_down": (0, -1)}[name]
        return np.eye(2), np.array(d, float) * speed * t * size / 2
    if name.startswith("rotate"):
        angle = (1.0 if name == "rotate_cw" else -1.0) * speed * t * math.pi / 2
        c, s = math.cos(angle), math.sin(angle)
        return np.array([[c, -s], [s, c]]), b
    return np.eye(2) * math.exp((-1.0 if name == "zoom_in" else 1.0) * speed * t), b


def moving_pattern_clip(
    label: int, seed: int, frames: int = 16, size: int = 64, speed_range: tuple[float, float] = (0.5, 0.9)
) -> np.ndarray:
    """Render one clip of class ``label`` as uint8 ``(frames, size, size, 3)``; same seed -> same clip.

    ``speed_range``: the range the clip's speed is drawn from (a shift moves the texture ``speed / 2`` of the
    frame over the clip). The clip's time runs over ``[-0.5, 0.5]`` plus a random offset symmetric around 0.
    """
    if not 0 <= label < len(CLASSES):
        raise ValueError(f"label must be in [0, {len(CLASSES)}), got {label}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # products of a few thousand numbers: sharing them between threads only waits
    try:
        return _render(label, seed, frames, size, speed_range)
    finally:
        torch.set_num_threads(threads)


def _render(label: int, seed: int, frames: int, size: int, speed_range: tuple[float, float]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k, phase = _waves(rng)
    k *= math.exp(rng.uniform(-BASE_SCALE, BASE_SCALE))  # the base scale: the same for every frame
    speed = float(rng.uniform(*speed_range))
    offset = float(rng.uniform(-PHASE, PHASE))
    lin = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    norm = 0.18 / math.sqrt(WAVES / 2)  # a channel's std: 0.18 around 0.5
    video = torch.empty((frames, 3, size, size), dtype=torch.float64)
    for i in range(frames):
        t = offset + i / max(frames - 1, 1) - 0.5
        a, b = _motion(label, t, speed, size)
        kf = torch.from_numpy((a.T @ k).reshape(2, 3, WAVES))  # a plane wave stays one under an affine map
        ax = lin[None, :, None] * kf[0][:, None]  # (3, size, waves): the phase along x, and along y below
        ay = lin[None, :, None] * kf[1][:, None] + torch.from_numpy((phase + b @ k).reshape(3, 1, WAVES))
        # sum_k cos(ay + ax) = [cos ay, -sin ay] @ [cos ax, sin ax]^T: separable, one product per channel
        video[i] = 0.5 + norm * (torch.cat([ay.cos(), -ay.sin()], 2) @ torch.cat([ax.cos(), ax.sin()], 2).transpose(1, 2))
    video = video.permute(0, 2, 3, 1).numpy()
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)
