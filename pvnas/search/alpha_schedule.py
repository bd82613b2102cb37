"""The search's alpha schedule (warm-up, lr from a budget) and the paper's convergence rule, which decides when
the ``converge`` weight schedule (:mod:`pvnas.lr_schedules`) decays."""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from pvnas.config import SearchConfig
from pvnas.space.genotype import Genotype

MAX_DECAYS = 3  # the paper decays three times in 80 epochs


def alpha_active(cfg: SearchConfig, progress: float) -> bool:
    """Whether this step updates the alphas: not during the weights-only warm-up (``a_warmup`` of the steps)."""
    return progress >= cfg.a_warmup


def alpha_lr(cfg: SearchConfig, total_steps: int) -> float:
    """Adam's lr for the alphas: ``a_lr``, or ``a_lr_budget`` spread over the run's alpha updates (the steps after
    the warm-up), so that the alphas can move as far in a short run as in a long one."""
    if cfg.a_lr_budget is None:
        return cfg.a_lr
    updates = sum(alpha_active(cfg, t / total_steps) for t in range(total_steps))
    return cfg.a_lr_budget / max(1, updates)


class ConvergenceMonitor:
    """When the alphas have converged (``converge`` schedule): looked at every ``window`` steps.

    Converged means both: the derived genotype did not change over the last window, and the alphas moved
    over the last window by at most ``tol`` of their displacement since the alpha updates began. Noise alone
    never passes (a random walk's last window is a large share of its displacement), steady drift passes
    only once the window is a small share of the run so far, and settling alphas pass soon. After a decay
    the next one needs another full window of convergence; at most :data:`MAX_DECAYS`.

    The decision is a function of the alphas only, which are identical on every rank, so every rank
    decides alike; its state is plain numbers and tensors (:meth:`state_dict`) and resumes bit-exact.
    """

    def __init__(self, window: int, tol: float) -> None:
        self.window, self.tol = max(1, window), tol
        self.decays = 0
        self.start: torch.Tensor | None = None  # flat alphas when the alpha updates began
        self.previous: torch.Tensor | None = None  # flat alphas at the last look
        self.previous_genotype: dict[str, Any] | None = None
        self.history: list[dict[str, float]] = []  # one entry per look: step, relative change, decision

    def due(self, step: int) -> bool:
        """Whether :meth:`observe` looks at the alphas after global ``step``: the first time, then every ``window``
        steps (the caller reads the alphas off the device only then)."""
        return self.start is None or step % self.window == 0

    def observe(self, step: int, alphas: Mapping[str, torch.Tensor]) -> bool:
        """Look at the alphas after global ``step`` (every ``window`` steps); True when the lr should decay now."""
        if not self.due(step):
            return False
        flat = torch.cat([a.detach().double().flatten().cpu() for a in alphas.values()])
        genotype = Genotype.derive(alphas).to_dict()["cells"]
        if self.start is None:
            self.start, self.previous, self.previous_genotype = flat, flat, genotype
            return False
        moved = float((flat - self.previous).norm())
        total = float((flat - self.start).norm())
        relative = moved / total if total > 0 else math.inf
        decay = self.decays < MAX_DECAYS and genotype == self.previous_genotype and relative <= self.tol
        self.decays += decay
        self.history.append({"step": step, "relative_change": relative, "same_genotype": genotype == self.previous_genotype,
                             "decay": decay})
        self.previous, self.previous_genotype = flat, genotype
        return decay

    def state_dict(self) -> dict[str, Any]:
        return {"decays": self.decays, "start": self.start, "previous": self.previous,
                "previous_genotype": self.previous_genotype, "history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.decays, self.start, self.previous = state["decays"], state["start"], state["previous"]
        self.previous_genotype, self.history = state["previous_genotype"], list(state["history"])
