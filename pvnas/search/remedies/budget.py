"""A search that aims at a budget (docs/design.md, "Budgets"): ``--target-gflops X`` (``--target-params``,
``--target-ms MS:TABLE``) adds to the alpha loss the network's expected cost under softmax(alpha), signed by the
exact cost of the genotype derived at that moment: above the target it pushes the cost down, inside a band of 5%
below it it does nothing, further below it pushes up (a budget left unspent is accuracy left unspent). Soft
penalties alone miss their targets (ProxylessNAS in NNI drifted from a 1,000 ms reference to ~7,000 ms); here every
derivation of the search (per epoch and at its end) is the exact budgeted one (:meth:`Genotype.derive` with a
:class:`~pvnas.space.genotype.Budget`), so the genotype never exceeds the target, and spends it: one that would cost
under 95% of the target tilts its score toward cost until it lands in the band (where the space allows). The term
decides how much alpha score the budget costs.

The expected cost is the fixed part plus, per edge, the chance that the edge is kept (2 of a node's inputs: 2 / its
inputs, or twice the PC-DARTS edge weight) times the mean of its ops' costs under softmax(alpha) over the ops a
derivation may keep (not ``zero``). Costs are those of the retrain network of the search's preset (``demo``/``tiny``
for theirs, the paper's ``L`` for the paper's search and any other), at its clip, with 400 classes as ``pvnas flops``
counts; ``--target-ms`` uses the network and the device of its ``pvnas latency`` table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from pvnas.config import NETWORK_PRESETS, NetworkConfig, SearchConfig, from_dict
from pvnas.errors import ConfigError, PvnasError
from pvnas.metrics.cost import network_costs
from pvnas.search.remedies.base import Remedy, Value
from pvnas.space.budget import CostTable
from pvnas.space.genotype import NODES, Budget, Genotype, cheapest
from pvnas.space.ops import CELL_KINDS, ops_for

BAND = 0.05  # no push while the derived cost is within 5% below the target
WEIGHT = 1.0  # of the expected cost, as a share of the target, in the alpha loss
NUM_CLASSES = 400  # the classifier a budget counts, as `pvnas flops` does by default


def budget_network(cfg: SearchConfig) -> tuple[str, NetworkConfig]:
    """The retrain network a search's gflops/params budget is measured on: the retrain preset with the search's clip
    (``tiny``, ``demo``), else the paper's ``L`` (the paper's search retrains as L)."""
    for name, net in NETWORK_PRESETS.items():
        if net.clip == cfg.clip:
            return name, net
    return "L", NETWORK_PRESETS["L"]


def network_label(preset: str, cfg: NetworkConfig, frames: int, crop: int, num_classes: int) -> str:
    return f"{preset} C={cfg.channels} K={cfg.repeats} {frames}x{crop}x{crop} {num_classes} classes"


class _Target(Remedy):
    """A target on one cost; subclasses say which (``metric``: the table's, ``unit``: the flag's, ``scale``)."""

    metric: ClassVar[str]
    unit: ClassVar[str]
    scale: ClassVar[float]
    rule = "> 0"

    @classmethod
    def valid(cls, value: Value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0

    def __init__(self, value: Value, cfg: SearchConfig) -> None:
        super().__init__(value, cfg)
        self._table: CostTable | None = None
        self._costs: dict[torch.device, dict[str, torch.Tensor]] = {}
        self.check_reachable()

    def check_reachable(self) -> None:
        """Refuse, before the search runs, a target no genotype of the space reaches (within the cap)."""
        cap = self.cfg.remedies.get("max_param_free")
        low = cheapest([self.table()], cap)[self.table().metric]
        if self.limit() < low:
            raise ConfigError(f"{self.flag()} {self.value}: below the cheapest network the search could derive "
                              f"({low / self.scale:.6g} {self.unit} on {self.network()})")

    def table(self) -> CostTable:
        if self._table is None:
            preset, net = budget_network(self.cfg)
            tables = dict(zip(("macs", "params"), network_costs(net, NUM_CLASSES, net.clip.frames, net.clip.crop)))
            self._table = tables[self.metric]
        return self._table

    def network(self) -> str:
        preset, net = budget_network(self.cfg)
        return network_label(preset, net, net.clip.frames, net.clip.crop, NUM_CLASSES)

    def limit(self) -> float:
        """The target in the table's unit."""
        return float(self.value) * self.scale  # type: ignore[arg-type]

    def expected(self, model: nn.Module) -> torch.Tensor:
        """The expected cost under softmax(alpha) (differentiable in the alphas and PC-DARTS betas)."""
        table = self.table()
        total = None
        for kind in CELL_KINDS:
            alpha = model.alphas[kind]
            if alpha.device not in self._costs:
                self._costs[alpha.device] = {k: torch.tensor(table.ops[k], dtype=torch.float32, device=alpha.device)
                                             for k in CELL_KINDS}
            cost = self._costs[alpha.device][kind]
            zero = ops_for(kind).index("zero")
            probs = torch.softmax(torch.cat([alpha[:, :zero], alpha[:, zero + 1 :]], dim=1), dim=-1)
            per_edge = (probs * torch.cat([cost[:, :zero], cost[:, zero + 1 :]], dim=1)).sum(-1)
            edge_weights = model.edge_weights(kind)
            keep = 2 * edge_weights if edge_weights is not None else torch.tensor(
                [2 / node for node in range(2, 2 + NODES) for _ in range(node)], device=alpha.device)
            term = (keep * per_edge).sum()
            total = term if total is None else total + term
        assert total is not None
        return total + table.fixed

    def derived_cost(self, model: nn.Module) -> float:
        """The exact cost of the genotype the search derives now without its budget (the paper's rule, the cap)."""
        genotype = Genotype.derive(model.alpha_dict(), edge_weights=model.edge_weight_dict() or None,
                                   max_param_free=self.cfg.remedies.get("max_param_free"))
        return self.table().of(genotype)

    def alpha_loss(self, model: nn.Module, progress: float) -> torch.Tensor | None:
        target, cost = self.limit(), self.derived_cost(model)
        sign = 1.0 if cost > target else -1.0 if cost < (1 - BAND) * target else 0.0
        return sign * WEIGHT * self.expected(model) / target if sign else None

    def epoch_record(self, model: nn.Module) -> dict[str, Any]:
        with torch.no_grad():
            expected = float(self.expected(model))
        return {f"target_{self.unit}": self.limit() / self.scale, f"expected_{self.unit}": expected / self.scale,
                f"derived_{self.unit}": self.derived_cost(model) / self.scale}

    def derive_options(self) -> dict[str, Any]:
        """Every target of the search as one budget (each target remedy answers the same, so they combine)."""
        targets = remedies_of_targets(self.cfg)
        return {"budget": Budget([(t.table(), t.limit()) for t in targets], targets[0].network(), spend=1 - BAND)}


class TargetGflops(_Target):
    name = "target_gflops"
    help = ("Aim the search at this many GFLOPs per view of the retrained network (multiply-adds / 1e9, as pvnas "
            "flops): an expected-cost term in the alpha loss, and every derivation within it (exact).")
    metric, unit, scale = "macs", "gflops", 1e9


class TargetParams(_Target):
    name = "target_params"
    help = "Aim the search at this many parameters of the retrained network (as --target-gflops)."
    metric, unit, scale = "params", "params", 1.0


class TargetMs(_Target):
    name = "target_ms"
    help = ("Aim the search at MS:TABLE, this many milliseconds per the `pvnas latency` TABLE (its network and "
            "device), as --target-gflops.")
    type = str
    off = None
    rule = "MS:TABLE with MS > 0 and TABLE a `pvnas latency` file"
    metric, unit, scale = "ms", "ms", 1.0

    @classmethod
    def valid(cls, value: Value) -> bool:
        ms, _, path = str(value).partition(":")
        try:
            return value is None or (float(ms) > 0 and bool(path))
        except ValueError:
            return False

    def table(self) -> CostTable:
        if self._table is None:
            path = str(self.value).partition(":")[2]
            self._table = CostTable.load(Path(path))
            if self._table.metric != "ms":
                raise ConfigError(f"--target-ms: {path} is a {self._table.metric} table, not a `pvnas latency` one")
        return self._table

    def limit(self) -> float:
        return float(str(self.value).partition(":")[0])

    def network(self) -> str:
        meta = self.table().meta
        return f"latency table {meta.get('device_name', '?')} batch {meta.get('batch', '?')} input {meta.get('input', '?')}"


TARGETS: tuple[type[_Target], ...] = (TargetGflops, TargetParams, TargetMs)


def remedies_of_targets(cfg: SearchConfig) -> list[_Target]:
    """The target remedies ``cfg`` switches on."""
    return [cls(cfg.remedies[cls.name], cfg) for cls in TARGETS if cfg.remedies.get(cls.name) not in (None, cls.off)]


def run_budget(search: dict[str, Any]) -> Budget | None:
    """The budget a search with targets derived with (its config.yaml's ``search`` section), None without."""
    try:
        cfg = from_dict(SearchConfig, search)
        targets = remedies_of_targets(cfg)
    except PvnasError as exc:
        raise ConfigError(f"config.yaml: search: {exc}") from None
    return Budget([(t.table(), t.limit()) for t in targets], targets[0].network(), spend=1 - BAND) if targets else None


def budget_of(search: dict[str, Any], gflops: float | None = None, params: float | None = None, ms: float | None = None,
              latency: Path | None = None, preset: str | None = None, frames: int | None = None,
              crop: int | None = None, num_classes: int = NUM_CLASSES) -> Budget | None:
    """A budget from ``pvnas derive``'s limits (None without any): GFLOPs and parameters of the retrain ``preset``
    (default: the network the search's targets use, from its config.yaml ``search`` section) at ``frames`` x
    ``crop`` (default: the preset's clip); milliseconds per a ``pvnas latency`` table."""
    for flag, value in (("--max-gflops", gflops), ("--max-params", params), ("--max-ms", ms)):
        if value is not None and not value > 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    if (ms is None) != (latency is None):
        raise ConfigError("--max-ms and --latency go together: the limit and the `pvnas latency` table it is measured by")
    limits: list[tuple[CostTable, float]] = []
    labels = []
    if gflops is not None or params is not None:
        if preset is None:
            try:
                preset, net = budget_network(from_dict(SearchConfig, search))
            except PvnasError as exc:
                raise ConfigError(f"config.yaml: search: {exc}") from None
        elif preset not in NETWORK_PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; expected one of: {', '.join(NETWORK_PRESETS)}")
        net = NETWORK_PRESETS[preset]
        frames, crop = frames or net.clip.frames, crop or net.clip.crop
        if min(frames, crop, num_classes) < 1:
            raise ConfigError(f"--frames, --size and --num-classes must be >= 1, got {frames}, {crop}, {num_classes}")
        macs, parameters = network_costs(net, num_classes, frames, crop)
        limits += [(t, v * scale) for t, v, scale in ((macs, gflops, 1e9), (parameters, params, 1.0)) if v is not None]
        labels.append(network_label(preset, net, frames, crop, num_classes))
    if ms is not None and latency is not None:
        table = CostTable.load(latency)
        if table.metric != "ms":
            raise ConfigError(f"--latency {latency}: a {table.metric} table, not a `pvnas latency` one")
        limits.append((table, ms))
        labels.append(f"latency table {latency}")
    return Budget(limits, "; ".join(labels)) if limits else None
