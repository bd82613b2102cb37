"""``pvnas estimate --genotype``: what retraining a genotype costs, beside the training step it times."""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from pvnas.config import NETWORK_PRESETS, get_preset, override
from pvnas.estimate.datasets import dataset_of, resolve_inputs
from pvnas.estimate.loading import clips_per_second_per_worker, loading_plan, with_loading
from pvnas.estimate.memory import counted_activations_mb, state_mb
from pvnas.estimate.project import project_train
from pvnas.estimate.step import TIME_BUDGET, cost_step, is_out_of_memory, median_seconds, random_batches, run_config
from pvnas.metrics.flops import count_flops
from pvnas.nn.network import network_from_config
from pvnas.retrain.train import make_optimizer, resolve_schedule, train_step
from pvnas.runtime.device import amp_dtype, autocast, compiled, cuda_layout, default_device, torch_threads
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)


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
    threads: int | None = None,
) -> dict[str, Any]:
    """What retraining ``genotype`` costs here: parameters, multiply-adds per view, a training step's memory and
    time (:func:`~pvnas.estimate.step.cost_step`), whether loading keeps up, the projected training time
    and the 30-view (``test_clips x test_crops``) test time of the validation split. Unset settings are the
    preset's (``threads`` too: the torch threads the run takes); epochs default to the dataset's (as ``pvnas
    train``), sizes and classes to ``data``'s."""
    base = get_preset(NETWORK_PRESETS, preset)
    dataset_size, source, num_classes = resolve_inputs(
        data, dataset_size, num_classes, frames=frames, size=size, steps=steps, batch=batch)
    clip = override(base.clip, frames=frames, crop=size)
    cfg = resolve_schedule(override(base, batch_size=batch, channels=channels, repeats=repeats, clip=clip,
                                    threads=threads), data or "", epochs)
    assert cfg.epochs is not None
    val_size, val_source, _ = dataset_of(data, "val")
    device = default_device()
    shape = (3, clip.frames, clip.crop, clip.crop)
    build = lambda: network_from_config(genotype, cfg, num_classes)  # noqa: E731
    with torch_threads(cfg.threads) as used:
        config = run_config(device, used, cfg.workers, cfg.impl, compile)
        model = build().to(device)
        cuda_layout(model, device)
        with torch.device("meta"):
            macs = count_flops(build(), shape)["gflops"] * 1e9
        activations = counted_activations_mb(build, shape, device, amp_dtype(device))
        optimizer, forward = make_optimizer(model, cfg), compiled(model, compile)
        batch_of = random_batches(shape, num_classes, device)

        def run_step(b: int) -> None:
            model.train()
            train_step(forward, optimizer, *batch_of(b), device)

        step = cost_step(run_step, cfg.batch_size, device=device, activations_mb=activations,
                         state_mb=state_mb(model), steps=steps, time_budget=time_budget, static=compile)
        clip_seconds = None
        if step.step_seconds is not None:
            clip_seconds = eval_seconds_per_clip(forward, batch_of(step.measured_batch)[0], device)
    per_worker = clips_per_second_per_worker(data, clip)
    out: dict[str, Any] = {
        "kind": "retrain", "preset": preset, **config, "input": list(shape), "channels": cfg.channels,
        "repeats": cfg.repeats, "num_classes": num_classes, "params": sum(p.numel() for p in model.parameters()),
        "gmacs_per_view": macs / 1e9, "activation_memory_mb": activations[0] + (cfg.batch_size - 1) * activations[1],
        **step.to_dict(), "epochs": cfg.epochs, "warmup_epochs": cfg.warmup_epochs, "dataset_size": dataset_size,
        "dataset_size_source": source, "val_size": val_size, "val_size_source": val_source,
        "loading": loading_plan(per_worker, cfg.batch_size, step.step_seconds, cfg.workers),
    }
    if step.step_seconds is None or clip_seconds is None:
        return out
    run_step_seconds, how = with_loading(step.step_seconds, cfg.batch_size, per_worker, cfg.workers)
    views = clip.test_clips * clip.test_crops
    val_seconds = min(cfg.val_videos, val_size) * clip_seconds  # single-view validation after every epoch
    return {
        **out, "run_step_seconds": run_step_seconds, "run_step_source": how,
        **project_train(run_step_seconds, dataset_size, cfg.batch_size, cfg.epochs, val_seconds),
        "val_seconds_per_epoch": val_seconds, "eval_seconds_per_clip": clip_seconds,
        "test_views": views, "test_seconds_per_video": views * clip_seconds,
        "test_seconds": val_size * views * clip_seconds, "test_hours": val_size * views * clip_seconds / 3600,
    }


@torch.no_grad()
def eval_seconds_per_clip(forward: Callable[[torch.Tensor], torch.Tensor], clips: torch.Tensor,
                          device: torch.device, repeats: int = 3) -> float | None:
    """Seconds per clip of the no-grad test forward (``pvnas eval``'s chunks of ``len(clips)``), after one
    warm-up forward (eval-mode kernels, algorithm selection); None if it runs out of memory."""
    model = getattr(forward, "_orig_mod", forward)  # (a torch.compile wrapper: its module decides the mode)
    model.eval()
    try:
        with autocast(device):
            return median_seconds(lambda: forward(clips), device, warmup=1, steps=repeats) / len(clips)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        log.warning("estimate: the test forward of %d clips ran out of memory", len(clips))
        return None
