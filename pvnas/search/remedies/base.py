"""What a search remedy may do, as one small interface: the seam between the DARTS follow-ups' fixes against
collapse and the search that runs them.

A remedy is switched on by a value in ``SearchConfig.remedies`` under its ``name`` (the CLI flag is the name with
dashes). Its hooks, each doing nothing by default, are called by the supernet's training forwards (``mixture``,
``skip_noise``), by the alpha step (``alpha_loss``), at every epoch end (``epoch_record``) and by every derivation
of a genotype (``derive_options``). A remedy that only changes the derivation (``trains = False``) may differ on
resume, and ``pvnas derive`` offers its flag to override the run's value (``at_derive``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from pvnas.config import SearchConfig
from pvnas.errors import ConfigError

Value = float | int | None


class Remedy:
    """One remedy; subclasses set the class attributes and override the hooks they need."""

    name: ClassVar[str]  # key in SearchConfig.remedies and config.yaml; CLI flag --name-with-dashes
    help: ClassVar[str]  # the CLI help: what it does, after which paper
    type: ClassVar[type] = float  # float or int
    off: ClassVar[Value] = 0.0  # the value that leaves the search as the paper's
    rule: ClassVar[str]  # the valid values, as the error message says them
    trains: ClassVar[bool] = True  # False: only the derivation changes (a resume may change it)
    at_derive: ClassVar[bool] = False  # `pvnas derive` offers the flag, overriding the run's value

    def __init__(self, value: Value, cfg: SearchConfig) -> None:
        if not self.valid(value):
            raise ConfigError(f"{self.name} ({self.flag()}) must be {self.rule}, got {value!r}")
        self.value, self.cfg = value, cfg

    @classmethod
    def flag(cls) -> str:
        return "--" + cls.name.replace("_", "-")

    @classmethod
    def valid(cls, value: Value) -> bool:
        """Whether ``value`` is one this remedy takes (its ``rule``)."""
        return True

    # -- hooks: each one does nothing unless overridden ------------------------------------------------------------
    def mixture(self, kind: str, weights: torch.Tensor) -> torch.Tensor:
        """A training forward's op weights of cell ``kind``, (14, n_ops): mask or reweight them."""
        return weights

    def skip_noise(self) -> float:
        """A training forward's noise on skip connections, as a share of each node's std (0: none)."""
        return 0.0

    def alpha_loss(self, model: nn.Module, progress: float) -> torch.Tensor | None:
        """A term added to the alpha step's loss; ``progress``: the share of the search's steps done (the alpha
        updates run from ``cfg.a_warmup`` to 1: a ramp over them starts there)."""
        return None

    def epoch_record(self, model: nn.Module) -> dict[str, Any]:
        """Numbers to log in the epoch's metrics.jsonl record (and so in plots and reports)."""
        return {}

    def derive_options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`~pvnas.space.genotype.Genotype.derive`: constraints on the derivation."""
        return {}
