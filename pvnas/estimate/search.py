"""``pvnas estimate`` (docs/design.md §6): what a search will cost before it is started.

Everything is measured on the supernet that ``pvnas search`` would build, placed and run as the search runs
it (channels-last and bf16 autocast on CUDA, ``--compile``): parameters, multiply-adds per clip and the memory
autograd keeps for one forward (both counted on the meta device, so at any size), then real search steps
(Alg. 1: alpha step + weight step) by the rules of :mod:`pvnas.estimate.step`, never one that would not
fit in memory; from the step time the whole search is projected, and whether data loading keeps up.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from pvnas.config import SEARCH_PRESETS, get_preset, override
from pvnas.estimate.datasets import resolve_inputs
from pvnas.estimate.loading import clips_per_second_per_worker, loading_plan
from pvnas.estimate.memory import meta_activations_mb, state_mb
from pvnas.estimate.project import project_search
from pvnas.estimate.step import TIME_BUDGET, cost_step, device_name, random_batches
from pvnas.metrics.flops import count_flops
from pvnas.nn.fast.policy import generic_kernels
from pvnas.nn.supernet import supernet_from_config
from pvnas.runtime.device import cuda_layout, default_device
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
) -> dict[str, Any]:
    """Parameters, MACs per clip, memory and step time of the search at these settings, and its projection.

    Unset settings are the preset's; ``dataset_size`` and ``num_classes`` default to those of ``data``'s
    training split (see :func:`~pvnas.estimate.datasets.dataset_of`), else 1000 videos and 400 classes
    (Kinetics-400). Where the batch does not fit in memory here, the JSON says so, with the batch that does.
    """
    base = get_preset(SEARCH_PRESETS, preset)
    dataset_size, source, num_classes = resolve_inputs(
        data, dataset_size, num_classes, batch=batch, frames=frames, size=size, epochs=epochs, channels=channels,
        steps=steps)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = override(base, batch_size=batch, epochs=epochs, channels=channels, partial_channels=partial_channels, impl=impl)
    cfg = dataclasses.replace(cfg, clip=clip)
    device = default_device()
    shape = (3, clip.frames, clip.crop, clip.crop)
    remedies = remedies_of(cfg)  # the run's training forwards and alpha loss
    with torch.device("meta"):
        macs = count_flops(supernet_from_config(cfg, num_classes, ()), shape)["gflops"] * 1e9
    with generic_kernels(device.type != "cpu"):  # count the kernels the step will take
        activations = meta_activations_mb(lambda: supernet_from_config(cfg, num_classes, remedies), shape)
    model = supernet_from_config(cfg, num_classes, remedies).to(device)
    cuda_layout(model, device)
    state = make_state(model, cfg, compile)
    batch_of = random_batches(shape, num_classes, device)
    terms = lambda: alpha_terms(remedies, model, 1.0)  # noqa: E731  (at full strength: the costliest step)
    step = cost_step(lambda b: search_step(state, *batch_of(b), alpha_terms=terms), cfg.batch_size, device=device,
                     activations_mb=activations, state_mb=state_mb(model), steps=steps, time_budget=time_budget)
    out = {
        "kind": "search", "preset": preset, "impl": cfg.impl, "device": device_name(device), "compile": compile,
        "input": list(shape), "channels": cfg.channels, "partial_channels": cfg.partial_channels,
        "num_classes": num_classes, "params": sum(p.numel() for p in model.weight_parameters()),
        "arch_params": sum(p.numel() for p in model.arch_parameters()), "macs_per_clip": int(macs),
        "gmacs_per_clip": macs / 1e9, "activation_memory_mb": activations[0] + (cfg.batch_size - 1) * activations[1],
        **step.to_dict(), "dataset_size": dataset_size, "dataset_size_source": source, "epochs": cfg.epochs,
        "loading": loading_plan(clips_per_second_per_worker(data, clip), cfg.batch_size, step.step_seconds,
                                cfg.workers),
    }
    if step.step_seconds is None:
        return out
    return {**out, **project_search(step.step_seconds, dataset_size, cfg.batch_size, cfg.epochs)}
