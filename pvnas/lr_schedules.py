"""Learning-rate schedules as pure functions of progress: the one registry of the search's weight schedules
(:data:`SEARCH_SCHEDULES`, whose names ``--schedule`` accepts and :class:`~pvnas.config.SearchConfig` checks)
and the retrain schedule.

Progress, not epochs, so that a 5-epoch and an 80-epoch search decay at the same fractions (docs/design.md
§2), and a resumed run follows exactly the schedule it would have followed:

* ``step``: x ``step_gamma`` at ``decay_at`` (25/50/75%: the paper's epochs 20/40/60 of 80), never more than three;
* ``constant``: the base lr throughout (paper §3.3: constant 0.1 "is robust to bad local minimum");
* ``converge``: the paper's own rule, "does not decay the learning rate until the architecture parameters
  converge": x ``step_gamma`` per decay that :class:`~pvnas.search.alpha_schedule.ConvergenceMonitor` decided;
* ``cosine``: base lr to ``w_lr_min``; reproduces the collapse to parameter-free ops (Fig. 4, "false case").

The retrain schedule (:func:`train_lr`) is the paper's linear warm-up then cosine (§4.2).
"""

from __future__ import annotations

import math
from typing import Callable, Protocol


class SearchLRSettings(Protocol):
    """The fields of a :class:`~pvnas.config.SearchConfig` that its weight schedule reads."""

    schedule: str
    w_lr: float
    w_lr_min: float
    step_gamma: float
    decay_at: tuple[float, ...]


class TrainLRSettings(Protocol):
    """The fields of a resolved :class:`~pvnas.config.NetworkConfig` that the retrain schedule reads."""

    epochs: int | None
    warmup_epochs: int | None
    lr: float
    lr_min: float
    warmup_start: float


def _step(c: SearchLRSettings, progress: float, decays: int) -> float:
    return c.w_lr * c.step_gamma ** sum(progress >= at for at in c.decay_at)


def _constant(c: SearchLRSettings, progress: float, decays: int) -> float:
    return c.w_lr


def _converge(c: SearchLRSettings, progress: float, decays: int) -> float:
    return c.w_lr * c.step_gamma**decays


def _cosine(c: SearchLRSettings, progress: float, decays: int) -> float:
    return c.w_lr_min + 0.5 * (c.w_lr - c.w_lr_min) * (1 + math.cos(math.pi * min(progress, 1.0)))


SEARCH_SCHEDULES: dict[str, Callable[[SearchLRSettings, float, int], float]] = {
    "step": _step, "constant": _constant, "converge": _converge, "cosine": _cosine,
}


def search_lr(cfg: SearchLRSettings, progress: float, decays: int = 0) -> float:
    """The search's weight lr at ``progress`` in [0, 1] (``decays``: what ``converge`` has decided so far)."""
    return SEARCH_SCHEDULES[cfg.schedule](cfg, progress, decays)


def train_lr(cfg: TrainLRSettings, progress: float, scale: float = 1.0) -> float:
    """The retrain lr at ``progress`` epochs (fractional): linear warm-up from ``lr * warmup_start``, then
    cosine to ``lr_min``. ``scale`` is the world size (the paper's lr is per GPU). ``cfg`` must be resolved."""
    epochs, warmup = cfg.epochs, cfg.warmup_epochs
    assert epochs is not None and warmup is not None, "resolve_schedule() first"
    lr, lr_min = cfg.lr * scale, cfg.lr_min * scale
    if progress < warmup:
        return lr * (cfg.warmup_start + (1.0 - cfg.warmup_start) * progress / warmup)
    t = min(1.0, (progress - warmup) / max(epochs - warmup, 1e-9))
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))
