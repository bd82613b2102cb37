"""``pvnas estimate --genotype``: what retraining a genotype costs, beside the training step it times."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from pvnas.config import NETWORK_PRESETS, get_preset, override
from pvnas.runtime.device import autocast, compiled, cuda_layout, default_device
from pvnas.estimate.datasets import dataset_of, resolve_inputs
from pvnas.estimate.loading import clips_per_second_per_worker, loading_plan
from pvnas.estimate.memory import meta_activations_mb, state_mb
from pvnas.estimate.project import project_train
from pvnas.estimate.step import TIME_BUDGET, cost_step, device_name, random_batches
from pvnas.retrain.train import make_optimizer, resolve_schedule, train_step
from pvnas.metrics.flops import count_flops
from pvnas.nn.fast.policy import generic_kernels
from pvnas.nn.network import network_from_config
from pvnas.space.genotype import Genotype


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
    steps: int = 3,
    time_budget: float = TIME_BUDGET,
    compile: bool = False,
) -> dict[str, Any]:
    """What retraining ``genotype`` costs here: parameters, multiply-adds per view, a training step's memory and
    time (:func:`~pvnas.estimate.step.cost_step`), whether loading keeps up, the projected training time
    and the 30-view (``test_clips x test_crops``) test time of the validation split. Unset settings are the
    preset's; epochs default to the dataset's (as ``pvnas train``), sizes and classes to ``data``'s."""
    base = get_preset(NETWORK_PRESETS, preset)
    dataset_size, source, num_classes = resolve_inputs(
        data, dataset_size, num_classes, frames=frames, size=size, steps=steps, batch=batch)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = resolve_schedule(override(base, batch_size=batch, channels=channels, repeats=repeats, clip=clip),
                           data or "", epochs)
    assert cfg.epochs is not None
    val_size, val_source, _ = dataset_of(data, "val")
    device = default_device()
    shape = (3, clip.frames, clip.crop, clip.crop)
    model = network_from_config(genotype, cfg, num_classes).to(device)
    cuda_layout(model, device)
    build = lambda: network_from_config(genotype, cfg, num_classes)  # noqa: E731
    with torch.device("meta"):
        macs = count_flops(build(), shape)["gflops"] * 1e9
    with generic_kernels(device.type != "cpu"):  # count the kernels the step will take
        activations = meta_activations_mb(build, shape)
    optimizer, forward = make_optimizer(model, cfg), compiled(model, compile)
    batch_of = random_batches(shape, num_classes, device)

    def run_step(b: int) -> None:
        model.train()
        train_step(forward, optimizer, *batch_of(b), device)

    step = cost_step(run_step, cfg.batch_size, device=device, activations_mb=activations, state_mb=state_mb(model),
                     steps=steps, time_budget=time_budget)
    out: dict[str, Any] = {
        "kind": "retrain", "preset": preset, "impl": cfg.impl, "device": device_name(device), "compile": compile,
        "input": list(shape), "channels": cfg.channels, "repeats": cfg.repeats, "num_classes": num_classes,
        "params": sum(p.numel() for p in model.parameters()), "gmacs_per_view": macs / 1e9,
        "activation_memory_mb": activations[0] + (cfg.batch_size - 1) * activations[1], **step.to_dict(),
        "epochs": cfg.epochs, "warmup_epochs": cfg.warmup_epochs, "dataset_size": dataset_size,
        "dataset_size_source": source, "val_size": val_size, "val_size_source": val_source,
        "loading": loading_plan(clips_per_second_per_worker(data, clip), cfg.batch_size, step.step_seconds,
                                cfg.workers),
    }
    if step.step_seconds is None:
        return out
    clip_seconds = eval_seconds_per_clip(forward, batch_of(step.measured_batch)[0], device)
    views = clip.test_clips * clip.test_crops
    val_seconds = min(cfg.val_videos, val_size) * clip_seconds  # single-view validation after every epoch
    return {
        **out, **project_train(step.step_seconds, dataset_size, cfg.batch_size, cfg.epochs, val_seconds),
        "val_seconds_per_epoch": val_seconds, "eval_seconds_per_clip": clip_seconds,
        "test_views": views, "test_seconds_per_video": views * clip_seconds,
        "test_seconds": val_size * views * clip_seconds, "test_hours": val_size * views * clip_seconds / 3600,
    }


@torch.no_grad()
def eval_seconds_per_clip(forward: Callable[[torch.Tensor], torch.Tensor], clips: torch.Tensor,
                          device: torch.device, repeats: int = 3) -> float:
    """Seconds per clip of the no-grad test forward (``pvnas eval``'s chunks of ``len(clips)``), after one
    warm-up forward (eval-mode kernels, algorithm selection)."""
    model = getattr(forward, "_orig_mod", forward)  # (a torch.compile wrapper: its module decides the mode)
    model.eval()
    with autocast(device):
        forward(clips)
        t0 = time.perf_counter()
        for _ in range(repeats):
            forward(clips)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / (repeats * len(clips))
