"""The GPU check of docs/performance.md: one prepared run that prints one JSON object.

Sections, in priority order, each timed as a run times it (warm-up steps untimed, then the mean of timed
steps), each guarded (an error or an out-of-memory is recorded, the next section runs) and skipped once the
deadline (``--deadline``, default 330 s) is near:

1. search step at the ``search`` preset (C=64, 8x112x112, batch 32): fast K=1, fast K=4, the reference K=1
   (bf16 autocast, channels-last-3d, cudnn.benchmark, as ``pvnas search`` runs on CUDA), peak memory;
2. the alphas after 20 search steps: fast (bf16) and fast (float32) against the reference (float32), from the
   same weights on the same batches (``--agree-channels``, smaller than the preset: a check of the maths);
3. retrain PV-NAS-L at 8x224: train step fast vs reference at batch 8, a batch sweep of the fast one for the
   best clips/s, one video's 30-view test fast vs reference;
4. ``pvnas estimate`` (search K=1, K=4, retrain L) against the measured mean of 30 steps;
5. ``--compile`` of the fast search step and train step, if time is left.

``--smoke`` runs every section at toy sizes on whatever device there is (CPU in the tests).

    bash benchmarks/gpu_check.sh            # on the GPU machine (see its header for the PyAV wheel)
    python benchmarks/gpu_check.py --smoke  # seconds, any machine
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Callable

import torch

from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, override
from pvnas.runtime.device import compiled, cuda_layout, default_device, to_device
from pvnas.estimate.retrain import estimate_train
from pvnas.retrain.evaluate import view_logits
from pvnas.retrain.train import make_optimizer, train_step
from pvnas.nn.network import network_from_config
from pvnas.nn.supernet import supernet_from_config
from pvnas.search.remedies import remedies_of
from pvnas.estimate.search import estimate as estimate_search
from pvnas.search.loop import make_state, search_step
from pvnas.space.genotype import Genotype

CLASSES = 400


class Clock:
    """Wall time since the start and the deadline; CUDA work is synchronised before every reading."""

    def __init__(self, deadline: float, device: torch.device) -> None:
        self.start, self.deadline, self.device = time.perf_counter(), deadline, device

    def sync(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def left(self) -> float:
        return self.deadline - (time.perf_counter() - self.start)


def timed_steps(step: Callable[[], Any], clock: Clock, warmup: int, steps: int, budget: float) -> dict[str, Any]:
    """``warmup`` untimed calls, then up to ``steps`` timed ones within ``budget`` seconds; mean and all."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    end = clock.sync() + budget
    while len(times) < steps and (not times or clock.sync() + statistics.fmean(times) < end):
        t0 = clock.sync()
        step()
        times.append(clock.sync() - t0)
    return {"mean_s": statistics.fmean(times), "median_s": statistics.median(times), "steps": len(times),
            "first_timed_s": times[0]}


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def batch(shape: tuple[int, ...], n: int, device: torch.device, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (to_device(torch.randn(n, *shape, generator=g), device),
            torch.randint(0, CLASSES, (n,), generator=g).to(device))


def search_state(cfg, device: torch.device, compile: bool = False, amp: bool = True):
    torch.manual_seed(0)
    model = supernet_from_config(cfg, CLASSES, remedies_of(cfg)).to(device)
    cuda_layout(model, device)
    state = make_state(model, cfg, compile)
    state.amp = amp
    return state


def section_search(args, device, clock) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = override(SEARCH_PRESETS["search"], channels=args.channels)
    shape = (3, args.frames, args.size, args.size)
    clips, labels = batch(shape, args.batch, device)
    for name, impl, k, steps in (("fast_k1", "fast", 1, 30), ("fast_k4", "fast", 4, 30), ("reference_k1", "reference", 1, 5)):
        if clock.left() < 20:
            out[name] = {"skipped": "deadline"}
            continue
        try:
            reset_peak(device)
            state = search_state(override(base, impl=impl, partial_channels=k), device)
            out[name] = timed_steps(lambda: search_step(state, clips, labels), clock, 2, min(steps, args.max_steps),
                                    min(60.0, clock.left() / 3))
            out[name]["peak_gib"] = peak_gib(device)
            del state
        except Exception as exc:  # (an out-of-memory reference is a result too)
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    if "mean_s" in out.get("reference_k1", {}):
        for name in ("fast_k1", "fast_k4"):
            if "mean_s" in out[name]:
                out[name]["speedup_vs_reference_k1"] = out["reference_k1"]["mean_s"] / out[name]["mean_s"]
    out["config"] = {"channels": args.channels, "clip": list(shape), "batch": args.batch}
    return out


def section_agreement(args, device, clock) -> dict[str, Any]:
    """Alphas after 20 steps from one init on the same batches: fast bf16 / fast fp32 vs reference fp32."""
    cfg = override(SEARCH_PRESETS["search"], channels=args.agree_channels)
    shape = (3, args.frames, args.agree_size, args.agree_size)
    batches = [batch(shape, args.agree_batch, device, seed=s) for s in range(args.agree_steps)]
    finals, start = {}, None
    for name, impl, amp in (("reference_fp32", "reference", False), ("fast_fp32", "fast", False), ("fast_bf16", "fast", True)):
        state = search_state(override(cfg, impl=impl), device, amp=amp)
        start = torch.cat([a.detach().flatten().double().cpu() for a in state.model.alphas.values()])
        for clips, labels in batches:
            search_step(state, clips, labels)
        finals[name] = (torch.cat([a.detach().flatten().double().cpu() for a in state.model.alphas.values()]),
                        state.model.genotype().to_dict()["cells"])
    ref, ref_genotype = finals["reference_fp32"]
    moved = float((ref - start).norm())
    out: dict[str, Any] = {"steps": args.agree_steps, "channels": args.agree_channels, "alpha_movement_l2": moved}
    for name in ("fast_fp32", "fast_bf16"):
        alphas, genotype = finals[name]
        rel = float((alphas - ref).norm()) / max(moved, 1e-12)
        tol = 0.05 if name == "fast_fp32" else 0.25
        out[name] = {"relative_l2_diff": rel, "max_abs_diff": float((alphas - ref).abs().max()),
                     "same_genotype": genotype == ref_genotype, "tolerance": tol, "agrees": rel <= tol}
    return out


def section_retrain(args, device, clock) -> dict[str, Any]:
    out: dict[str, Any] = {}
    genotype = Genotype.random(1, min_conv=4)
    shape = (3, args.frames, args.train_size, args.train_size)
    models = {}
    for impl in ("reference", "fast"):
        torch.manual_seed(0)
        cfg = override(NETWORK_PRESETS["L"], impl=impl, channels=args.train_channels)
        model = network_from_config(genotype, cfg, CLASSES).to(device)
        cuda_layout(model, device)
        models[impl] = (model, make_optimizer(model, cfg))
    views = torch.randn(1, 30, *shape)
    for impl, (model, opt) in models.items():
        if clock.left() < 15:
            out[impl] = {"skipped": "deadline"}
            continue
        clips, labels = batch(shape, args.train_batch, device)
        model.train()
        reset_peak(device)
        train = timed_steps(lambda: train_step(model, opt, clips, labels, device), clock, 3, min(30, args.max_steps), 30)
        train["peak_gib"] = peak_gib(device)
        model.eval()
        test = timed_steps(lambda: view_logits(model, views, 30, device), clock, 2, min(10, args.max_steps), 20)
        out[impl] = {"train_step": train, "train_clips_per_s": args.train_batch / train["mean_s"], "test_30_views": test}
    if all("train_step" in out.get(i, {}) for i in models):
        out["train_speedup"] = out["reference"]["train_step"]["mean_s"] / out["fast"]["train_step"]["mean_s"]
        out["test_speedup"] = out["reference"]["test_30_views"]["mean_s"] / out["fast"]["test_30_views"]["mean_s"]
    sweep = {}
    model, opt = models["fast"]
    model.train()
    for b in args.sweep:
        if clock.left() < 20:
            break
        try:
            clips, labels = batch(shape, b, device)
            reset_peak(device)
            r = timed_steps(lambda: train_step(model, opt, clips, labels, device), clock, 2, min(10, args.max_steps), 15)
            sweep[b] = {"clips_per_s": b / r["mean_s"], "step_s": r["mean_s"], "peak_gib": peak_gib(device)}
        except torch.OutOfMemoryError:
            sweep[b] = {"error": "out of memory"}
            break
    out["batch_sweep"] = sweep
    good = {b: v for b, v in sweep.items() if "clips_per_s" in v}
    if good:
        best = max(good, key=lambda b: good[b]["clips_per_s"])
        out["best_batch"], out["best_clips_per_s"] = best, good[best]["clips_per_s"]
    out["config"] = {"clip": list(shape), "batch": args.train_batch, "channels": args.train_channels}
    return out


def section_estimate(args, device, clock) -> dict[str, Any]:
    """``pvnas estimate`` against the mean of 30 measured steps (after warm-up), at the same settings."""
    out: dict[str, Any] = {}
    shape = (3, args.frames, args.size, args.size)
    for name, k in (("search_k1", 1), ("search_k4", 4)):
        if clock.left() < 90:
            out[name] = {"skipped": "deadline"}
            continue
        t0 = time.perf_counter()
        est = estimate_search("search", batch=args.batch, frames=args.frames, size=args.size, channels=args.channels,
                              partial_channels=k, dataset_size=1000, num_classes=CLASSES, time_budget=args.estimate_budget)
        seconds = time.perf_counter() - t0
        cfg = override(SEARCH_PRESETS["search"], channels=args.channels, partial_channels=k)
        state = search_state(cfg, device)
        clips, labels = batch(shape, args.batch, device)
        measured = timed_steps(lambda: search_step(state, clips, labels), clock, 3, min(30, args.max_steps), 90)
        out[name] = {"estimate_s": est["step_seconds"], "estimate_source": est["step_seconds_source"],
                     "estimate_wall_s": seconds, "measured_mean_s": measured["mean_s"], "measured_steps": measured["steps"],
                     "ratio": None if est["step_seconds"] is None else est["step_seconds"] / measured["mean_s"]}
        del state
    if clock.left() > 60:
        t0 = time.perf_counter()
        genotype = Genotype.random(1, min_conv=4)
        est = estimate_train(genotype, "L", batch=args.train_batch, size=args.train_size, frames=args.frames,
                             channels=args.train_channels, dataset_size=1000, num_classes=CLASSES,
                             time_budget=args.estimate_budget)
        seconds = time.perf_counter() - t0
        torch.manual_seed(0)
        cfg = override(NETWORK_PRESETS["L"], channels=args.train_channels)
        model = network_from_config(genotype, cfg, CLASSES).to(device)
        cuda_layout(model, device)
        opt = make_optimizer(model, cfg)
        clips, labels = batch((3, args.frames, args.train_size, args.train_size), args.train_batch, device)
        measured = timed_steps(lambda: train_step(model, opt, clips, labels, device), clock, 3, min(30, args.max_steps), 60)
        out["retrain_L"] = {"estimate_s": est["step_seconds"], "estimate_wall_s": seconds,
                            "measured_mean_s": measured["mean_s"], "ratio": est["step_seconds"] / measured["mean_s"],
                            "loading": est.get("loading")}
    return out


def section_compile(args, device, clock) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if clock.left() < 90:
        return {"skipped": "deadline"}
    shape = (3, args.frames, args.size, args.size)
    clips, labels = batch(shape, args.batch, device)
    state = search_state(override(SEARCH_PRESETS["search"], channels=args.channels), device, compile=True)
    t0 = clock.sync()
    search_step(state, clips, labels)
    out["search_compile_s"] = clock.sync() - t0
    out["search_fast_k1_compiled"] = timed_steps(lambda: search_step(state, clips, labels), clock, 2,
                                                 min(20, args.max_steps), 30)
    return out


SECTIONS = {"search": section_search, "agreement": section_agreement, "retrain": section_retrain,
            "estimate": section_estimate, "compile": section_compile}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deadline", type=float, default=330.0, help="seconds for everything (sections after it are skipped)")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--smoke", action="store_true", help="toy sizes, any device: checks that every section runs")
    p.add_argument("--max-steps", type=int, default=30, help="timed steps per measurement at most")
    for name in ("channels", "size", "batch", "train_size", "train_batch"):  # e.g. a CPU-sized estimate check
        p.add_argument(f"--{name.replace('_', '-')}", type=int, dest=f"set_{name}", help=f"override the {name}")
    args = p.parse_args(argv)
    sizes = dict(channels=64, frames=8, size=112, batch=32, agree_channels=16, agree_size=56, agree_batch=8,
                 agree_steps=20, train_channels=64, train_size=224, train_batch=8, sweep=[8, 16, 32, 64, 96],
                 estimate_budget=30.0)
    if args.smoke:
        sizes = dict(channels=8, frames=4, size=32, batch=4, agree_channels=4, agree_size=32, agree_batch=2,
                     agree_steps=2, train_channels=8, train_size=64, train_batch=2, sweep=[2, 4], estimate_budget=2.0)
        args.max_steps = min(args.max_steps, 2)
    for key, value in sizes.items():
        setattr(args, key, value if getattr(args, f"set_{key}", None) is None else getattr(args, f"set_{key}"))
    if args.smoke and "compile" in args.sections:  # (compiling on a CPU takes minutes)
        args.sections.remove("compile")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = default_device()
    clock = Clock(args.deadline, device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None, "smoke": args.smoke,
    }
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            report[name] = SECTIONS[name](args, device, clock)
        except Exception as exc:
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:300], "trace": traceback.format_exc()[-1500:]}
        report[name]["section_seconds"] = time.perf_counter() - t0
    report["total_seconds"] = time.perf_counter() - clock.start
    text = json.dumps(report, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w") as f:
            f.write(text)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
