"""Presets as frozen dataclasses: the paper's settings by name, overridable field by field.

A run writes the resolved config to ``RUN/config.yaml`` so every run directory says exactly
what produced it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pvnas.errors import ConfigError


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from videos (paper §4.2): ``frames`` uniformly inside a ``window``."""

    frames: int = 8
    window: int = 64  # span at the source frame rate from which `frames` are sampled
    crop: int = 112
    scale: tuple[int, int] = (128, 164)  # random short-side range (train); test uses scale[0]
    flip: bool = True
    test_clips: int = 10
    test_crops: int = 3

    def __post_init__(self) -> None:
        """Refuse impossible clips up front, naming the field and the fix."""
        lo, hi = self.scale
        if self.frames < 1:
            raise ConfigError(f"frames (--frames) must be >= 1, got {self.frames}")
        if self.window < self.frames:
            raise ConfigError(f"window ({self.window}) must be >= frames ({self.frames}): frames are sampled inside it")
        if not 0 < lo <= hi:
            raise ConfigError(f"scale (--scale) must be MIN,MAX with 0 < MIN <= MAX, got {lo},{hi}")
        if self.crop < 1 or self.crop > lo:
            raise ConfigError(
                f"crop (--crop) {self.crop} is larger than the smallest scale {lo} (frames are resized to a short "
                f"side in [{lo}, {hi}] before cropping); use --crop <= {lo} or a larger --scale"
            )
        if self.test_clips < 1 or self.test_crops not in (1, 3):
            raise ConfigError(f"test views must be >= 1 clips x 1 or 3 crops, got {self.test_clips}x{self.test_crops}")


@dataclass(frozen=True)
class SearchConfig:
    """Supernet search settings (paper §4.2, Alg. 1)."""

    channels: int = 64
    clip: ClipConfig = field(default_factory=ClipConfig)
    batch_size: int = 32
    epochs: int = 80
    # weights: SGD
    w_lr: float = 0.1
    w_lr_min: float = 1e-4  # cosine floor
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    schedule: str = "step"  # "step" (paper) or "cosine" (reproduces the collapse of Fig. 4)
    step_every: int = 20  # at 80 epochs; scaled proportionally with `epochs`
    step_gamma: float = 0.1
    grad_clip: float | None = 5.0  # DARTS' weight-gradient clipping
    # architecture: Adam
    a_lr: float = 1e-3
    a_betas: tuple[float, float] = (0.0, 0.999)
    a_weight_decay: float = 0.0
    partial_channels: int = 1  # PC-DARTS: ops mix 1/K of the channels (fast supernet only)
    edge_norm: bool = False  # PC-DARTS edge normalisation (betas in the arch parameters)
    workers: int = 2
    seed: int = 0


# Fig. 5b stacks S-NC x K, S-RC, T-NC x K, T-RC; L and M continue with two more temporal stages,
# which gives M its 11 layers (K = 2) and L ~17-19M parameters / ~19 GMACs at 8x224x224 (paper:
# 19.65M / 22.14) — see pvnas/nn/network.py.
FIG5B_STAGES: tuple[str, ...] = ("S-NC", "S-RC", "T-NC", "T-RC")
PAPER_STAGES: tuple[str, ...] = FIG5B_STAGES + ("T-NC", "T-RC", "T-NC")


@dataclass(frozen=True)
class NetworkConfig:
    """Retrain network and its training settings (paper Fig. 5b, §4.2)."""

    channels: int = 64
    repeats: int = 1  # K: each normal kind of `stages` is repeated K times
    stages: tuple[str, ...] = PAPER_STAGES  # cell kinds in stacking order; channels double at each RC
    stem_stride: int = 4  # spatial stride before the first cell: 224 crop -> 56, as 112 -> 56 in search
    dropout: float = 0.4
    drop_path: float = 0.1  # ramped linearly from 0 over the epochs, as DARTS
    clip: ClipConfig = field(default_factory=lambda: ClipConfig(crop=224, scale=(256, 320)))
    batch_size: int = 8  # per process
    epochs: int | None = None  # None: the dataset's default (Kinetics/SSv2 196, UCF-101 128)
    warmup_epochs: int | None = None  # None: the dataset's (36 / 16), scaled when --epochs is given
    lr: float = 0.01  # per process; multiplied by the world size
    lr_min: float = 0.0
    warmup_start: float = 0.01  # warm-up starts at lr * warmup_start
    momentum: float = 0.9
    weight_decay: float = 1e-4
    val_videos: int = 1000  # validation subset (single centre view) scored after each epoch
    workers: int = 4
    seed: int = 0


SEARCH_PRESETS: dict[str, SearchConfig] = {
    "search": SearchConfig(),
    "tiny": SearchConfig(
        channels=8,
        clip=ClipConfig(frames=4, window=8, crop=32, scale=(32, 40), test_clips=2, test_crops=3),
        batch_size=8,
        epochs=2,
        workers=0,
    ),
    "demo": SearchConfig(  # `make demo` in <= 10 min on 2 cores: ~2.5 of them for this search
        channels=8,
        clip=ClipConfig(frames=4, window=16, crop=32, scale=(32, 40), test_clips=4),
        batch_size=32,
        epochs=5,
        workers=2,
    ),
}

NETWORK_PRESETS: dict[str, NetworkConfig] = {
    "L": NetworkConfig(channels=64, repeats=1),
    "M": NetworkConfig(channels=100, repeats=2),
    "tiny": NetworkConfig(
        channels=8,
        repeats=1,
        stages=FIG5B_STAGES,
        stem_stride=2,
        clip=ClipConfig(frames=4, window=8, crop=32, scale=(32, 40), test_clips=2, test_crops=3),
        batch_size=8,
        epochs=2,
        warmup_epochs=0,
        val_videos=16,
        workers=0,
    ),
    "demo": NetworkConfig(
        channels=8,
        repeats=1,
        stages=FIG5B_STAGES,
        stem_stride=2,
        clip=ClipConfig(frames=4, window=16, crop=32, scale=(32, 40), test_clips=4, test_crops=3),
        batch_size=16,
        epochs=10,
        warmup_epochs=2,
        lr=0.05,
        val_videos=128,
        workers=2,
    ),
}

T = TypeVar("T")


def get_preset(presets: dict[str, T], name: str, what: str = "preset") -> T:
    """Look a preset up by name, failing with the list of valid names."""
    try:
        return presets[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r}; expected one of: {', '.join(presets)}") from None


def override(cfg: T, **changes: Any) -> T:
    """Return ``cfg`` with the non-None ``changes`` applied (CLI flags left unset keep the preset)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]


def override_clip(clip: ClipConfig, frames: int | None, crop: int | None, scale: str | None) -> ClipConfig:
    """Apply the ``--frames/--crop/--scale MIN,MAX`` flags; the window keeps its frames-to-window ratio."""
    changes: dict[str, Any] = {}
    if frames is not None:
        changes["frames"] = frames
        changes["window"] = max(frames, clip.window * frames // clip.frames)
    if crop is not None:
        changes["crop"] = crop
    if scale is not None:
        try:
            lo, hi = (int(v) for v in scale.split(","))
        except ValueError:
            raise ConfigError(f"--scale must be MIN,MAX in pixels (e.g. 128,164), got {scale!r}") from None
        changes["scale"] = (lo, hi)
    return dataclasses.replace(clip, **changes) if changes else clip


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass, tuples as lists, for YAML/JSON."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output (lists back to tuples)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name == "clip":
            value = from_dict(ClipConfig, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)
