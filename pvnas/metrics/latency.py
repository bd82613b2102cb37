"""Latency where the user runs it (docs/design.md, "Budgets"): a table of what each (cell kind, edge, op) costs in
milliseconds at its positions, plus a fixed part, checked against whole networks.

Each op is timed alone at every position where its kind is stacked, on an input of the shape and memory layout it
reads there (captured from one run of the network's own forward: in the ``fast`` path some node states are
channels-last frames and some are not, and a pool runs three times slower on the latter), through the same code the
forward runs for one edge (``impl="fast"``: the frames path of :mod:`pvnas.nn.fast.network`, its ReLU included;
``"reference"``: the module). The fixed part is what a whole network
takes beyond its ops' times (stem, cell input preprocessing, node sums, concatenation, head, less what the forward
shares between edges, e.g. one ReLU per input node): the median over a few calibration genotypes. The table's sum is
then checked against whole networks of other random genotypes, and the error stored with the table.
"""

from __future__ import annotations

import platform
import statistics
import time
from unittest import mock
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.config import NetworkConfig
from pvnas.errors import ConfigError
from pvnas.nn.fast import network as fast_network
from pvnas.nn.fast.network import _edge as edge_forward
from pvnas.nn.fast.shared import SharedInput
from pvnas.nn.network import Network, network_from_config
from pvnas.space.budget import CostTable
from pvnas.space.genotype import Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, ops_for
from pvnas.metrics.cost import covering_genotypes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def _timer(device: torch.device, clock: str) -> Callable[[Callable[[], Any]], float]:
    """Milliseconds of one call (CUDA synchronised before and after) on ``clock``: ``wall`` time, or the calling
    thread's ``cpu`` time (one torch thread on a CPU: the latency the call would have on an idle core, unmoved by
    other processes that share the machine)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    now = CLOCKS[clock]

    def once(fn: Callable[[], Any]) -> float:
        sync()
        start = now()
        fn()
        sync()
        return (now() - start) * 1e3

    return once


def interleaved_ms(calls: Sequence[Callable[[], Any]], device: torch.device, warmup: int, runs: int,
                   clock: str = "wall") -> list[float]:
    """Median ms of each call, timed in ``runs`` rounds of one call each (after ``warmup`` untimed rounds), so that
    a change of load on the machine during the measurement falls on all of them alike."""
    once = _timer(device, clock)
    times: list[list[float]] = [[] for _ in calls]
    for r in range(warmup + runs):
        for fn, t in zip(calls, times):
            ms = once(fn)
            if r >= warmup:
                t.append(ms)
    return [statistics.median(t) for t in times]


Layout = tuple[tuple[int, ...], tuple[int, ...]]  # (shape, strides) of a node state as an edge reads it


def _edge_inputs(net: Network, clip: torch.Tensor) -> dict[tuple[int, int], Layout]:
    """The shape and memory layout of the node state each edge ``(cell index, entry)`` reads in one run of the
    network's own forward (``fast``: the frames its per-edge function receives, some channels-last, some not;
    ``reference``: the 5D tensors its op modules receive)."""
    found: dict[tuple[int, int], Layout] = {}
    position = {id(op): (i, e) for i, cell in enumerate(net.cells) for e, op in enumerate(cell.ops)}

    def seen(op: nn.Module, x: torch.Tensor) -> None:
        found.setdefault(position[id(op)], (tuple(x.shape), tuple(x.stride())))

    if net.impl == "fast":
        def spy(op: nn.Module, x: torch.Tensor, relu: Callable[[], SharedInput], n: int) -> tuple[torch.Tensor, bool]:
            seen(op, x)
            return edge_forward(op, x, relu, n)

        with mock.patch.object(fast_network, "_edge", spy), torch.no_grad():  # the forward's per-edge function, spied on
            net(clip)
    else:
        hooks = [op.register_forward_pre_hook(lambda m, args: seen(m, args[0])) for cell in net.cells for op in cell.ops]
        with torch.no_grad():
            net(clip)
        for h in hooks:
            h.remove()
    return found


def _edge_call(net: Network, op: nn.Module, x: torch.Tensor, n: int) -> Callable[[], Any]:
    """One edge of the network's own forward on the node state ``x`` of ``n`` clips (call it without gradients)."""
    if net.impl == "fast":
        return lambda: edge_forward(op, x, lambda: SharedInput(F.relu(x)), n)
    return lambda: op(x)


def latency_table(cfg: NetworkConfig, num_classes: int, frames: int, crop: int, device: torch.device,
                  batch: int = 1, dtype: str = "float32", warmup: int = 2, runs: int = 5,
                  calibrate: int = 3, check: int = 5, seed: int = 0, clock: str = "wall") -> CostTable:
    """The ``ms`` table of the retrain network of ``cfg`` on ``batch`` clips of ``(3, frames, crop, crop)``, inference
    (eval mode, no gradients); ``meta`` records how it was measured, each position's times and the check of the
    table's sum against ``check`` whole networks of random genotypes (``calibrate`` others give the fixed part).

    Every op at every position and every whole network is timed once per round, ``runs`` rounds."""
    if clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise ConfigError("--clock cpu times one CPU thread: it needs --device cpu --threads 1")
    torch_dtype = DTYPES[dtype]
    shape = (batch, 3, frames, crop, crop)
    rows = {pair: r for r, pair in enumerate(edge_inputs())}
    torch.manual_seed(seed)
    # an op is timed once per distinct computation: (position, module configuration, input shape); the edges of a
    # normal cell that run the same op on same-shaped nodes share that timing (fewer calls, more rounds, less noise)
    timing_of: dict[tuple[int, int, int], tuple[int, str, Layout]] = {}  # (cell, edge row, op) -> its computation
    calls: dict[tuple[int, str, Layout], Callable[[], Any]] = {}
    inputs_of: dict[Layout, torch.Tensor] = {}  # one random input per shape and layout
    kinds: tuple[str, ...] = ()
    clip = torch.randn(shape, device=device, dtype=torch_dtype)
    for genotype in covering_genotypes():
        net = network_from_config(genotype, cfg, num_classes).to(device=device, dtype=torch_dtype).eval()
        layouts = _edge_inputs(net, clip)
        kinds = net.kinds
        for i, cell in enumerate(net.cells):
            for e, (op_name, j) in enumerate(genotype.cells[cell.kind].edges):
                computation = (i, repr(cell.ops[e]), layouts[(i, e)])
                timing_of[(i, rows[(2 + e // 2, j)], ops_for(cell.kind).index(op_name))] = computation
                if computation not in calls:
                    if layouts[(i, e)] not in inputs_of:
                        size, stride = layouts[(i, e)]
                        inputs_of[layouts[(i, e)]] = torch.empty_strided(size, stride, device=device, dtype=torch_dtype).normal_()
                    calls[computation] = _edge_call(net, cell.ops[e], inputs_of[layouts[(i, e)]], batch)
    genotypes = [Genotype.random(seed * 1000 + k) for k in range(calibrate + check)]
    nets = [network_from_config(g, cfg, num_classes).to(device=device, dtype=torch_dtype).eval() for g in genotypes]
    with torch.no_grad():
        ms = interleaved_ms(list(calls.values()) + [lambda net=net: net(clip) for net in nets], device, warmup, runs, clock)
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
            "num_classes": num_classes, "warmup": warmup, "runs": runs, "clock": clock, "impl": cfg.impl, "channels": cfg.channels,
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
