"""What a run will cost, measured before it is started (DESIGN §6), without ever running what does not fit.

Shared by both estimates: the videos and classes of a ``--data`` spec, the memory autograd keeps for a
forward (counted on the meta device: no memory, no compute), peak memory, and :func:`cost_step`, which
predicts a training step's peak memory from real steps at batch 1 and 2, compares it with the memory
available here, and times steps at the largest batch that fits (and that the time budget allows),
extrapolating to the requested batch. The retrain estimate (``pvnas estimate --genotype``) is
:func:`estimate_train`, here beside the training step it times; the search estimate is
:mod:`pvnas.search.estimate`, beside the search step.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from pvnas.config import NETWORK_PRESETS, ClipConfig, get_preset, override
from pvnas.engine.device import cuda_layout
from pvnas.engine.train import make_optimizer, resolve_schedule, train_step
from pvnas.errors import ConfigError, DataError
from pvnas.metrics.flops import count_flops
from pvnas.nn.network import network_from_config
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)

DEFAULT_DATASET_SIZE = 1000
MEMORY_SAFETY = 0.9  # share of the available memory a planned step may use (the rest: other processes, slack)
TIME_BUDGET = 30.0  # seconds of steps an estimate runs (the probes at batch 1 and 2 always run, if they fit)


def _status_mb(field: str, path: str = "/proc/self/status") -> float | None:
    """A memory field of a /proc status file (Linux) in MiB, or None where there is none."""
    try:
        with open(path) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Start a new peak-RSS window (Linux: VmHWM := VmRSS) and return the current RSS in MiB.

    Elsewhere the peak is the process's lifetime ``ru_maxrss``, which a forked child inherits from its parent.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    current = _status_mb("VmRSS")
    return current if current is not None else peak_rss()


def peak_rss() -> float:
    """Peak resident memory of this process in MiB since :func:`reset_peak_rss` (where supported)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_mb(device: torch.device) -> float | None:
    """Memory a step could still use, MiB: the kernel's MemAvailable on CPU (Linux; None elsewhere), the free
    plus this process's cached memory on CUDA."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return (free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)) / 2**20
    return _status_mb("MemAvailable", "/proc/meminfo")


def dataset_of(data: str | None, split: str = "train") -> tuple[int, str, int | None]:
    """(videos of ``split``, where that number comes from, number of classes or None) of a ``--data`` spec.

    File datasets are counted from their manifests and listings, without decoding. A kinetics, ssv2 or
    ucf101 ROOT that is not on this machine gives the official split size, so that a run can be costed
    before the download; a missing folder or CSV is an error. Without a spec: 1000 (train), 1000 // 10 (val).
    """
    from pvnas.data import build_dataset, list_samples, parse_spec
    from pvnas.data.datasets import KINDS

    if not data:
        size = DEFAULT_DATASET_SIZE if split == "train" else DEFAULT_DATASET_SIZE // 10
        return size, "default (pass --data or --dataset-size)", None
    kind, arg, options = parse_spec(data)
    entry = KINDS[kind]
    official = entry.train_size if split == "train" else entry.val_size
    if entry.build is not None:  # rendered on demand: building it costs nothing
        dataset = build_dataset(data, split, ClipConfig())
        return len(dataset), f"{data} ({split} split)", len(dataset.classes)
    if entry.known is not None:  # a generated file kind (listing it would first write it)
        train, val, classes = entry.known(arg)
        return train if split == "train" else val, f"{data} ({split} split)", classes
    try:
        samples, classes, source, _ = list_samples(kind, arg, options, split)
    except DataError as err:
        if official is None:
            raise
        return official, f"official {split} split of {kind} (not readable here: {err})", None
    return len(samples), f"videos listed in {source}", len(classes)


def resolve_inputs(
    data: str | None, dataset_size: int | None, num_classes: int | None, **positive: int | None
) -> tuple[int, str, int]:
    """The checked command-line numbers of an estimate (each of ``positive`` that is set must be >= 1) and the
    training videos (with where that number comes from) and classes: the ones given, else ``data``'s
    (:func:`dataset_of`), else 1000 videos and 400 classes (Kinetics-400)."""
    for name, value in {**positive, "dataset_size": dataset_size, "num_classes": num_classes}.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    source = "--dataset-size"
    if dataset_size is None or num_classes is None:
        listed, listed_source, listed_classes = dataset_of(data)
        if dataset_size is None:
            dataset_size, source = listed, listed_source
        num_classes = num_classes or listed_classes or 400
    return dataset_size, source, num_classes


def activation_bytes(model: nn.Module, clips: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in one training forward (on the meta
    device too: storages are told apart by identity, not by address)."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            seen[storage._cdata] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(clips)
    return sum(seen.values())


def meta_activations_mb(build: Callable[[], nn.Module], clip: tuple[int, ...]) -> tuple[float, float]:
    """(MiB at batch 1, MiB per further clip) that autograd saves in a training forward of the model ``build``
    makes, counted on the meta device: nothing is allocated or computed, so it is safe at any size."""
    with torch.device("meta"):
        model = build()
        one, two = (activation_bytes(model, torch.zeros(b, *clip)) / 2**20 for b in (1, 2))
    return one, two - one


def random_batches(
    shape: tuple[int, ...], num_classes: int, device: torch.device
) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batch(b)``: random clips of ``shape`` and labels, b of them; the latest batch is kept for the next call
    of the same size (:func:`cost_step` repeats sizes), one batch held at a time."""
    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if b not in held:
            held.clear()
            held[b] = (torch.randn(b, *shape, device=device), torch.randint(0, num_classes, (b,), device=device))
        return held[b]

    return batch


def device_name(device: torch.device) -> str:
    """What an estimate ran on, for its JSON."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"


def state_mb(model: nn.Module) -> float:
    """MiB that gradients and one optimizer buffer per parameter will add to the model (SGD momentum; Adam's
    two buffers are for the alphas only): :func:`cost_step`'s ``state_mb``."""
    return 2 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


@dataclass(frozen=True)
class StepCost:
    """A training step at the requested batch: its time and peak memory, measured where that fits here in
    memory and in the time budget, else extrapolated from the largest batch that does (fields say which).

    Memory is the growth of the peak over what the process held with the model built (RSS on CPU, allocated
    on CUDA); ``max_batch`` is the largest batch predicted to fit in ``available_mb`` (0: not even one clip).
    """

    batch: int
    step_seconds: float | None  # None: nothing could be measured (not even batch 1 fits)
    step_seconds_source: str
    measured_batch: int
    measured_step_seconds: float | None
    peak_step_memory_mb: float
    peak_step_memory_source: str
    per_clip_memory_mb: float
    available_memory_mb: float | None
    fits_in_memory: bool
    max_batch: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cost_step(
    run_step: Callable[[int], None],
    batch: int,
    *,
    device: torch.device,
    activations_mb: tuple[float, float],
    state_mb: float,
    steps: int = 2,
    time_budget: float = TIME_BUDGET,
) -> StepCost:
    """Cost one training step of ``batch`` clips (``run_step(b)`` runs one at batch ``b``) without running one
    that would not fit in memory.

    Batch 1 is run only if a conservative prediction fits (the not yet allocated gradients and optimizer
    state ``state_mb``, twice the saved activations ``activations_mb`` = (batch 1, per clip) for the transient
    gradients), batch 2 likewise from batch 1's measured peak; their peaks give the line peak(b), which says
    whether ``batch`` fits and which batch does. ``steps`` timed steps then run at the largest batch <=
    ``batch`` that fits and that ``time_budget`` seconds allow; their median time, scaled by batch, is the
    step time at ``batch`` (proportional: conservative, fixed costs are scaled too).
    """
    cuda = device.type == "cuda"
    start = time.monotonic()
    base = torch.cuda.memory_allocated(device) / 2**20 if cuda else reset_peak_rss()
    available = available_mb(device)
    budget = math.inf if available is None else base + MEMORY_SAFETY * available
    act_one, act_per_clip = activations_mb

    def probe(b: int) -> tuple[float, float]:
        """(seconds, peak MiB growth over ``base``) of one step at batch b."""
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            reset_peak_rss()
        t0 = time.perf_counter()
        run_step(b)
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss()
        return seconds, peak - base

    def result(**fields: Any) -> StepCost:
        return StepCost(batch=batch, available_memory_mb=available, **fields)

    predicted_one = state_mb + 2 * act_one
    if base + predicted_one > budget:
        log.warning("estimate: not even one clip fits: ~%.0f MiB needed, %.0f MiB available", predicted_one, available)
        return result(step_seconds=None, step_seconds_source="not measured: one clip does not fit in memory",
                      measured_batch=0, measured_step_seconds=None, peak_step_memory_mb=predicted_one + (batch - 1) * 2 * act_per_clip,
                      peak_step_memory_source="predicted from the saved activations (meta device)",
                      per_clip_memory_mb=2 * act_per_clip, fits_in_memory=False, max_batch=0)
    log.info("estimate: probing memory and time with steps at batch 1 and 2")
    timings: dict[int, float] = {}
    timings[1], peak_one = probe(1)
    if base + peak_one + 2 * act_per_clip <= budget:
        timings[2], peak_two = probe(2)
        per_clip = max(peak_two - peak_one, act_per_clip)  # (a heap that keeps batch 1's memory hides growth)
    else:
        per_clip = 2 * act_per_clip
    fixed = peak_one - per_clip
    max_batch = max(0, math.floor((budget - base - fixed) / per_clip))
    peak, peak_source = fixed + batch * per_clip, "extrapolated from the steps at batch 1 and 2"
    # the largest batch <= the requested one that fits, and whose timed steps fit the time budget
    per_clip_seconds = timings[max(timings)] / max(timings)
    left = time_budget - (time.monotonic() - start)
    measured = min(batch, max_batch, math.floor(left / max(steps * per_clip_seconds, 1e-9)))
    if measured >= 1:
        log.info("estimate: timing %d steps at batch %d", steps, measured)
        runs = [probe(measured) for _ in range(steps)]
        seconds = statistics.median(s for s, _ in runs)
        if measured == batch:
            peak, peak_source = max(p for _, p in runs), "measured"
        source = "measured" if measured == batch else f"extrapolated from batch {measured} (x {batch}/{measured})"
    else:  # no time left: the probe steps (among the first steps, with one-time costs: conservative)
        measured = min(max(timings), batch)
        seconds = timings[measured]
        source = f"extrapolated from the probe step at batch {measured} (x {batch}/{measured}): no time to time more"
    if peak > budget - base:
        log.warning("estimate: batch %d needs ~%.0f MiB, %.0f MiB available here: it would not fit; batch <= %d does",
                    batch, peak, available, max_batch)
    return result(step_seconds=seconds * batch / measured, step_seconds_source=source, measured_batch=measured,
                  measured_step_seconds=seconds, peak_step_memory_mb=peak, peak_step_memory_source=peak_source,
                  per_clip_memory_mb=per_clip, fits_in_memory=batch <= max_batch, max_batch=max_batch)


def project_train(step_seconds: float, dataset_size: int, batch: int, epochs: int) -> dict[str, float | int]:
    """Training time from one step's time: the train loader drops the last partial batch."""
    steps = max(1, dataset_size // batch)
    return {"steps_per_epoch": steps, "train_seconds": steps * epochs * step_seconds,
            "train_hours": steps * epochs * step_seconds / 3600}


def estimate_train(
    genotype: Genotype,
    preset: str = "L",
    batch: int | None = None,
    frames: int | None = None,
    size: int | None = None,
    channels: int | None = None,
    repeats: int | None = None,
    dataset_size: int | None = None,
    epochs: int | None = None,
    num_classes: int | None = None,
    data: str | None = None,
    steps: int = 2,
    time_budget: float = TIME_BUDGET,
) -> dict[str, Any]:
    """What retraining ``genotype`` costs here: parameters, multiply-adds per view, a training step's memory
    and time (:func:`cost_step`), the projected training time and the 30-view (``test_clips x test_crops``)
    test time of the validation split. Unset settings are the preset's; epochs default to the dataset's
    (as ``pvnas train``), the dataset sizes and classes to ``data``'s (:func:`dataset_of`)."""
    base = get_preset(NETWORK_PRESETS, preset)
    dataset_size, source, num_classes = resolve_inputs(
        data, dataset_size, num_classes, frames=frames, size=size, steps=steps, batch=batch)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = override(base, batch_size=batch, channels=channels, repeats=repeats, clip=clip)
    cfg = resolve_schedule(cfg, data or "", epochs)
    val_size, val_source, _ = dataset_of(data, "val")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = (3, clip.frames, clip.crop, clip.crop)
    model = network_from_config(genotype, cfg, num_classes).to(device)
    cuda_layout(model, device)
    with torch.device("meta"):
        macs = count_flops(network_from_config(genotype, cfg, num_classes), shape)["gflops"] * 1e9
    activations = meta_activations_mb(lambda: network_from_config(genotype, cfg, num_classes), shape)
    optimizer = make_optimizer(model, cfg)
    batch_of = random_batches(shape, num_classes, device)

    def run_step(b: int) -> None:
        model.train()
        train_step(model, optimizer, *batch_of(b), device)

    step = cost_step(run_step, cfg.batch_size, device=device, activations_mb=activations, state_mb=state_mb(model),
                     steps=steps, time_budget=time_budget)
    out: dict[str, Any] = {
        "kind": "retrain", "preset": preset, "impl": cfg.impl, "device": device_name(device),
        "input": list(shape), "channels": cfg.channels, "repeats": cfg.repeats, "num_classes": num_classes,
        "params": sum(p.numel() for p in model.parameters()), "gmacs_per_view": macs / 1e9,
        "activation_memory_mb": activations[0] + (cfg.batch_size - 1) * activations[1],
        **step.to_dict(),
        "epochs": cfg.epochs, "warmup_epochs": cfg.warmup_epochs, "dataset_size": dataset_size,
        "dataset_size_source": source, "val_size": val_size, "val_size_source": val_source,
    }
    if step.step_seconds is None:
        return out
    # test: no-grad forwards of `batch_size` clips (pvnas eval's chunks); their memory is below a training step's
    chunk = max(1, min(cfg.batch_size, step.measured_batch))
    model.eval()
    with torch.no_grad():
        model(batch_of(1)[0])  # (eval-mode kernels, first call)
        t0 = time.perf_counter()
        model(batch_of(chunk)[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        clip_seconds = (time.perf_counter() - t0) / chunk
    views = clip.test_clips * clip.test_crops
    assert cfg.epochs is not None
    val_seconds = min(cfg.val_videos, val_size) * clip_seconds  # single-view validation after every epoch
    projected = project_train(step.step_seconds, dataset_size, cfg.batch_size, cfg.epochs)
    projected["train_seconds"] += cfg.epochs * val_seconds
    projected["train_hours"] = projected["train_seconds"] / 3600
    return {
        **out, **projected, "val_seconds_per_epoch": val_seconds, "eval_seconds_per_clip": clip_seconds,
        "test_views": views, "test_seconds_per_video": views * clip_seconds,
        "test_seconds": val_size * views * clip_seconds, "test_hours": val_size * views * clip_seconds / 3600,
    }
