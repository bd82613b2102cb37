"""DropNAS' grouped operation dropout (Hong et al. 2020): ops that fall behind keep being trained, so the op that
leads first cannot win by co-adaptation alone (the Matthew effect)."""

from __future__ import annotations

from typing import Sequence

import torch

from pvnas.search.remedies.base import Remedy, Value
from pvnas.space.ops import CONV_OPS, PARAMETER_FREE, ops_for


def op_dropout_mask(ops: Sequence[str], edges: int, p: float) -> torch.Tensor:
    """``(edges, len(ops))`` multipliers of the op weights.

    Each op but ``zero`` is left out of an edge's mixture with probability ``p``; at least one parameter-free and
    one parameterised op stay on every edge; kept ops are scaled by 1 / (1 - p).
    """
    keep = torch.rand(edges, len(ops)) >= p
    for group in (PARAMETER_FREE - {"zero"}, CONV_OPS):
        columns = torch.tensor([i for i, op in enumerate(ops) if op in group])
        empty = ~keep[:, columns].any(1)
        keep[empty, columns[torch.randint(len(columns), (edges,))][empty]] = True
    scale = keep.float() / (1.0 - p)
    scale[:, ops.index("zero")] = 1.0  # (its output is zero whatever its weight)
    return scale


class OpDropout(Remedy):
    name = "op_dropout"
    help = "DropNAS operation dropout: each op left out of a training forward with this probability."
    rule = "in [0, 1)"

    @classmethod
    def valid(cls, value: Value) -> bool:
        return isinstance(value, (int, float)) and 0 <= value < 1

    def mixture(self, kind: str, weights: torch.Tensor) -> torch.Tensor:
        return weights * op_dropout_mask(ops_for(kind), weights.shape[0], float(self.value)).to(weights)
