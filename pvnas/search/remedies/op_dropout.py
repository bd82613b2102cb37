"""DropNAS' grouped operation dropout (Hong et al. 2020): ops that fall behind keep being trained, so the op that
leads first cannot win by co-adaptation alone (the Matthew effect)."""

from __future__ import annotations

from typing import Sequence

import torch

from pvnas.search.remedies.base import Remedy, Value
from pvnas.space.ops import CONV_OPS, PARAMETER_FREE, ops_for


def op_dropout_mask(ops: Sequence[str], edges: int, p: float, device: torch.device | None = None) -> torch.Tensor:
    """``(edges, len(ops))`` multipliers of the op weights, drawn on ``device`` (default: the CPU).

    Each op but ``zero`` is left out of an edge's mixture with probability ``p``; at least one parameter-free and
    one parameterised op stay on every edge; kept ops are scaled by 1 / (1 - p). Made of element-wise ops and
    ``torch.where``, no indexing by a mask: nothing waits for the device, and a compiled forward keeps one graph.
    """
    columns = torch.arange(len(ops), device=device)
    keep = torch.rand(edges, len(ops), device=device) >= p
    for group in (PARAMETER_FREE - {"zero"}, CONV_OPS):
        members = torch.tensor([i for i, op in enumerate(ops) if op in group]).to(columns.device, non_blocking=True)
        empty = ~(keep & (columns[:, None] == members).any(1)).any(1)  # edges that kept no op of the group
        pick = members[torch.randint(len(members), (edges,), device=device)]  # one of the group's ops per edge
        keep = keep | (empty[:, None] & (columns == pick[:, None]))
    scale = keep.float() / (1.0 - p)
    return torch.where(columns == ops.index("zero"), 1.0, scale)  # (zero's output is zero whatever its weight)


class OpDropout(Remedy):
    name = "op_dropout"
    help = "DropNAS operation dropout: each op left out of a training forward with this probability."
    rule = "in [0, 1)"

    @classmethod
    def valid(cls, value: Value) -> bool:
        return isinstance(value, (int, float)) and 0 <= value < 1

    def mixture(self, kind: str, weights: torch.Tensor) -> torch.Tensor:
        return weights * op_dropout_mask(ops_for(kind), weights.shape[0], float(self.value), weights.device)
