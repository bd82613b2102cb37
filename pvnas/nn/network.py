"""The retrain network of docs/design.md §4 / paper Fig. 5b, built from a derived genotype.

Stem, then the derived cells in the order of ``NetworkConfig.stages`` with every normal cell
repeated K times, global average pool, dropout, linear. Channels double at every reduction
cell, as in DARTS; the cells are DARTS' ``Cell`` of ``model.py`` in 3D: preprocess both inputs,
each node sums two ops, drop-path on every non-identity op during training, concatenate.

Layout of the paper presets (the paper gives Fig. 5b's first four stages and the totals only):
``S-NC x K, S-RC, T-NC x K, T-RC, T-NC x K, T-RC, T-NC x K`` behind a stride-4 stem. That is
7 cells for L and the paper's "11 layers" for M (K = 2); at 8x224x224 a random genotype with
>= 4 convs per cell gives L ~17.4M parameters / ~19.4 GMACs (paper 19.65M / 22.14 GFLOPs) and
M ~67M / ~74 (paper 77.15M / 82.11), the same M/L ratios as the paper. The stride-4 stem puts
the first cell at 56x56 for a 224 crop, the resolution the cells were searched at (112 crop,
stride-2 search stem). ``tiny``/``demo`` keep Fig. 5b's four cells and the stride-2 stem.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pvnas.config import IMPLS, NetworkConfig
from pvnas.errors import ConfigError
from pvnas.nn.fast.network import network_forward
from pvnas.nn.layers import drop_path, preprocess, stem
from pvnas.space.genotype import CellGenotype, Genotype
from pvnas.space.ops import CELL_KINDS, ReLUConvBN, build_op, is_reduction


def expand_stages(stages: Sequence[str], repeats: int) -> tuple[str, ...]:
    """The cell kinds in stacking order: each normal kind of ``stages`` repeated ``repeats`` times."""
    if repeats < 1:
        raise ConfigError(f"repeats (K) must be >= 1, got {repeats}")
    for i, kind in enumerate(stages):
        if kind not in CELL_KINDS:
            raise ConfigError(f"network stages[{i}]: unknown cell kind {kind!r}; expected one of {', '.join(CELL_KINDS)}")
    if not stages:
        raise ConfigError("network stages must list at least one cell kind")
    return tuple(k for kind in stages for k in ([kind] if is_reduction(kind) else [kind] * repeats))


def retrain_stem(channels: int, stride: int) -> nn.Sequential:
    """The search stem (spatial stride 2), plus a ReLU-Conv 1x3x3 stride-2-BN block for stride 4.

    Stride 4 at a 224 crop puts the first cell at 56x56, the resolution the cells were searched
    at (112 crop, stride-2 stem), and keeps PV-NAS-L near the paper's 22 GFLOPs.
    """
    if stride not in (2, 4):
        raise ConfigError(f"network stem_stride must be 2 or 4, got {stride}")
    layers = stem(channels)
    if stride == 4:
        layers.append(ReLUConvBN(channels, channels, (1, 3, 3), stride=2, padding=(0, 1, 1)))
    return layers


class Cell(nn.Module):
    """One derived cell: 4 nodes, each the sum of 2 ops on earlier nodes; output = concat."""

    def __init__(self, kind: str, genotype: CellGenotype, c_pp: int, c_p: int, c: int, reduction_prev: bool) -> None:
        super().__init__()
        self.kind = kind
        self.pre0, self.pre1 = preprocess(c_pp, c_p, c, reduction_prev, affine=True)
        reduction = is_reduction(kind)
        self.ops = nn.ModuleList(build_op(op, c, 2 if reduction and j < 2 else 1) for op, j in genotype.edges)
        self.inputs = [j for _, j in genotype.edges]
        self.droppable = [not isinstance(op, nn.Identity) for op in self.ops]  # DARTS never drops identity
        self.concat = list(genotype.concat)
        self.out_channels = len(self.concat) * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float | torch.Tensor | None = None) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(len(self.ops) // 2):
            total = None
            for e in (2 * node, 2 * node + 1):
                h = self.ops[e](states[self.inputs[e]])
                if self.training and drop_prob is not None and self.droppable[e]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class Network(nn.Module):
    """Stem -> stacked derived cells -> global average pool -> dropout -> linear.

    ``drop_path_prob`` is an attribute, not a constructor constant, so the training loop can
    ramp it as DARTS does; eval mode never drops anything, so inference is deterministic. The forward reads
    it from a 0-dim buffer (``drop_prob``, not saved in state dicts), so that a ramp neither syncs with the host
    nor recompiles a ``torch.compile``d network; once set above 0, training draws the masks at every step (at 0
    they are all ones).
    ``impl`` (an attribute too) picks the forward over the same modules: ``"fast"`` on 2D channels-last
    frames (:mod:`pvnas.nn.fast.network`), ``"reference"`` the literal ``Conv3d`` ops, the oracle.
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int,
        kinds: Sequence[str],
        num_classes: int,
        dropout: float = 0.4,
        drop_path_prob: float = 0.1,
        stem_stride: int = 2,
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if channels < 1 or num_classes < 1:
            raise ConfigError(f"channels and num_classes must be >= 1, got {channels} and {num_classes}")
        self.genotype, self.kinds, self.num_classes = genotype, tuple(kinds), num_classes
        self.register_buffer("drop_prob", torch.tensor(0.0), persistent=False)
        self.drops = False  # whether training applies drop-path: set once drop_path_prob has been > 0
        self.drop_path_prob, self.impl = drop_path_prob, impl
        self.stem = retrain_stem(channels, stem_stride)
        c_pp = c_p = c = channels
        reduction_prev = False
        cells = []
        for kind in self.kinds:
            if is_reduction(kind):
                c *= 2
            cell = Cell(kind, genotype.cells[kind], c_pp, c_p, c, reduction_prev)
            cells.append(cell)
            reduction_prev = is_reduction(kind)
            c_pp, c_p = c_p, cell.out_channels
        self.cells = nn.ModuleList(cells)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_p, num_classes)

    @property
    def drop_path_prob(self) -> float:
        return self._drop_path_prob

    @drop_path_prob.setter
    def drop_path_prob(self, value: float) -> None:
        self._drop_path_prob = float(value)
        self.drop_prob.fill_(value)
        self.drops = self.drops or value > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "fast":
            return network_forward(self, x)
        if self.impl != "reference":
            raise ValueError(f"Network.impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_prob if self.drops else None)
        return self.classifier(self.dropout(self.pool(s1).flatten(1)))


def network_from_config(genotype: Genotype, cfg: NetworkConfig, num_classes: int) -> Network:
    """The retrain network of a (resolved) network config."""
    genotype.validate()
    return Network(
        genotype,
        cfg.channels,
        expand_stages(cfg.stages, cfg.repeats),
        num_classes,
        dropout=cfg.dropout,
        drop_path_prob=cfg.drop_path,
        stem_stride=cfg.stem_stride,
        impl=cfg.impl,
    )
