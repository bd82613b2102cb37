"""Collapse guard (paper Fig. 4): watch alpha entropy and the parameter-free share of the derivation.

A cell whose derived edges are mostly identity/pool has collapsed; the paper's cure is the step
weight schedule (or more epochs), so the warning says exactly that.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import torch

from pvnas.space.genotype import Genotype
from pvnas.space.ops import ops_for

log = logging.getLogger(__name__)

COLLAPSE_SHARE = 0.5  # more than half of a cell's kept edges parameter-free -> warn


def alpha_entropy(alphas: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Mean softmax entropy (nats) over the edges of each cell kind; ln(n_ops) means undecided."""
    out = {}
    for kind, a in alphas.items():
        p = torch.softmax(a.detach().float(), dim=-1)
        out[kind] = float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())
    return out


def drop_from(kind: str, entropy: float) -> float:
    """ln(#ops) - ``entropy``: how far a cell kind's alphas have moved from undecided (0), in nats."""
    return math.log(len(ops_for(kind))) - entropy


def entropy_drop(alphas: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """:func:`drop_from` of the mean alpha entropy, per cell kind."""
    return {kind: drop_from(kind, h) for kind, h in alpha_entropy(alphas).items()}


def collapse_stats(alphas: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """``{"entropy", "entropy_drop", "param_free_share"}``, each per cell kind, for ``metrics.jsonl``."""
    return {
        "entropy": alpha_entropy(alphas),
        "entropy_drop": entropy_drop(alphas),
        "param_free_share": Genotype.derive(alphas).parameter_free_share(),
    }


def collapsed_cells(genotype: Genotype, threshold: float = COLLAPSE_SHARE) -> list[str]:
    """Cell kinds whose derivation is mostly parameter-free."""
    return [k for k, share in genotype.parameter_free_share().items() if share > threshold]


def warn_if_collapsed(genotype: Genotype, epoch: int, schedule: str) -> list[str]:
    """Log one warning per collapsed cell, naming it and the remedy; returns the cell kinds."""
    cells = collapsed_cells(genotype)
    shares = genotype.parameter_free_share()
    for kind in cells:
        hint = ("use --schedule converge (the weight lr decays only once the alphas have settled)"
                if schedule in ("step", "cosine") else
                "search for more --epochs, or see the README's \"Searching at a small budget\"")
        log.warning(
            "collapse: cell %s derives to %.0f%% parameter-free ops (identity/pool) at epoch %d; "
            "%s (paper §3.3, Fig. 4)",
            kind, 100 * shares[kind], epoch, hint,
        )
    return cells
