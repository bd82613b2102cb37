"""beta-DARTS' regulariser (Ye et al. 2022): the mean over every edge of logsumexp(alpha) in the alpha loss, whose
gradient (softmax(alpha)) keeps the alphas' values and spread from growing, so that no op runs away early. Its
weight ramps linearly from 0 over the alpha updates, constraining the alphas more as they move."""

from __future__ import annotations

import torch
from torch import nn

from pvnas.search.remedies.base import Remedy, Value


def beta_decay_loss(model: nn.Module) -> torch.Tensor:
    """The regulariser of a supernet's alphas: the mean of logsumexp over every edge of every cell kind."""
    return torch.cat([torch.logsumexp(a, dim=-1) for a in model.alphas.values()]).mean()


class BetaDecay(Remedy):
    name = "beta_decay"
    help = "beta-DARTS: weight of the alphas' mean logsumexp in the alpha loss, ramped up from 0."
    rule = ">= 0"

    @classmethod
    def valid(cls, value: Value) -> bool:
        return isinstance(value, (int, float)) and value >= 0

    def alpha_loss(self, model: nn.Module, progress: float) -> torch.Tensor | None:
        warmup = self.cfg.a_warmup  # the ramp starts with the alpha updates
        weight = float(self.value) * (progress - warmup) / (1.0 - warmup)
        return weight * beta_decay_loss(model) if weight > 0 else None
