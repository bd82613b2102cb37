"""``pvnas estimate`` (docs/design.md §6): what a search will cost before it is started.

Everything is measured on the supernet that ``pvnas search`` would build, placed and run as the search runs
it (its torch threads, channels-last and bf16 autocast on CUDA, ``--compile``): parameters, multiply-adds per
clip and the memory autograd keeps for one forward (both counted without allocating, so at any size), then
real search steps (Alg. 1: alpha step + weight step) by the rules of :mod:`pvnas.estimate.step`, never one that
would not fit in memory, and the weights-only steps of the alpha warm-up; from those and the data loading the
run's step is projected to the whole search.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from pvnas.config import SEARCH_PRESETS, get_preset, override
from pvnas.estimate.datasets import resolve_inputs
from pvnas.estimate.loading import clips_per_second_per_worker, loading_plan, with_loading
from pvnas.estimate.memory import counted_activations_mb, state_mb
from pvnas.estimate.project import project_search
from pvnas.estimate.step import TIME_BUDGET, cost_step, median_seconds, random_batches, run_config
from pvnas.metrics.flops import count_flops
from pvnas.nn.supernet import supernet_from_config
from pvnas.runtime.device import amp_dtype, cuda_layout, default_device, torch_threads
from pvnas.search.loop import make_state, search_step
from pvnas.search.remedies import alpha_terms, remedies_of

log = logging.getLogger(__name__)


def estimate(
    preset: str = "search",
    batch: int | None = None,
    frames: int | None = None,
    size: int | None = None,
    channels: int | None = None,
    partial_channels: int | None = None,
    dataset_size: int | None = None,
    epochs: int | None = None,
    num_classes: int | None = None,
    data: str | None = None,
    impl: str | None = None,
    steps: int = 3,
    time_budget: float = TIME_BUDGET,
    compile: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Parameters, MACs per clip, memory and step time of the search at these settings, and its projection.

    Unset settings are the preset's (``threads`` too: the torch threads the search runs on);
    ``dataset_size`` and ``num_classes`` default to those of ``data``'s training split (see
    :func:`~pvnas.estimate.datasets.dataset_of`), else 1000 videos and 400 classes (Kinetics-400). Where the
    batch does not fit in memory here, the JSON says so, with the batch that does.
    """
    base = get_preset(SEARCH_PRESETS, preset)
    dataset_size, source, num_classes = resolve_inputs(
        data, dataset_size, num_classes, batch=batch, frames=frames, size=size, epochs=epochs, channels=channels,
        steps=steps)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = override(base, batch_size=batch, epochs=epochs, channels=channels, partial_channels=partial_channels,
                   impl=impl, threads=threads)
    cfg = dataclasses.replace(cfg, clip=clip)
    device = default_device()
    shape = (3, clip.frames, clip.crop, clip.crop)
    with torch_threads(cfg.threads) as used:
        config = run_config(device, used, cfg.workers, cfg.impl, compile)
        log.info("estimate: timing the search step on %s", config)
        remedies = remedies_of(cfg)  # the run's training forwards and alpha loss
        with torch.device("meta"):
            macs = count_flops(supernet_from_config(cfg, num_classes, ()), shape)["gflops"] * 1e9
        activations = counted_activations_mb(lambda: supernet_from_config(cfg, num_classes, remedies), shape, device,
                                             amp_dtype(device))
        model = supernet_from_config(cfg, num_classes, remedies).to(device)
        cuda_layout(model, device)
        state = make_state(model, cfg, compile)
        batch_of = random_batches(shape, num_classes, device)
        terms = lambda: alpha_terms(remedies, model, 1.0)  # noqa: E731  (at full strength: the costliest step)
        step = cost_step(lambda b: search_step(state, *batch_of(b), alpha_terms=terms), cfg.batch_size, device=device,
                         activations_mb=activations, state_mb=state_mb(model), steps=steps, time_budget=time_budget,
                         static=compile)
        weights_only = None
        if cfg.a_warmup > 0 and step.step_seconds is not None:  # the alpha warm-up's steps skip the alpha step
            clips, labels = batch_of(step.measured_batch)
            seconds = median_seconds(lambda: search_step(state, clips, labels, update_alpha=False), device,
                                     warmup=1, steps=steps)
            weights_only = seconds * step.step_seconds / step.measured_step_seconds  # (scaled as the full step)
    per_worker = clips_per_second_per_worker(data, clip)
    out = {
        "kind": "search", "preset": preset, **config, "input": list(shape), "channels": cfg.channels,
        "partial_channels": cfg.partial_channels, "num_classes": num_classes,
        "params": sum(p.numel() for p in model.weight_parameters()),
        "arch_params": sum(p.numel() for p in model.arch_parameters()), "macs_per_clip": int(macs),
        "gmacs_per_clip": macs / 1e9, "activation_memory_mb": activations[0] + (cfg.batch_size - 1) * activations[1],
        **step.to_dict(), "alpha_warmup": cfg.a_warmup, "weights_only_step_seconds": weights_only,
        "dataset_size": dataset_size, "dataset_size_source": source, "epochs": cfg.epochs,
        "loading": loading_plan(per_worker, cfg.batch_size, step.step_seconds, cfg.workers),
    }
    if step.step_seconds is None:
        return out
    mean = step.step_seconds if weights_only is None else (
        cfg.a_warmup * weights_only + (1 - cfg.a_warmup) * step.step_seconds)
    run_step, how = with_loading(mean, cfg.batch_size, per_worker, cfg.workers)
    if weights_only is not None:
        how += f"; {cfg.a_warmup:.0%} of the steps weights-only (alpha warm-up)"
    return {**out, "run_step_seconds": run_step, "run_step_source": how,
            **project_search(run_step, dataset_size, cfg.batch_size, cfg.epochs)}
