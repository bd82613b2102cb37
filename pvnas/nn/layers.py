"""Small layers of the retrain network that the op registry does not own."""

from __future__ import annotations

import torch


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """DARTS drop-path: zero a whole sample's branch with probability ``prob``, rescale the rest.

    Out of place (autograd-safe, unlike DARTS' ``mul_``); the caller decides when it applies
    (training only, never on an identity edge).
    """
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep
