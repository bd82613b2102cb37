"""Costing one training step: its peak memory without ever running a step that would not fit, then its time
as a run will see it (warm-up excluded), at the requested batch where that fits.

The rules, and why:

* **Memory first.** A conservative prediction from the activations autograd keeps (counted on fake tensors in
  the dtype the step runs in: :func:`~pvnas.estimate.memory.counted_activations_mb`) says whether the requested
  batch surely fits. If not, steps at batch 1 and 2 (each only if predicted to fit) give the measured line
  peak(b), which says whether the requested batch fits and which batch does (``max_batch``). On CUDA the
  measured slope is exact (``max_memory_allocated``); on CPU the resident-memory slope is floored at the count
  (a heap that keeps batch 1's memory hides growth).
* **An out-of-memory is an answer.** A probe or timed step that runs out of memory all the same ends the
  measurement: "not measured: out of memory at batch B", with the largest batch that ran as ``max_batch``.
* **Warm-up is not timed.** The first steps at a shape select algorithms (``cudnn.benchmark``), compile
  (``--compile``) and fill caches: on an H200 the first search step took 1.8x a warmed one.
* **The requested batch is timed when it fits.** A GPU is far from saturated at a small batch, so a step
  time scaled linearly from one is wrong (8x on an H200): on CUDA nothing is extrapolated, and a batch that
  does not fit is timed at ``max_batch`` and said so. A CPU is saturated at any batch, so there a smaller
  batch may stand in for a requested one that would take longer than the time budget, its time scaled to
  the batch as ``fixed + per_clip * batch`` (the fixed part, from the probes at batch 1 and 2, is most of a
  tiny network's step: scaling in proportion projected 4x too much): the batch grows by doubling from the
  probes while its measured step time says the next one fits the budget (first steps are cold: predicting
  from them alone chose batches 2-4x too small).
* **A compiled step (``static``) runs at the requested batch only**: each other batch would compile a graph of
  its own, and its compilation would eat the budget; the memory decision is then the prediction alone.
* **As many timed steps as the budget allows** (at least ``steps``, at most :data:`MAX_TIMED_STEPS`), and
  their median: one stray slow step (page reclaim, another process; seen: 11 s among 0.93 s steps on CPU)
  must not decide a projection over thousands. The device is synchronised before every clock reading.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from pvnas.runtime.device import amp_dtype, synchronize, to_device
from pvnas.estimate.memory import PeakMeter, available_mb

log = logging.getLogger(__name__)

MEMORY_SAFETY = 0.9  # share of the available memory a planned step may use (the rest: other processes, slack)
TIME_BUDGET = 30.0  # seconds of steps (probes, warm-up, timed) an estimate spends, not counting a first slow call
MAX_TIMED_STEPS = 30


@dataclass(frozen=True)
class StepCost:
    """A training step at the requested ``batch``: its time and peak memory, and where each number comes from.

    Memory is the growth of the peak over what the process held with the model built (RSS on CPU, allocated
    on CUDA). ``max_batch`` is the largest batch predicted to fit in ``available_memory_mb`` (None: not probed,
    the requested batch fits with room to spare; 0: not even one clip fits).
    """

    batch: int
    step_seconds: float | None  # None: not measured (nothing fits, or a GPU batch that does not fit)
    step_seconds_source: str
    measured_batch: int
    measured_step_seconds: float | None  # median of the timed steps at measured_batch
    warmup_steps: int
    timed_steps: int
    peak_step_memory_mb: float
    peak_step_memory_source: str
    available_memory_mb: float | None
    fits_in_memory: bool
    max_batch: int | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MemoryLine:
    """peak(b) = fixed + b * per_clip (MiB), from the steps at batch 1 and 2, and the seconds those took."""

    fixed: float
    per_clip: float
    probe_seconds: dict[int, float]

    def max_batch(self, room: float) -> int:
        return max(0, math.floor((room - self.fixed) / self.per_clip))


def probe_memory(timed: Callable[[int], tuple[float, float]], predicted: Callable[[int], float], room: float,
                 per_clip_count: float, floored: bool) -> MemoryLine | None:
    """Steps at batch 1 and 2, each only if predicted to fit in ``room`` (batch 2 from batch 1's measured peak and
    the counted ``per_clip_count``); None if not even batch 1 may run. ``floored``: the measured slope is at least
    the count (resident memory, where a heap that keeps batch 1's memory hides growth)."""
    if predicted(1) > room:
        return None
    seconds: dict[int, float] = {}
    seconds[1], peak_one = timed(1)
    per_clip = 2 * per_clip_count  # (a conservative guess where batch 2 may not run)
    if peak_one + 2 * per_clip_count <= room:
        seconds[2], peak_two = timed(2)
        per_clip = max(peak_two - peak_one, per_clip_count if floored else 1e-3)
    return MemoryLine(peak_one - per_clip, per_clip, seconds)


def batch_scaling(probe_seconds: dict[int, float]) -> Callable[[int, int], float]:
    """``factor(b, target)``: how a CPU step's time grows from batch ``b`` to ``target``, ``t(b) = fixed + per_clip
    * b`` with the fixed part (per-op overhead: most of a tiny network's step) from the probes at batch 1 and 2
    (both first steps at their batch, cold alike); in proportion to the batch without both probes or a fixed
    part (a large network's step)."""
    t1, t2 = probe_seconds.get(1), probe_seconds.get(2)
    per_clip = None if t1 is None or t2 is None or t2 <= t1 else t2 - t1
    fixed = 0.0 if per_clip is None else max(0.0, 2 * t1 - t2)
    per_clip = per_clip or 1.0
    return lambda b, target: (fixed + per_clip * target) / (fixed + per_clip * b)


def grow_batch(timed: Callable[[int], tuple[float, float]], b: int, seconds: float, target: int, deadline: float,
               steps: int, clock: Callable[[], float], scaling: Callable[[int, int], float]) -> int:
    """The largest batch up to ``target``, doubling from ``b`` (whose last step took ``seconds``), whose step
    time (scaled by ``scaling`` from the last one measured) lets one more step and ``steps`` timed ones end
    before ``deadline``; every batch tried has run once, so the one returned is warm."""
    while b < target:
        nxt = min(2 * b, target)
        if clock() + seconds * scaling(b, nxt) * (2 + steps) > deadline:
            break
        seconds, _ = timed(nxt)
        b = nxt
    return b


def time_steps(timed: Callable[[int], tuple[float, float]], batch: int, *, warmup: int, steps: int,
               deadline: float, clock: Callable[[], float]) -> tuple[list[float], float]:
    """``warmup`` untimed steps at ``batch``, then timed ones: at least ``steps``, more while ``deadline`` (on
    ``clock``) allows, at most :data:`MAX_TIMED_STEPS`. Returns the timed steps' seconds and the highest peak."""
    peak = 0.0
    for _ in range(warmup):
        peak = max(peak, timed(batch)[1])
    times: list[float] = []
    while len(times) < steps or (len(times) < MAX_TIMED_STEPS and clock() + statistics.fmean(times) < deadline):
        seconds, step_peak = timed(batch)
        times.append(seconds)
        peak = max(peak, step_peak)
    return times, peak


class OutOfMemory(Exception):
    """A step at ``batch`` ran out of memory (raised by the timed step, caught by :func:`cost_step`)."""

    def __init__(self, batch: int) -> None:
        super().__init__(f"out of memory at batch {batch}")
        self.batch = batch


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's failure to allocate."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def cost_step(
    run_step: Callable[[int], None],
    batch: int,
    *,
    device: torch.device,
    activations_mb: tuple[float, float],
    state_mb: float,
    steps: int = 3,
    time_budget: float = TIME_BUDGET,
    linear: bool | None = None,
    static: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> StepCost:
    """Cost one training step of ``batch`` clips (``run_step(b)`` runs one at batch ``b``) by the rules of the
    module docstring. ``activations_mb`` = (batch 1, per further clip) of what autograd keeps, ``state_mb`` the
    gradients and optimizer state not yet allocated; ``linear`` says whether step time may be scaled by batch
    (default: on CPU only); ``static``: the step runs at ``batch`` only (``--compile``)."""
    linear = device.type == "cpu" if linear is None else linear
    meter, available = PeakMeter(device), available_mb(device)
    room = math.inf if available is None else MEMORY_SAFETY * available
    one, per_clip = activations_mb
    predicted = lambda b: state_mb + 2 * (one + (b - 1) * per_clip)  # noqa: E731  (transient grads ~ activations)
    ran: list[int] = []  # batches whose step completed

    def now() -> float:
        meter.sync()  # (queued device work belongs to the step before the reading)
        return clock()

    def timed(b: int) -> tuple[float, float]:
        meter.start()
        t0 = now()
        try:
            run_step(b)
            seconds = now() - t0
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise OutOfMemory(b) from None  # (drops the traceback's frames, and the tensors they hold)
        ran.append(b)
        return seconds, meter.peak()

    result = dict(batch=batch, available_memory_mb=available)
    deadline = now() + time_budget
    try:
        if static:
            return _cost_static(timed, batch, result, predicted, room, steps, deadline, now)
        probe = linear or predicted(batch) > room  # a CPU probes for time too; a GPU only when in doubt about memory
        line = probe_memory(timed, predicted, room, per_clip, floored=device.type == "cpu") if probe else None
        if probe and line is None:
            log.warning("estimate: not even one clip fits: ~%.0f MiB needed, %.0f MiB available", predicted(1), available)
            return _not_measured(result, batch, predicted, "not measured: one clip does not fit in memory", 0)
        max_batch = None if line is None else line.max_batch(room)
        scaling = batch_scaling({} if line is None else line.probe_seconds)
        fits = max_batch is None or batch <= max_batch
        b = batch if fits else max(1, max_batch or 1)
        warmup = 2
        if linear and line is not None:  # a CPU: a smaller batch may stand in for one the budget cannot time
            b, warmup = grow_batch(timed, max(line.probe_seconds), line.probe_seconds[max(line.probe_seconds)], b,
                                   deadline, steps, now, scaling), 0
        times, peak = time_steps(timed, b, warmup=warmup, steps=steps, deadline=deadline, clock=now)
    except OutOfMemory as oom:
        meter.release()
        log.warning("estimate: out of memory at batch %d; the largest batch that ran: %s", oom.batch, max(ran, default=0))
        return _not_measured(result, batch, predicted, f"not measured: out of memory at batch {oom.batch}",
                             max(ran, default=0))
    seconds = statistics.median(times)
    if b == batch:
        step, source = seconds, "measured"
    elif linear:
        factor = scaling(b, batch)
        step, source = seconds * factor, (f"extrapolated from batch {b} (x {factor:.3g}: a CPU's step grows linearly "
                                          "with the batch, from a fixed part measured at batch 1 and 2)")
    else:
        step, source = None, f"not measured: batch {batch} does not fit; batch {b} measured (a GPU does not scale linearly)"
    memory = (peak, "measured") if b == batch else (line.fixed + batch * line.per_clip, "extrapolated from batch 1 and 2")
    if not fits:
        log.warning("estimate: batch %d needs ~%.0f MiB, %.0f MiB available here: it would not fit; batch <= %d does",
                    batch, memory[0], available, max_batch)
    return StepCost(**result, step_seconds=step, step_seconds_source=source, measured_batch=b,
                    measured_step_seconds=seconds, warmup_steps=warmup, timed_steps=len(times),
                    peak_step_memory_mb=memory[0], peak_step_memory_source=memory[1], fits_in_memory=fits,
                    max_batch=max_batch)


def _cost_static(timed: Callable[[int], tuple[float, float]], batch: int, result: dict[str, Any],
                 predicted: Callable[[int], float], room: float, steps: int, deadline: float,
                 clock: Callable[[], float]) -> StepCost:
    """A step that runs at ``batch`` only (compiled for that shape): two warm-ups (the compilation), then timed,
    if predicted to fit; otherwise not measured, with the largest batch predicted to fit."""
    if predicted(batch) > room:
        fitting = next((b for b in range(batch - 1, 0, -1) if predicted(b) <= room), 0)
        return _not_measured(result, batch, predicted,
                             f"not measured: batch {batch} predicted not to fit (a compiled step is timed at its batch only)",
                             fitting)
    times, peak = time_steps(timed, batch, warmup=2, steps=steps, deadline=deadline, clock=clock)
    seconds = statistics.median(times)
    return StepCost(**result, step_seconds=seconds, step_seconds_source="measured", measured_batch=batch,
                    measured_step_seconds=seconds, warmup_steps=2, timed_steps=len(times), peak_step_memory_mb=peak,
                    peak_step_memory_source="measured", fits_in_memory=True, max_batch=None)


def _not_measured(result: dict[str, Any], batch: int, predicted: Callable[[int], float], source: str,
                  max_batch: int) -> StepCost:
    return StepCost(**result, step_seconds=None, step_seconds_source=source, measured_batch=0,
                    measured_step_seconds=None, warmup_steps=0, timed_steps=0, peak_step_memory_mb=predicted(batch),
                    peak_step_memory_source="predicted (counted activations)", fits_in_memory=False,
                    max_batch=max_batch)


def random_batches(
    shape: tuple[int, ...], num_classes: int, device: torch.device
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batch(b)``: random clips of ``shape`` (laid out as a run lays them out on ``device``) and labels, b of
    them; the latest batch is kept for the next call of the same size, one batch held at a time."""
    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if b not in held:
            held.clear()
            held[b] = (to_device(torch.randn(b, *shape), device), torch.randint(0, num_classes, (b,), device=device))
        return held[b]

    return batch


def median_seconds(run: Callable[[], Any], device: torch.device, *, warmup: int, steps: int,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of ``steps`` calls of ``run`` after ``warmup`` untimed ones, the device synchronised before
    every clock reading."""
    def now() -> float:
        synchronize(device)
        return clock()

    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        t0 = now()
        run()
        times.append(now() - t0)
    return statistics.median(times)


def run_config(device: torch.device, threads: int, workers: int, impl: str, compile: bool) -> dict[str, Any]:
    """What an estimate times, as the run will run it, for its JSON."""
    dtype = amp_dtype(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{threads} threads"
    return {"device": name, "threads": threads, "workers": workers, "impl": impl,
            "dtype": "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast", "compile": compile}
