"""The search network of docs/design.md §2 / paper Fig. 5a: stem, S-NC, S-RC, T-NC, T-RC, pool, linear.

Each cell kind owns one alpha matrix (14 edges x its op count). The network is agnostic of how a
cell mixes its edges: ``cell_impl`` picks the literal reference cell or a faster equivalent.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
from torch import nn

from pvnas.config import IMPLS, SearchConfig
from pvnas.nn.fast import FastCell
from pvnas.nn.layers import preprocess, stem
from pvnas.nn.mixed import MixedOp, skip_noise
from pvnas.space.genotype import EDGES_PER_CELL, NODES, Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, is_reduction, ops_for


class ReferenceCell(nn.Module):
    """A supernet cell with 14 literal :class:`MixedOp` edges (DARTS ``Cell`` of ``model_search``)."""

    def __init__(self, kind: str, c_pp: int, c_p: int, c: int, reduction_prev: bool) -> None:
        super().__init__()
        self.kind, self.reduction = kind, is_reduction(kind)
        self.pre0, self.pre1 = preprocess(c_pp, c_p, c, reduction_prev, affine=False)
        ops = ops_for(kind)
        self.edges = nn.ModuleList(
            MixedOp(c, 2 if is_reduction(kind) and j < 2 else 1, ops) for _, j in edge_inputs()
        )

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, edge_weights: torch.Tensor | None = None,
        noise: float = 0.0,
    ) -> torch.Tensor:
        """``noise``: NoisyDARTS' skip noise scale (:func:`~pvnas.nn.mixed.skip_noise`), drawn per node."""
        if edge_weights is not None:  # without partial channels an edge factor is a factor of its op weights
            weights = weights * edge_weights[:, None]
        states = [self.pre0(s0), self.pre1(s1)]
        noises: list[torch.Tensor | None] = []  # per node, drawn when it is first read (the fast cell's order)
        e = 0
        for node in range(2, 2 + NODES):
            noises += [skip_noise(h, noise) if noise > 0 and not (self.reduction and j < 2) else None
                       for j, h in enumerate(states) if j >= len(noises)]
            states.append(sum(self.edges[e + j](h, weights[e + j], noises[j]) for j, h in enumerate(states)))
            e += node
        return torch.cat(states[2:], dim=1)


CellFactory = Callable[[str, int, int, int, bool], nn.Module]


class Perturbation(Protocol):
    """What a search remedy may do to a training forward (:mod:`pvnas.search.remedies`): mask or reweight each
    cell kind's op weights, and put noise on the skip connections (std as a share of each node's)."""

    def mixture(self, kind: str, weights: torch.Tensor) -> torch.Tensor: ...

    def skip_noise(self) -> float: ...


class Supernet(nn.Module):
    """Stem -> one cell of each kind -> global average pool -> linear, with per-kind alphas.

    ``edge_norm`` adds PC-DARTS edge normalisation: per-kind betas, softmax over each node's inputs.
    ``perturbations`` (the search's remedies) change every training forward, in their order.
    """

    def __init__(self, channels: int, num_classes: int, cell: CellFactory = ReferenceCell, edge_norm: bool = False,
                 perturbations: Sequence[Perturbation] = ()) -> None:
        super().__init__()
        self.channels, self.num_classes = channels, num_classes
        self.stem = stem(channels)
        c_pp, c_p, c = channels, channels, channels
        reduction_prev = False
        self.cells = nn.ModuleDict()
        for kind in CELL_KINDS:
            if is_reduction(kind):
                c *= 2
            self.cells[kind] = cell(kind, c_pp, c_p, c, reduction_prev)
            reduction_prev = is_reduction(kind)
            c_pp, c_p = c_p, NODES * c
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        self.alphas = nn.ParameterDict(
            {kind: nn.Parameter(1e-3 * torch.randn(EDGES_PER_CELL, len(ops_for(kind)))) for kind in CELL_KINDS}
        )
        self.betas = nn.ParameterDict(
            {kind: nn.Parameter(1e-3 * torch.randn(EDGES_PER_CELL)) for kind in CELL_KINDS} if edge_norm else {}
        )
        self.perturbations = list(perturbations)

    def forward(self, x: torch.Tensor, op_mask: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits of clips ``x``; ``op_mask`` (per cell kind, (14, n_ops) factors of the op weights) removes ops
        or edges from the mixture (perturbation-based selection, :mod:`pvnas.search.remedies.perturbation`)."""
        s0 = s1 = self.stem(x)
        for kind, cell in self.cells.items():
            weights = torch.softmax(self.alphas[kind], dim=-1)
            if self.training:
                for perturbation in self.perturbations:
                    weights = perturbation.mixture(kind, weights)
            if op_mask is not None:
                weights = weights * op_mask[kind].to(weights)
            noise = sum(p.skip_noise() for p in self.perturbations) if self.training else 0.0
            s0, s1 = s1, cell(s0, s1, weights, self.edge_weights(kind), noise)
        return self.classifier(self.pool(s1).flatten(1))

    def edge_weights(self, kind: str) -> torch.Tensor | None:
        """PC-DARTS edge factors of a cell kind: softmax of beta over each node's incoming edges."""
        if kind not in self.betas:
            return None
        return torch.cat([torch.softmax(b, dim=0) for b in self.betas[kind].split(list(range(2, 2 + NODES)))])

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values()) + list(self.betas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_alphas(self) -> Iterator[tuple[str, nn.Parameter]]:
        return iter(self.alphas.items())

    def alpha_dict(self) -> dict[str, torch.Tensor]:
        """Detached copies of the raw logits, the ``alphas/epoch_NNN.pt`` format."""
        return {kind: a.detach().cpu().clone() for kind, a in self.alphas.items()}

    def edge_weight_dict(self) -> dict[str, torch.Tensor]:
        """Per-kind normalised edge weights (empty without edge normalisation), saved beside the alphas."""
        return {kind: self.edge_weights(kind).detach().cpu() for kind in self.betas}  # type: ignore[union-attr]

    def genotype(self, options: Mapping[str, Any] | None = None, **meta: Any) -> Genotype:
        """The derivation of the current alphas; ``options``: keyword arguments of :meth:`Genotype.derive` (the
        remedies' constraints), recorded in the genotype's meta."""
        options = dict(options or {})
        return Genotype.derive(self.alpha_dict(), meta={"source": "search", **meta, **options},
                               edge_weights=self.edge_weight_dict() or None, **options)


CELL_IMPLS: dict[str, CellFactory] = {"fast": FastCell, "reference": ReferenceCell}
assert tuple(CELL_IMPLS) == IMPLS, "pvnas.config.IMPLS names the cell implementations"


def supernet_from_config(cfg: SearchConfig, num_classes: int, perturbations: Sequence[Perturbation]) -> Supernet:
    """The supernet of a search config (its cells: ``cfg.impl``; the config has checked K and the impl) with the
    search's remedies (:func:`pvnas.search.remedies.remedies_of`; ``()``: none)."""
    k = cfg.partial_channels
    cell = CELL_IMPLS[cfg.impl] if k == 1 else partial(CELL_IMPLS[cfg.impl], partial_channels=k)
    return Supernet(cfg.channels, num_classes, cell=cell, edge_norm=cfg.edge_norm, perturbations=perturbations)
