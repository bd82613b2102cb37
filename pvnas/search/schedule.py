"""Weight learning-rate schedules of the search (paper §3.3).

``step`` (the paper's fix): x0.1 every 20 of 80 epochs, the period scaled with the epoch count.
``cosine`` 0.1 -> 1e-4 is kept because it reproduces the collapse to parameter-free ops (Fig. 4).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from pvnas.errors import ConfigError

SCHEDULES = ("step", "cosine")


def step_period(epochs: int, every: int = 20, reference_epochs: int = 80) -> int:
    """Epochs between decays: 20 at 80 epochs, proportionally fewer for shorter runs (>= 1)."""
    return max(1, round(every * epochs / reference_epochs))


def lr_factor(schedule: str, epoch: int, epochs: int, *, every: int, gamma: float, lr: float, lr_min: float) -> float:
    """Multiplier of the base lr during ``epoch`` (0-based); pure, so it is easy to test and plot."""
    if schedule == "step":
        return gamma ** (epoch // step_period(epochs, every))
    if schedule == "cosine":
        progress = epoch / max(epochs, 1)
        return (lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))) / lr
    raise ConfigError(f"unknown --schedule {schedule!r}; expected one of: {', '.join(SCHEDULES)}")


def weight_scheduler(
    optimizer: Optimizer, schedule: str, epochs: int, *, every: int, gamma: float, lr: float, lr_min: float
) -> LRScheduler:
    """A per-epoch scheduler (call ``.step()`` once at the end of each epoch)."""
    lr_factor(schedule, 0, epochs, every=every, gamma=gamma, lr=lr, lr_min=lr_min)  # validate the name now
    return LambdaLR(
        optimizer,
        lambda e: lr_factor(schedule, e, epochs, every=every, gamma=gamma, lr=lr, lr_min=lr_min),
    )
