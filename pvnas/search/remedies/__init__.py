"""Search remedies: the DARTS follow-ups' fixes against collapse, each one class behind one interface
(:class:`~pvnas.search.remedies.base.Remedy`), registered here by name.

A search uses the remedies named in ``SearchConfig.remedies`` (the ``demo`` preset: op dropout, skip noise and the
parameter-free cap; the ``search`` preset: none, the paper's settings); the CLI offers one flag per remedy, made
from this registry. Adding a remedy: its own module here (a :class:`Remedy` subclass) plus one line in
:data:`REGISTRY`. Perturbation-based selection (DARTS-PT) replaces the derivation after the search rather than
changing it: it is registered in :data:`SELECTIONS`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import torch
from torch import nn

from pvnas.config import SearchConfig
from pvnas.errors import ConfigError
from pvnas.search.remedies.base import Remedy, Value

# The registry: one line per remedy, "module.Class" under this package, in the order their hooks apply.
REGISTRY: tuple[str, ...] = (
    "op_dropout.OpDropout",
    "skip_noise.SkipNoise",
    "beta_decay.BetaDecay",
    "param_free_cap.ParamFreeCap",
    "budget.TargetGflops", "budget.TargetParams", "budget.TargetMs",
)
# Derivations that replace the paper's rule after a search (`pvnas derive --select NAME`), "module.function".
SELECTIONS: dict[str, str] = {
    "perturbation": "perturbation.derive_by_perturbation",
}


def _load(entry: str) -> Any:
    module, _, attr = entry.rpartition(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


REMEDIES: dict[str, type[Remedy]] = {cls.name: cls for cls in map(_load, REGISTRY)}


def selection(name: str) -> Callable[..., Any]:
    """The derivation registered as ``name`` in :data:`SELECTIONS`."""
    return _load(SELECTIONS[name])


def settings(cfg: SearchConfig) -> dict[str, Value]:
    """Every registered remedy's value in ``cfg`` (``off`` where it names none), in registry order: what a run
    records in config.yaml, so that a resume compares remedies that were off too."""
    unknown(cfg.remedies)
    return {name: cfg.remedies.get(name, cls.off) for name, cls in REMEDIES.items()}


def unknown(values: Mapping[str, Any], where: str = "remedies") -> None:
    """Refuse names no registered remedy has, naming the valid ones."""
    bad = sorted(set(values) - set(REMEDIES))
    if bad:
        raise ConfigError(f"{where}: unknown remedy {bad[0]!r}; expected one of: {', '.join(REMEDIES)}")


def remedies_of(cfg: SearchConfig) -> list[Remedy]:
    """The remedies ``cfg`` switches on, each checked against its rule (one line naming the flag if not)."""
    return [REMEDIES[name](value, cfg) for name, value in settings(cfg).items() if value != REMEDIES[name].off]


def alpha_terms(remedies: list[Remedy], model: nn.Module, progress: float) -> list[torch.Tensor]:
    """The terms the remedies add to the alpha loss at ``progress`` (the share of the search's steps done)."""
    return [term for remedy in remedies if (term := remedy.alpha_loss(model, progress)) is not None]


def derive_options(remedies: list[Remedy]) -> dict[str, Any]:
    """Keyword arguments of :meth:`~pvnas.space.genotype.Genotype.derive` that the remedies ask for."""
    options: dict[str, Any] = {}
    for remedy in remedies:
        options.update(remedy.derive_options())
    return options


def resumable() -> set[str]:
    """Dotted config keys of the remedies a resume may change (those that only change the derivation)."""
    return {f"search.remedies.{name}" for name, cls in REMEDIES.items() if not cls.trains}
