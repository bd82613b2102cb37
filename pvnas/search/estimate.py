"""``pvnas estimate`` (DESIGN §6): what a search will cost before it is started.

Everything is measured on the supernet that ``pvnas search`` would build: parameters, multiply-adds
per clip and the memory autograd keeps for one forward (both counted on the meta device, so at any
size), then real search steps (Alg. 1: alpha step + weight step) here, never one that would not fit in
memory: :func:`~pvnas.engine.estimate.cost_step` predicts the step's peak from batches 1 and 2, times
steps at the largest batch that fits, and extrapolates to the requested one. From the step time the
time of the whole search is projected.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from pvnas.config import SEARCH_PRESETS, get_preset, override
from pvnas.engine.estimate import (
    TIME_BUDGET,
    cost_step,
    device_name,
    meta_activations_mb,
    random_batches,
    resolve_inputs,
    state_mb,
)
from pvnas.metrics.flops import count_flops
from pvnas.nn.supernet import supernet_from_config
from pvnas.search.loop import make_state, search_step

log = logging.getLogger(__name__)


def project_search(step_seconds: float, dataset_size: int, batch: int, epochs: int) -> dict[str, float | int]:
    """Search time from one step's time: the search loader drops the last partial batch (when it can)."""
    steps = max(1, dataset_size // batch)
    return {
        "steps_per_epoch": steps,
        "epoch_seconds": steps * step_seconds,
        "search_seconds": steps * epochs * step_seconds,
        "search_hours": steps * epochs * step_seconds / 3600,
    }


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
    steps: int = 2,
    time_budget: float = TIME_BUDGET,
) -> dict[str, Any]:
    """Parameters, MACs per clip, memory and step time of the search at these settings, and its projection.

    Unset settings are the preset's; ``dataset_size`` and ``num_classes`` default to those of ``data``'s
    training split (see :func:`~pvnas.engine.estimate.dataset_of`), else 1000 videos and 400 classes
    (Kinetics-400). Where the batch does not fit in memory here, the JSON says so, with the batch that does,
    and the time is extrapolated from it.
    """
    base = get_preset(SEARCH_PRESETS, preset)
    dataset_size, source, num_classes = resolve_inputs(
        data, dataset_size, num_classes, batch=batch, frames=frames, size=size, epochs=epochs, channels=channels,
        steps=steps)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = override(base, batch_size=batch, epochs=epochs, channels=channels, partial_channels=partial_channels, impl=impl)
    cfg = dataclasses.replace(cfg, clip=clip)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = (3, clip.frames, clip.crop, clip.crop)
    with torch.device("meta"):
        macs = count_flops(supernet_from_config(cfg, num_classes), shape)["gflops"] * 1e9
    activations = meta_activations_mb(lambda: supernet_from_config(cfg, num_classes), shape)
    model = supernet_from_config(cfg, num_classes).to(device)
    state = make_state(model, cfg)
    batch_of = random_batches(shape, num_classes, device)
    step = cost_step(lambda b: search_step(state, *batch_of(b)), cfg.batch_size, device=device,
                     activations_mb=activations, state_mb=state_mb(model), steps=steps, time_budget=time_budget)
    out = {
        "kind": "search",
        "preset": preset,
        "impl": cfg.impl,
        "device": device_name(device),
        "input": list(shape),
        "channels": cfg.channels,
        "partial_channels": cfg.partial_channels,
        "num_classes": num_classes,
        "params": sum(p.numel() for p in model.weight_parameters()),
        "arch_params": sum(p.numel() for p in model.arch_parameters()),
        "macs_per_clip": int(macs),
        "gmacs_per_clip": macs / 1e9,
        "activation_memory_mb": activations[0] + (cfg.batch_size - 1) * activations[1],
        **step.to_dict(),
        "dataset_size": dataset_size,
        "dataset_size_source": source,
        "epochs": cfg.epochs,
    }
    if step.step_seconds is None:
        return out
    return {**out, **project_search(step.step_seconds, dataset_size, cfg.batch_size, cfg.epochs)}
