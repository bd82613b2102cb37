"""Presets as frozen dataclasses: the paper's settings by name, overridable field by field.

Every config checks its own values in ``__post_init__`` (the one place a range is defined), so a
bad ``--flag`` fails before anything runs or is written, naming the field, its flag and the bound.
A run writes the resolved config to ``RUN/config.yaml`` so every run directory says exactly
what produced it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from pvnas.errors import ConfigError
from pvnas.lr_schedules import SEARCH_SCHEDULES
from pvnas.space.ops import CELL_KINDS

# implementations over the same modules: supernet cells (pvnas.nn.supernet.CELL_IMPLS), retrain forward (Network.impl)
IMPLS: tuple[str, ...] = ("fast", "reference")
PAPER_FPS = 30.0  # the paper's window is 64 frames of 30 fps video


def _check(ok: bool, name: str, flag: str | None, rule: str, value: Any) -> None:
    """Raise the one-line error of a field that breaks its rule: ``lr (--lr) must be > 0, got -1.0``."""
    if not ok:
        where = f"{name} ({flag})" if flag else name
        raise ConfigError(f"{where} must be {rule}, got {value!r}")


def _check_common(cfg: Any) -> None:
    """The fields search and retrain configs share."""
    _check(cfg.channels >= 1, "channels", "--channels", ">= 1", cfg.channels)
    _check(cfg.batch_size >= 1, "batch_size", "--batch-size", ">= 1", cfg.batch_size)
    _check(cfg.workers >= 0, "workers", "--workers", ">= 0 (0 loads in the main process)", cfg.workers)
    _check(cfg.threads >= 0, "threads", "--threads", ">= 0 (0: every core of this machine)", cfg.threads)
    _check(0 <= cfg.seed < 2**63, "seed", "--seed", "a non-negative integer", cfg.seed)


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from videos (paper §4.2): ``frames`` uniformly inside a window of ``window_seconds``.

    The window is a duration, not a frame count: the paper's 64 frames of 30 fps video (~2.13 s) span the
    same time in 12 fps SSv2 and 25 fps UCF-101 (docs/design.md §5).
    """

    frames: int = 8
    window_seconds: float = 64 / PAPER_FPS
    crop: int = 112
    scale: tuple[int, int] = (128, 164)  # random short-side range (train); test uses scale[0]
    flip: bool = True
    test_clips: int = 10
    test_crops: int = 3

    def __post_init__(self) -> None:
        """Refuse impossible clips up front, naming the field and the fix."""
        lo, hi = self.scale
        _check(self.frames >= 1, "frames", "--frames", ">= 1", self.frames)
        _check(self.window_seconds > 0, "window_seconds", "--window", "> 0 seconds", self.window_seconds)
        if not 0 < lo <= hi:
            raise ConfigError(f"scale (--scale) must be MIN,MAX with 0 < MIN <= MAX, got {lo},{hi}")
        if self.crop < 1 or self.crop > lo:
            raise ConfigError(
                f"crop (--crop) {self.crop} is larger than the smallest scale {lo} (frames are resized to a short "
                f"side in [{lo}, {hi}] before cropping); use --crop <= {lo} or a larger --scale"
            )
        if self.test_clips < 1 or self.test_crops not in (1, 3):
            raise ConfigError(f"test views must be >= 1 clips x 1 or 3 crops, got {self.test_clips}x{self.test_crops}")

    def window_frames(self, fps: float) -> int:
        """The window in frames of a video at ``fps`` (at least ``frames``: sampling never repeats a frame
        because the video's rate is low)."""
        return max(self.frames, round(self.window_seconds * fps))


@dataclass(frozen=True)
class SearchConfig:
    """Supernet search settings (paper §4.2, Alg. 1)."""

    channels: int = 64
    clip: ClipConfig = field(default_factory=ClipConfig)
    batch_size: int = 32
    epochs: int = 80
    # weights: SGD; the lr follows `schedule`, a function of progress (step / total steps)
    w_lr: float = 0.1
    w_lr_min: float = 1e-4  # cosine floor
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    schedule: str = "converge"  # the paper's rule; the demo search-quality study (docs/history.md) supports it over step
    decay_at: tuple[float, ...] = (0.25, 0.5, 0.75)  # step: progress of the decays (paper: epochs 20/40/60 of 80)
    step_gamma: float = 0.1
    converge_window: float = 0.1  # converge: alphas are compared over this share of the steps
    converge_tol: float = 0.05  # converge: alphas moved by at most this share of their displacement so far
    grad_clip: float | None = 5.0  # DARTS' weight-gradient clipping
    # architecture: Adam
    a_lr: float = 1e-3
    # if set, the alpha lr is a_lr_budget / (alpha updates of the run), so that a short run moves its alphas as far
    # as a long one (the paper: 1e-3 x 80 epochs x 221 steps = 17.7); None: a_lr as given
    a_lr_budget: float | None = None
    a_betas: tuple[float, float] = (0.0, 0.999)
    a_weight_decay: float = 0.0
    a_warmup: float = 0.0  # share of the steps that train the weights only (PC-DARTS freezes alpha 15 of 50 epochs)
    # remedies against collapse by name (pvnas.search.remedies, which checks the values), e.g. {"skip_noise": 0.2};
    # none: the paper's search
    remedies: Mapping[str, float | int | None] = field(default_factory=dict)
    partial_channels: int = 1  # PC-DARTS: ops mix 1/K of the channels (fast supernet only)
    edge_norm: bool = False  # PC-DARTS edge normalisation (betas in the arch parameters)
    impl: str = "fast"  # supernet cells: "fast", or "reference" (the literal DARTS MixedOp, the oracle)
    workers: int = 2
    threads: int = 0  # torch threads on CPU; 0: every core (see pvnas.runtime.device.torch_threads)
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self)
        _check(self.epochs >= 1, "epochs", "--epochs", ">= 1", self.epochs)
        _check(self.w_lr > 0, "w_lr", "--lr", "> 0", self.w_lr)
        _check(0 <= self.w_lr_min <= self.w_lr, "w_lr_min", None, f"in [0, w_lr = {self.w_lr}]", self.w_lr_min)
        _check(0 <= self.w_momentum < 1, "w_momentum", None, "in [0, 1)", self.w_momentum)
        _check(self.w_weight_decay >= 0, "w_weight_decay", None, ">= 0", self.w_weight_decay)
        _check(self.schedule in SEARCH_SCHEDULES, "schedule", "--schedule", f"one of {', '.join(SEARCH_SCHEDULES)}",
               self.schedule)
        _check(len(self.decay_at) <= 3 and all(0 < a < 1 for a in self.decay_at) and list(self.decay_at) == sorted(self.decay_at),
               "decay_at", None, "at most 3 increasing fractions in (0, 1) (the paper decays three times)", self.decay_at)
        _check(0 < self.step_gamma < 1, "step_gamma", None, "in (0, 1)", self.step_gamma)
        _check(0 < self.converge_window < 1, "converge_window", None, "in (0, 1)", self.converge_window)
        _check(self.converge_tol > 0, "converge_tol", None, "> 0", self.converge_tol)
        _check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", None, "> 0 or None", self.grad_clip)
        _check(self.a_lr > 0, "a_lr", "--alpha-lr", "> 0", self.a_lr)
        _check(self.a_lr_budget is None or self.a_lr_budget > 0, "a_lr_budget", "--alpha-lr-budget", "> 0",
               self.a_lr_budget)
        _check(all(0 <= b < 1 for b in self.a_betas) and len(self.a_betas) == 2, "a_betas", None,
               "two values in [0, 1)", self.a_betas)
        _check(self.a_weight_decay >= 0, "a_weight_decay", None, ">= 0", self.a_weight_decay)
        _check(0 <= self.a_warmup < 1, "a_warmup", "--alpha-warmup", "in [0, 1)", self.a_warmup)
        _check(isinstance(self.remedies, Mapping) and all(isinstance(k, str) for k in self.remedies), "remedies",
               None, "a mapping of remedy names to values", self.remedies)
        _check(self.impl in IMPLS, "impl", "--impl", f"one of {', '.join(IMPLS)}", self.impl)
        k = self.partial_channels
        _check(k >= 1 and self.channels % k == 0, "partial_channels", "--partial-channels",
               f">= 1 and divide channels ({self.channels})", k)
        if self.impl == "reference" and (k > 1 or self.edge_norm):
            raise ConfigError("--partial-channels > 1 and --edge-norm need the fast supernet (--impl fast); "
                              "the reference is the literal DARTS mixture")


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
    optimizer: str = "sgd"  # "sgd" (momentum, the paper's) or "adamw" (weight_decay then decoupled)
    label_smoothing: float = 0.0  # cross-entropy against (1 - eps) one-hot + eps uniform
    grad_clip: float = 0.0  # clip the global gradient norm to this (0: no clipping)
    val_videos: int = 1000  # validation subset (single centre view) scored after each epoch
    workers: int = 4
    threads: int = 0  # torch threads on CPU; 0: every core (see pvnas.runtime.device.torch_threads)
    seed: int = 0
    impl: str = "fast"  # forward over the same modules: "fast" (2D channels-last frames) or "reference" (Conv3d)

    def __post_init__(self) -> None:
        _check_common(self)
        _check(self.impl in IMPLS, "impl", "--impl", f"one of {', '.join(IMPLS)}", self.impl)
        _check(self.repeats >= 1, "repeats", "--repeats", ">= 1", self.repeats)
        _check(len(self.stages) >= 1 and all(k in CELL_KINDS for k in self.stages), "stages", None,
               f"a non-empty list of {', '.join(CELL_KINDS)}", self.stages)
        _check(self.stem_stride in (2, 4), "stem_stride", None, "2 or 4", self.stem_stride)
        _check(0 <= self.dropout < 1, "dropout", None, "in [0, 1)", self.dropout)
        _check(0 <= self.drop_path < 1, "drop_path", None, "in [0, 1)", self.drop_path)
        _check(self.epochs is None or self.epochs >= 1, "epochs", "--epochs", ">= 1", self.epochs)
        _check(self.warmup_epochs is None or self.warmup_epochs >= 0, "warmup_epochs", None, ">= 0", self.warmup_epochs)
        if self.epochs is not None and self.warmup_epochs is not None:
            _check(self.warmup_epochs < self.epochs, "warmup_epochs", None, f"< epochs ({self.epochs})", self.warmup_epochs)
        _check(self.lr > 0, "lr", "--lr", "> 0", self.lr)
        _check(0 <= self.lr_min <= self.lr, "lr_min", None, f"in [0, lr = {self.lr}]", self.lr_min)
        _check(0 < self.warmup_start <= 1, "warmup_start", None, "in (0, 1]", self.warmup_start)
        _check(0 <= self.momentum < 1, "momentum", None, "in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "weight_decay", None, ">= 0", self.weight_decay)
        _check(self.optimizer in ("sgd", "adamw"), "optimizer", None, "sgd or adamw", self.optimizer)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", None, "in [0, 1)", self.label_smoothing)
        _check(self.grad_clip >= 0, "grad_clip", None, ">= 0 (0: no clipping)", self.grad_clip)
        _check(self.val_videos >= 0, "val_videos", None, ">= 0", self.val_videos)


@dataclass(frozen=True)
class EvalConfig:
    """Multi-view testing (``pvnas eval``/``predict``): ``clips`` x ``crops`` views, ``batch_size`` clips per forward."""

    clips: int = 10
    crops: int = 3
    batch_size: int = 8
    workers: int = 0
    threads: int = 0  # torch threads on CPU; 0: every core

    def __post_init__(self) -> None:
        _check(self.clips >= 1 and self.crops >= 1, "views", "--views", "CLIPSxCROPS with both >= 1",
               f"{self.clips}x{self.crops}")
        _check(self.batch_size >= 1, "batch_size", "--batch-size", ">= 1", self.batch_size)
        _check(self.workers >= 0, "workers", "--workers", ">= 0 (0 loads in the main process)", self.workers)
        _check(self.threads >= 0, "threads", "--threads", ">= 0 (0: every core of this machine)", self.threads)


@dataclass(frozen=True)
class RunOptions:
    """How a run directory is used (search and train alike): start, continue or replace it, and checkpoints."""

    # True: continue from RUN/checkpoint.pt; "auto": start, continue or (finished) do nothing, whatever RUN needs
    resume: bool | str = False
    overwrite: bool = False  # replace the run already in RUN
    checkpoint_every: float | None = None  # minutes between timed checkpoints (besides every epoch)
    max_bad_steps: int = 5  # consecutive non-finite losses that stop the run
    tensorboard: bool = False

    def __post_init__(self) -> None:
        _check(self.resume in (False, True, "auto"), "resume", "--resume", "given alone or as `--resume auto`",
               self.resume)
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
        _check(self.checkpoint_every is None or self.checkpoint_every > 0, "checkpoint_every", "--checkpoint-every",
               "> 0 minutes", self.checkpoint_every)
        _check(self.max_bad_steps >= 1, "max_bad_steps", None, ">= 1", self.max_bad_steps)


SEARCH_PRESETS: dict[str, SearchConfig] = {
    "search": SearchConfig(),
    "tiny": SearchConfig(
        channels=8,
        clip=ClipConfig(frames=4, window_seconds=0.32, crop=32, scale=(32, 40), test_clips=2, test_crops=3),
        batch_size=8,
        epochs=2,
        workers=0,
        threads=1,
    ),
    # a search that decides within minutes on 2 cores (README, "Searching at a small budget"): small batches give the
    # alphas more updates before the supernet fits the data; half the steps train the weights only, then the alphas
    # move as far as the paper's (lr x updates = 12); DropNAS operation dropout keeps early leaders from winning
    # by co-adaptation alone; NoisyDARTS' skip noise and a derivation that keeps at most 4 parameter-free edges per
    # cell stop identity and pooling from winning by being the easiest path (both chosen on the task suite's
    # tuning tasks, docs/RESULTS.md)
    "demo": SearchConfig(
        channels=8,
        clip=ClipConfig(frames=4, window_seconds=16 / 15, crop=32, scale=(32, 40), test_clips=4),
        batch_size=8,
        epochs=20,
        a_lr_budget=12.0,
        a_warmup=0.5,
        remedies={"op_dropout": 0.5, "skip_noise": 0.2, "max_param_free": 4},
        workers=2,
        threads=1,
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
        clip=ClipConfig(frames=4, window_seconds=0.32, crop=32, scale=(32, 40), test_clips=2, test_crops=3),
        batch_size=8,
        epochs=2,
        warmup_epochs=0,
        val_videos=16,
        workers=0,
        threads=1,
    ),
    "demo": NetworkConfig(
        channels=8,
        repeats=1,
        stages=FIG5B_STAGES,
        stem_stride=2,
        clip=ClipConfig(frames=4, window_seconds=16 / 15, crop=32, scale=(32, 40), test_clips=4, test_crops=3),
        batch_size=16,
        epochs=10,
        warmup_epochs=2,
        lr=0.05,
        # no dropout or drop-path: at C=8 they kept some retrains from fitting their training clips, which then stayed
        # at chance on validation (docs/RESULTS.md, "The retrain recipe"; chosen on the tuning tasks)
        dropout=0.0,
        drop_path=0.0,
        val_videos=128,
        workers=2,
        threads=1,
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
    """Apply the ``--frames/--crop/--scale MIN,MAX`` flags; the window keeps its duration (more frames sample
    it more densely, as SlowFast's 8x8 and 16x4 clips span the same 64 frames)."""
    changes: dict[str, Any] = {}
    if frames is not None:
        changes["frames"] = frames
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


# the remedies SearchConfig held as fields of its own before they moved into `remedies`
LEGACY_REMEDIES: tuple[str, ...] = ("op_dropout", "skip_noise", "beta_decay", "max_param_free")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from :func:`to_dict` output (lists back to tuples)."""
    kwargs: dict[str, Any] = {}
    if cls is SearchConfig and any(k in data for k in LEGACY_REMEDIES):  # a config.yaml written before `remedies`
        legacy = {k: data[k] for k in LEGACY_REMEDIES if k in data}
        data = {**{k: v for k, v in data.items() if k not in legacy}, "remedies": {**legacy, **data.get("remedies", {})}}
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


def apply_values(base: T, values: Mapping[str, Any], where: str) -> T:
    """``base`` with the fields ``values`` names (a config file's section, e.g. ``RUN/config.yaml``'s ``search``;
    ``clip`` nested) set: what a file leaves out stays ``base``'s. An unknown key or a value of the wrong type is
    one :class:`ConfigError` naming ``where`` and the dotted key; the ranges are checked by ``base``'s class."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {type(base).__name__} fields, got {type(values).__name__}")
    if isinstance(base, SearchConfig) and any(k in values for k in LEGACY_REMEDIES):  # written before `remedies`
        legacy = {k: values[k] for k in LEGACY_REMEDIES if k in values}
        values = {**{k: v for k, v in values.items() if k not in legacy},
                  "remedies": {**legacy, **values.get("remedies", {})}}
    fields = {f.name: f for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(type(base))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; a {type(base).__name__} has: {', '.join(fields)}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            changes[key] = apply_values(current, value, f"{where}.{key}")
        elif key == "remedies":  # a mapping by remedy name (pvnas.search.remedies checks names and values)
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}.remedies must be a mapping of remedy names to values, got {value!r}")
            changes[key] = {**current, **value}
        else:
            changes[key] = _typed(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` (int, float, bool, str, None, tuples of them and unions) or a ConfigError."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None) and value is None:
            return None
        if option is bool and isinstance(value, bool):
            return value
        if option in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if option is float or float(value).is_integer():
                return option(value)
        if option is str and isinstance(value, str):
            return value
        if origin is tuple and isinstance(value, (list, tuple)):
            args = typing.get_args(option)
            items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
            if len(items) == len(value):
                try:
                    return tuple(_typed(v, t, where) for v, t in zip(value, items))
                except ConfigError:
                    continue
    shown = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"{where} must be {shown}, got {value!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))
