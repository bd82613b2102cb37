"""What each derivation choice costs in the retrained network (docs/design.md, "Budgets").

For a network config and input clip: the multiply-adds and parameters that each (cell kind, supernet edge, op)
adds, summed over every position where the kind is stacked (its channels, frames, resolution and stride there),
plus the fixed part (stem, cell input preprocessing, classifier). They are read off the modules that
``pvnas flops`` counts (:func:`~pvnas.metrics.flops.count_macs` per module, parameters per module) in a few
networks whose genotypes together keep every (edge, op) of every kind, built on the meta device (shapes only,
nothing computed). The fixed part is each network's total less its ops, and must come out the same for every
network: so fixed + a genotype's edges equals ``pvnas flops`` of that genotype, to the MAC and the parameter.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from pvnas.config import NetworkConfig
from pvnas.metrics.flops import count_macs
from pvnas.nn.network import network_from_config
from pvnas.space.budget import CostTable
from pvnas.space.genotype import CellGenotype, Genotype, edge_inputs, node_rows
from pvnas.space.ops import CELL_KINDS, ops_for
from pvnas.version import __version__

log = logging.getLogger(__name__)


def covering_genotypes() -> list[Genotype]:
    """Genotypes that together keep every (edge, non-zero op) of every cell kind: per node, the (input, op)
    pairs taken two at a time (18 genotypes for 5 inputs x 7 ops)."""
    per_kind_node: dict[str, list[list[tuple[tuple[str, int], tuple[str, int]]]]] = {}
    for kind in CELL_KINDS:
        ops = ops_for(kind)[1:]  # never zero
        per_kind_node[kind] = []
        for node in range(2, 2 + len(node_rows())):
            items = [(op, j) for op in ops for j in range(node)]  # j cycles fastest: neighbours differ in j
            if len(items) % 2:
                items.append((ops[0], (items[-1][1] + 1) % node))
            pairs = [tuple(sorted(items[i : i + 2], key=lambda e: e[1])) for i in range(0, len(items), 2)]
            per_kind_node[kind].append(pairs)  # type: ignore[arg-type]
    count = max(len(pairs) for nodes in per_kind_node.values() for pairs in nodes)
    return [Genotype({kind: CellGenotype(tuple(e for pairs in nodes for e in pairs[t % len(pairs)]))
                      for kind, nodes in per_kind_node.items()}, {"source": "cost cover", "index": t})
            for t in range(count)]


# the modules whose code decides what a network computes: a change to any of them makes the cached tables stale
_SOURCES = ("space/ops.py", "space/genotype.py", "nn/layers.py", "nn/network.py", "metrics/flops.py", "metrics/cost.py")


def _cache_file(cfg: NetworkConfig, num_classes: int, frames: int, crop: int) -> Path:
    """Where the tables of these arguments are kept: ``$PVNAS_CACHE`` or ``~/.cache/pvnas`` (where generated datasets
    live too), named by a hash of the arguments, the versions and the source of the modules that build and count."""
    root = Path(__file__).resolve().parents[1]
    key = hashlib.sha256(json.dumps({
        "pvnas": __version__, "torch": torch.__version__, "network": [cfg.channels, cfg.repeats, list(cfg.stages), cfg.stem_stride],
        "input": [num_classes, frames, crop], "sources": [hashlib.sha256((root / f).read_bytes()).hexdigest() for f in _SOURCES],
    }).encode()).hexdigest()[:24]
    return Path(os.environ.get("PVNAS_CACHE") or Path.home() / ".cache" / "pvnas") / "costs" / f"{key}.json"


@functools.lru_cache(maxsize=16)
def network_costs(cfg: NetworkConfig, num_classes: int, frames: int, crop: int) -> tuple[CostTable, CostTable]:
    """The ``macs`` (per view) and ``params`` tables of the retrain network of ``cfg`` on ``(3, frames, crop,
    crop)`` clips with ``num_classes`` outputs. Kept on disk (:func:`_cache_file`; a file that does not read back as
    two valid tables is counted again) and in memory: the same arguments give the same (immutable) tables."""
    path = _cache_file(cfg, num_classes, frames, crop)
    try:
        macs, params = (CostTable.from_dict(d, str(path)) for d in json.loads(path.read_text()))
        if (macs.metric, params.metric) == ("macs", "params"):
            return macs, params
    except (OSError, ValueError, TypeError):  # absent, unreadable or not ours: count
        pass
    tables = _count_costs(cfg, num_classes, frames, crop)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps([t.to_dict() for t in tables]))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: count again next time
        log.debug("cost tables not cached at %s (%s)", path, exc)
    return tables


def _count_costs(cfg: NetworkConfig, num_classes: int, frames: int, crop: int) -> tuple[CostTable, CostTable]:
    """Count the tables (:func:`network_costs`)."""
    rows = {pair: r for r, pair in enumerate(edge_inputs())}
    found: dict[str, dict[tuple[str, int, int], int]] = {"macs": {}, "params": {}}
    fixed: dict[str, set[int]] = {"macs": set(), "params": set()}
    for genotype in covering_genotypes():
        with torch.device("meta"):
            net = network_from_config(genotype, cfg, num_classes)
        total_macs, per_module = count_macs(net, (1, 3, frames, crop, crop))
        totals = {"macs": total_macs, "params": sum(p.numel() for p in net.parameters())}
        edges_sum = {"macs": 0, "params": 0}
        seen: dict[str, dict[tuple[str, int, int], int]] = {"macs": {}, "params": {}}
        for i, cell in enumerate(net.cells):
            for e, (op, j) in enumerate(genotype.cells[cell.kind].edges):
                key = (cell.kind, rows[(2 + e // 2, j)], ops_for(cell.kind).index(op))
                cost = {"macs": per_module.get(f"cells.{i}.ops.{e}", 0),
                        "params": sum(p.numel() for p in cell.ops[e].parameters())}
                for metric, value in cost.items():
                    seen[metric][key] = seen[metric].get(key, 0) + value  # summed over the kind's positions
                    edges_sum[metric] += value
        for metric in found:
            for key, value in seen[metric].items():
                if found[metric].setdefault(key, value) != value:
                    raise RuntimeError(f"{metric} of {key} differs between networks: the cost model does not add up")
            fixed[metric].add(totals[metric] - edges_sum[metric])
    if any(len(v) != 1 for v in fixed.values()):
        raise RuntimeError(f"the fixed part differs between genotypes ({fixed}): the cost model does not add up")
    meta = {"channels": cfg.channels, "repeats": cfg.repeats, "stages": list(cfg.stages), "stem_stride": cfg.stem_stride,
            "input": [3, frames, crop, crop], "num_classes": num_classes}
    tables = []
    for metric in ("macs", "params"):
        ops = {kind: tuple(tuple(float(found[metric].get((kind, r, o), 0)) for o in range(len(ops_for(kind))))
                           for r in range(len(edge_inputs()))) for kind in CELL_KINDS}
        tables.append(CostTable(metric, float(fixed[metric].pop()), ops, {**meta, "unit": metric}))
    return tables[0], tables[1]
