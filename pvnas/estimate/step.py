"""Costing one training step: its peak memory without ever running a step that would not fit, then its time
as a run will see it (warm-up excluded), at the requested batch where that fits.

The rules, and why:

* **Memory first.** A conservative prediction from the activations autograd keeps (counted on the meta
  device: :func:`~pvnas.estimate.memory.meta_activations_mb`) says whether the requested batch
  surely fits. If not, steps at batch 1 and 2 (each only if predicted to fit) give the measured line
  peak(b), which says whether the requested batch fits and which batch does (``max_batch``).
* **Warm-up is not timed.** The first steps at a shape select algorithms (``cudnn.benchmark``), compile
  (``--compile``) and fill caches: on an H200 the first search step took 1.8x a warmed one.
* **The requested batch is timed when it fits.** A GPU is far from saturated at a small batch, so a step
  time scaled linearly from one is wrong (8x on an H200): on CUDA nothing is extrapolated, and a batch that
  does not fit is timed at ``max_batch`` and said so. A CPU is saturated at any batch, so there a smaller
  batch may stand in for a requested one that would take longer than the time budget, scaled by batch: the
  batch grows by doubling from the probes while its measured step time says the next one fits the budget
  (first steps are cold: predicting from them alone chose batches 2-4x too small).
* **As many timed steps as the budget allows** (at least ``steps``, at most :data:`MAX_TIMED_STEPS`), and
  their median: one stray slow step (page reclaim, another process; seen: 11 s among 0.93 s steps on CPU)
  must not decide a projection over thousands.
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

from pvnas.runtime.device import to_device
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
                 per_clip_floor: float) -> MemoryLine | None:
    """Steps at batch 1 and 2, each only if ``predicted`` to fit in ``room`` (batch 2 from batch 1's measured
    peak); None if not even batch 1 may run."""
    if predicted(1) > room:
        return None
    seconds: dict[int, float] = {}
    seconds[1], peak_one = timed(1)
    per_clip = 2 * per_clip_floor  # (a conservative guess where batch 2 may not run)
    if peak_one + 2 * per_clip_floor <= room:
        seconds[2], peak_two = timed(2)
        per_clip = max(peak_two - peak_one, per_clip_floor)  # (a heap that keeps batch 1's memory hides growth)
    return MemoryLine(peak_one - per_clip, per_clip, seconds)


def grow_batch(timed: Callable[[int], tuple[float, float]], b: int, seconds: float, target: int, deadline: float,
               steps: int, clock: Callable[[], float]) -> int:
    """The largest batch up to ``target``, doubling from ``b`` (whose last step took ``seconds``), whose step
    time (scaled by batch from the last one measured) lets one more step and ``steps`` timed ones end before
    ``deadline``; every batch tried has run once, so the one returned is warm."""
    while b < target:
        nxt = min(2 * b, target)
        if clock() + seconds * nxt / b * (2 + steps) > deadline:
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
    clock: Callable[[], float] = time.perf_counter,
) -> StepCost:
    """Cost one training step of ``batch`` clips (``run_step(b)`` runs one at batch ``b``) by the rules of the
    module docstring. ``activations_mb`` = (batch 1, per further clip) of what autograd keeps, ``state_mb`` the
    gradients and optimizer state not yet allocated; ``linear`` says whether step time may be scaled by batch
    (default: on CPU only)."""
    linear = device.type == "cpu" if linear is None else linear
    meter, available = PeakMeter(device), available_mb(device)
    room = math.inf if available is None else MEMORY_SAFETY * available
    one, per_clip = activations_mb
    predicted = lambda b: state_mb + 2 * (one + (b - 1) * per_clip)  # noqa: E731  (transient grads ~ activations)

    def timed(b: int) -> tuple[float, float]:
        meter.start()
        t0 = clock()
        run_step(b)
        meter.sync()
        return clock() - t0, meter.peak()

    result = dict(batch=batch, available_memory_mb=available)
    deadline = clock() + time_budget
    probe = linear or predicted(batch) > room  # a CPU probes for time too; a GPU only when in doubt about memory
    line = probe_memory(timed, predicted, room, per_clip) if probe else None
    if probe and line is None:
        log.warning("estimate: not even one clip fits: ~%.0f MiB needed, %.0f MiB available", predicted(1), available)
        return StepCost(**result, step_seconds=None, step_seconds_source="not measured: one clip does not fit in memory",
                        measured_batch=0, measured_step_seconds=None, warmup_steps=0, timed_steps=0,
                        peak_step_memory_mb=predicted(batch), peak_step_memory_source="predicted (meta device)",
                        fits_in_memory=False, max_batch=0)
    max_batch = None if line is None else line.max_batch(room)
    fits = max_batch is None or batch <= max_batch
    b = batch if fits else max(1, max_batch or 1)
    warmup = 2
    if linear and line is not None:  # a CPU: a smaller batch may stand in for one the budget cannot time
        b, warmup = grow_batch(timed, max(line.probe_seconds), line.probe_seconds[max(line.probe_seconds)], b,
                               deadline, steps, clock), 0
    times, peak = time_steps(timed, b, warmup=warmup, steps=steps, deadline=deadline, clock=clock)
    seconds = statistics.median(times)
    if b == batch:
        step, source = seconds, "measured"
    elif linear:
        step, source = seconds * batch / b, f"extrapolated from batch {b} (x {batch}/{b}; a CPU scales linearly)"
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


def device_name(device: torch.device) -> str:
    """What an estimate ran on, for its JSON."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
