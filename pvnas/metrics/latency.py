"""Latency where the user runs it (docs/design.md, "Budgets"): a table of what each (cell kind, edge, op) costs in
milliseconds at its positions, plus a fixed part, checked against whole networks.

Each op is timed alone at every position where its kind is stacked, on an input of the shape it sees there, through
the same code the network's forward runs for one edge (``impl="fast"``: the frames path of
:mod:`pvnas.nn.fast.network`, its ReLU included; ``"reference"``: the module). The fixed part is what a whole network
takes beyond its ops' times (stem, cell input preprocessing, node sums, concatenation, head, less what the forward
shares between edges, e.g. one ReLU per input node): the median over a few calibration genotypes. The table's sum is
then checked against whole networks of other random genotypes, and the error stored with the table.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.config import NetworkConfig
from pvnas.nn.fast.layout import to_frames
from pvnas.nn.fast.network import _edge
from pvnas.nn.fast.shared import SharedInput
from pvnas.nn.network import Network, network_from_config
from pvnas.space.budget import CostTable
from pvnas.space.genotype import Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, ops_for
from pvnas.metrics.cost import covering_genotypes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """Milliseconds of one call (CUDA synchronised before and after)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def once(fn: Callable[[], Any]) -> float:
        sync()
        start = time.perf_counter()
        fn()
        sync()
        return (time.perf_counter() - start) * 1e3

    return once


def interleaved_ms(calls: Sequence[Callable[[], Any]], device: torch.device, warmup: int, runs: int) -> list[float]:
    """Median ms of each call, timed in ``runs`` rounds of one call each (after ``warmup`` untimed rounds), so that
    a change of load on the machine during the measurement falls on all of them alike."""
    once = _timer(device)
    times: list[list[float]] = [[] for _ in calls]
    for r in range(warmup + runs):
        for fn, t in zip(calls, times):
            ms = once(fn)
            if r >= warmup:
                t.append(ms)
    return [statistics.median(t) for t in times]


def _op_inputs(genotype: Genotype, cfg: NetworkConfig, num_classes: int, shape: Sequence[int]) -> dict[tuple[int, int], tuple[int, ...]]:
    """The input shape of every edge op ``(cell index, entry)`` in the reference forward (counted on meta)."""
    with torch.device("meta"):
        net = network_from_config(genotype, cfg, num_classes)
    found: dict[tuple[int, int], tuple[int, ...]] = {}

    def record(key: tuple[int, int]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            found[key] = tuple(args[0].shape)
        return hook

    hooks = [op.register_forward_pre_hook(record((i, e))) for i, cell in enumerate(net.cells) for e, op in enumerate(cell.ops)]
    net.eval()
    net.impl = "reference"
    with torch.no_grad():
        net(torch.zeros(shape, device="meta"))
    for h in hooks:
        h.remove()
    return found


def _edge_input(net: Network, x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, T, H, W) as the network's forward holds a node state: frames for ``impl="fast"``."""
    return to_frames(x.contiguous(memory_format=torch.channels_last_3d)) if net.impl == "fast" else x


def _edge_call(net: Network, op: nn.Module, x: torch.Tensor, n: int) -> Callable[[], Any]:
    """One edge of the network's own forward on the node state ``x`` of ``n`` clips (call it without gradients)."""
    if net.impl == "fast":
        return lambda: _edge(op, x, lambda: SharedInput(F.relu(x)), n)
    return lambda: op(x)


def latency_table(cfg: NetworkConfig, num_classes: int, frames: int, crop: int, device: torch.device,
                  batch: int = 1, dtype: str = "float32", warmup: int = 2, runs: int = 5,
                  calibrate: int = 3, check: int = 5, seed: int = 0) -> CostTable:
    """The ``ms`` table of the retrain network of ``cfg`` on ``batch`` clips of ``(3, frames, crop, crop)``, inference
    (eval mode, no gradients); ``meta`` records how it was measured, each position's times and the check of the
    table's sum against ``check`` whole networks of random genotypes (``calibrate`` others give the fixed part).

    Every op at every position and every whole network is timed once per round, ``runs`` rounds."""
    torch_dtype = DTYPES[dtype]
    shape = (batch, 3, frames, crop, crop)
    rows = {pair: r for r, pair in enumerate(edge_inputs())}
    torch.manual_seed(seed)
    # an op is timed once per distinct computation: (position, module configuration, input shape); the edges of a
    # normal cell that run the same op on same-shaped nodes share that timing (fewer calls, more rounds, less noise)
    timing_of: dict[tuple[int, int, int], tuple[int, str, tuple[int, ...]]] = {}  # (cell, edge row, op) -> its computation
    calls: dict[tuple[int, str, tuple[int, ...]], Callable[[], Any]] = {}
    inputs_of: dict[tuple[int, ...], torch.Tensor] = {}  # one random input per shape
    kinds: tuple[str, ...] = ()
    for genotype in covering_genotypes():
        shapes = _op_inputs(genotype, cfg, num_classes, shape)
        net = network_from_config(genotype, cfg, num_classes).to(device=device, dtype=torch_dtype).eval()
        kinds = net.kinds
        for i, cell in enumerate(net.cells):
            for e, (op_name, j) in enumerate(genotype.cells[cell.kind].edges):
                computation = (i, repr(cell.ops[e]), shapes[(i, e)])
                timing_of[(i, rows[(2 + e // 2, j)], ops_for(cell.kind).index(op_name))] = computation
                if computation not in calls:
                    if shapes[(i, e)] not in inputs_of:
                        x = torch.randn(shapes[(i, e)], device=device, dtype=torch_dtype)
                        inputs_of[shapes[(i, e)]] = _edge_input(net, x)
                    calls[computation] = _edge_call(net, cell.ops[e], inputs_of[shapes[(i, e)]], batch)
    genotypes = [Genotype.random(seed * 1000 + k) for k in range(calibrate + check)]
    nets = [network_from_config(g, cfg, num_classes).to(device=device, dtype=torch_dtype).eval() for g in genotypes]
    clip = torch.randn(shape, device=device, dtype=torch_dtype)
    with torch.no_grad():
        ms = interleaved_ms(list(calls.values()) + [lambda net=net: net(clip) for net in nets], device, warmup, runs)
    timed, whole = dict(zip(calls, ms[: len(calls)])), ms[len(calls) :]
    per_position = {key: timed[computation] for key, computation in timing_of.items()}
    ops = {kind: [[0.0] * len(ops_for(kind)) for _ in edge_inputs()] for kind in CELL_KINDS}
    for (i, r, o), value in per_position.items():
        ops[kinds[i]][r][o] += value
    table = CostTable("ms", 0.0, {k: tuple(tuple(r) for r in v) for k, v in ops.items()})
    sums = [table.of(g) for g in genotypes]
    fixed = statistics.median(w - s for w, s in zip(whole[:calibrate], sums[:calibrate]))
    checks = [{"seed": seed * 1000 + k, "measured_ms": w, "table_ms": fixed + s, "error": (fixed + s - w) / w}
              for k, (w, s) in enumerate(zip(whole, sums)) if k >= calibrate]
    positions = [{"cell": i, "kind": kind,
                  "ms": [[per_position.get((i, r, o), 0.0) for o in range(len(ops_for(kind)))] for r in range(len(rows))]}
                 for i, kind in enumerate(kinds)]
    meta = {"unit": "ms", "device": str(device), "device_name": _device_name(device), "dtype": dtype,
            "threads": torch.get_num_threads(), "batch": batch, "input": [3, frames, crop, crop],
            "num_classes": num_classes, "warmup": warmup, "runs": runs, "impl": cfg.impl, "channels": cfg.channels,
            "repeats": cfg.repeats, "stages": list(cfg.stages), "stem_stride": cfg.stem_stride, "torch": torch.__version__,
            "fixed_from": f"median over {calibrate} calibration genotypes of the whole network less its ops",
            "calibration_seeds": [seed * 1000 + k for k in range(calibrate)], "check": checks, "positions": positions}
    return CostTable("ms", fixed, table.ops, meta)


def _device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name where the system says it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
