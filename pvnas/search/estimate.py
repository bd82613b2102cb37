"""``pvnas estimate`` (DESIGN §6): what a search will cost before it is started.

Everything is measured on the supernet that ``pvnas search`` would build: parameters, multiply-adds
per clip, the memory autograd keeps for one forward (the activations, which grow with the batch),
the measured peak of a search step, and the median time of a few real search steps (Alg. 1: alpha
step + weight step) here, from which the time of the whole search is projected.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from typing import Any

import torch

from pvnas.config import SEARCH_PRESETS, get_preset, override
from pvnas.engine.estimate import activation_bytes, dataset_of, peak_rss, reset_peak_rss
from pvnas.errors import ConfigError
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
) -> dict[str, Any]:
    """Parameters, MACs per clip, memory and measured step time of the search at these settings.

    Unset settings are the preset's; ``dataset_size`` and ``num_classes`` default to those of ``data``'s
    training split (see :func:`~pvnas.engine.estimate.dataset_of`), else 1000 videos and 400 classes
    (Kinetics-400).
    """
    base = get_preset(SEARCH_PRESETS, preset)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = override(base, batch_size=batch, epochs=epochs, channels=channels, partial_channels=partial_channels, impl=impl)
    cfg = dataclasses.replace(cfg, clip=clip)
    for name, value in (
        ("--batch", cfg.batch_size), ("--frames", clip.frames), ("--size", clip.crop), ("--epochs", cfg.epochs),
        ("--channels", cfg.channels), ("--num-classes", num_classes), ("--steps", steps),
        ("--dataset-size", dataset_size),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    source = "--dataset-size"
    if dataset_size is None or num_classes is None:
        listed, listed_source, listed_classes = dataset_of(data)
        if dataset_size is None:
            dataset_size, source = listed, listed_source
        num_classes = num_classes or listed_classes or 400

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = supernet_from_config(cfg, num_classes).to(device)
    shape = (3, clip.frames, clip.crop, clip.crop)
    macs = count_flops(model, shape)["gflops"] * 1e9
    clips = torch.randn(cfg.batch_size, *shape, device=device)
    labels = torch.randint(0, num_classes, (cfg.batch_size,), device=device)
    activations = activation_bytes(model, clips)

    state = make_state(model, cfg)
    log.info("estimate: timing %d search steps (+1 warm-up) at batch %d, %s", steps, cfg.batch_size, shape)
    rss_before = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        search_step(state, clips, labels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # the steps' growth of the resident set over what the model and its optimizers hold
        peak_mb = peak_rss() - rss_before
    step_seconds = statistics.median(times)
    return {
        "preset": preset,
        "impl": cfg.impl,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "input": list(shape),
        "batch": cfg.batch_size,
        "channels": cfg.channels,
        "partial_channels": cfg.partial_channels,
        "num_classes": num_classes,
        "params": sum(p.numel() for p in model.weight_parameters()),
        "arch_params": sum(p.numel() for p in model.arch_parameters()),
        "macs_per_clip": int(macs),
        "gmacs_per_clip": macs / 1e9,
        "activation_memory_mb": activations / 2**20,
        "peak_step_memory_mb": peak_mb,
        "step_seconds": step_seconds,
        "dataset_size": dataset_size,
        "dataset_size_source": source,
        "epochs": cfg.epochs,
        **project_search(step_seconds, dataset_size, cfg.batch_size, cfg.epochs),
    }
