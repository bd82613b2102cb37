"""The GPU check of docs/performance.md: one prepared run that always answers with one JSON report.

Sections run in this order, each in a subprocess of its own with its own timeout; every measured item in a
section is guarded (an error or out-of-memory is recorded, the next item runs) and saved as soon as it ends,
so a section killed by its timeout still reports the items it finished (and which one was running). The
report is written after every section, and on SIGTERM/SIGINT: to stdout as one line of JSON (each line the
whole report so far: the last one is the answer) and to ``$OUT/gpu_check.json`` (``--out``).

Time plan, at the H200 speeds measured before this work (search step at the ``search`` preset: 1.01 s fast
K=1, 0.57 s K=4, batch 32; L train step 0.08 s at batch 8); about 10 s of each section is its start
(imports, CUDA context); ``gpu_check.sh`` stops everything at 360 s, ``--deadline`` is 340 s:

=========  ==========================================================================  =======  ========
section    what (must-show items first)                                                planned  timeout
=========  ==========================================================================  =======  ========
search     fast K=1 and K=4 at batch 32 (2 warm-up steps, <= 30 timed within 30 s,       ~100 s    120 s
           20 s), the reference K=1: at batch 32 if its measured memory line (steps
           at batch 1 and 2) says it fits, and fast K=1, K=4 and reference at the
           largest batch both fit (<= 10 timed each)
retrain    L at 8x224: train step fast vs reference at batch 8 (<= 30 timed within      ~45 s     75 s
           15 s), one video's 30-view test with the views on the device and end to
           end (host copy and logits back), a fast batch sweep 8-96 for clips/s
estimate   ``pvnas estimate`` search K=1, K=4 and retrain L (15 s time budget each)      ~70 s     90 s
           against the means measured by the sections above
agreement  alphas after 20 search steps at C=16, 56 px: fast bf16 and fast float32       ~25 s     45 s
           against the reference float32 (TF32 off), cosine of the first alpha
           gradients
compile    (optional) ``--compile``: first-step (compile) time and timed steps of the   the rest  the rest
           fast search step and the L train step, when >= 60 s are left
=========  ==========================================================================  =======  ========

Planned ~240 s before ``compile``; every timeout used up: 330 s.

    bash benchmarks/gpu_check.sh            # on the GPU machine (see its header for the PyAV wheel)
    python benchmarks/gpu_check.py --smoke  # toy sizes, any machine (the tests run it on CPU)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SECTIONS = ("search", "retrain", "estimate", "agreement", "compile")
TIMEOUTS = {"search": 120.0, "retrain": 75.0, "estimate": 90.0, "agreement": 45.0}  # compile: what is left
MIN_COMPILE_SECONDS = 60.0
CLASSES = 400


# ---------------------------------------------------------------------------------------------------------------
# the parent: runs each section in a subprocess, writes the report after every one and on SIGTERM/SIGINT


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _raise_interrupted(signum: int, frame: Any) -> None:
    for sig in STOP_SIGNALS:  # (a second signal must not cut the report short)
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def write_report(report: dict[str, Any], out: str | None) -> None:
    """One line of JSON on stdout, and the file ``out`` (replaced whole, never half-written)."""
    text = json.dumps(report, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    print(text, flush=True)
    if out:
        tmp = f"{out}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(json.loads(text), indent=2))
        os.replace(tmp, out)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def measured_means(report: dict[str, Any]) -> dict[str, float]:
    """The step means the estimate section compares ``pvnas estimate`` with."""
    search, retrain = report.get("search", {}), report.get("retrain", {})
    found = {"search_k1": search.get("fast_k1", {}).get("mean_s"), "search_k4": search.get("fast_k4", {}).get("mean_s"),
             "retrain_L": retrain.get("fast", {}).get("train_step", {}).get("mean_s")}
    return {k: v for k, v in found.items() if v is not None}


def run_section(name: str, argv: list[str], timeout: float, report: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Run section ``name`` in a subprocess for at most ``timeout`` seconds; its items, as far as it got."""
    partial = scratch / f"{name}.json"
    cmd = [sys.executable, __file__, *argv, "--child", name, "--partial", str(partial), "--child-seconds",
           f"{timeout:.0f}", "--measured", json.dumps(measured_means(report))]
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}  # (as the CLI: no spinning)
    err = scratch / f"{name}.err"
    with open(err, "w") as stderr:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # (a stop while starting it must still stop it)
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            raise
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # (a stop held meanwhile is handled here)
            code = proc.wait(timeout=timeout)
            outcome: dict[str, Any] = {} if code == 0 else {"exit_code": code, "stderr_tail": tail(err)}
        except subprocess.TimeoutExpired:
            stop(proc)
            outcome = {"timed_out": f"stopped after its {timeout:.0f} s", "stderr_tail": tail(err)}
        except Interrupted as signum:
            stop(proc)
            result = {**read_json(partial), "interrupted": str(signum), "section_seconds": time.perf_counter() - t0}
            raise SectionInterrupted(result, signum.signum) from None
    return {**read_json(partial), **outcome, "section_seconds": time.perf_counter() - t0}


def tail(path: Path, chars: int = 1500) -> str:
    """The end of a section's stderr (its traceback, when it died)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class SectionInterrupted(Exception):
    def __init__(self, result: dict[str, Any], signum: int) -> None:
        super().__init__(signum)
        self.result, self.signum = result, signum


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 5 s: the items it finished are already saved."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # (blocked while the parent started it)
        return run_child(args)
    out = args.out or (os.path.join(os.environ["OUT"], "gpu_check.json") if os.environ.get("OUT") else None)
    start = time.perf_counter()
    report: dict[str, Any] = {"smoke": args.smoke, "python": platform.python_version(), "sections": args.sections}
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        try:
            for name in args.sections:
                left = args.deadline - (time.perf_counter() - start)
                timeout = left - 5 if name == "compile" or args.smoke else min(TIMEOUTS[name], left - 5)
                if timeout < (MIN_COMPILE_SECONDS if name == "compile" else 15):
                    report[name] = {"skipped": f"deadline ({left:.0f} s left)"}
                else:
                    report[name] = run_section(name, argv, timeout, report, Path(scratch))
                    report.update({k: v for k, v in report[name].pop("env", {}).items() if k not in report})
                report["total_seconds"] = time.perf_counter() - start
                write_report(report, out)
        except SectionInterrupted as stopped:
            report[name] = stopped.result
            report.update({k: v for k, v in report[name].pop("env", {}).items() if k not in report})
            report["interrupted"] = signal.Signals(stopped.signum).name
            report["total_seconds"] = time.perf_counter() - start
            write_report(report, out)
            sys.exit(128 + stopped.signum)
        except Interrupted as stopped:  # (between sections: the next one says it was cut off)
            report["interrupted"] = signal.Signals(stopped.signum).name
            cut = next((s for s in args.sections if s not in report), None)
            if cut is not None:
                report[cut] = {"interrupted": report["interrupted"], "section_seconds": 0.0}
            report["total_seconds"] = time.perf_counter() - start
            write_report(report, out)
            sys.exit(128 + stopped.signum)
    return report


# ---------------------------------------------------------------------------------------------------------------
# a section, in its subprocess: items guarded one by one, each saved as soon as it ends


class Items:
    """A section's results: every item guarded (its error recorded, the next one runs) and saved to ``path``
    when it starts (``"running"``: it was cut off there) and when it ends."""

    def __init__(self, path: str, seconds: float) -> None:
        self.path, self.end = path, time.perf_counter() + seconds
        self.data: dict[str, Any] = {}

    def left(self) -> float:
        return self.end - time.perf_counter()

    def save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, default=str)
        os.replace(tmp, self.path)

    def item(self, name: str, run: Callable[[], dict[str, Any]], need: float = 0.0) -> dict[str, Any]:
        """``run()``'s result under ``name``, or its error; skipped when fewer than ``need`` seconds are left."""
        if self.left() < need:
            self.data[name] = {"skipped": f"deadline ({self.left():.0f} s left, {need:.0f} s needed)"}
            self.save()
            return self.data[name]
        self.data[name] = {"running": True}
        self.save()
        t0 = time.perf_counter()
        try:
            result = run()
        except Exception as exc:  # (an out-of-memory is a result too)  # noqa: BLE001
            result = {"error": describe(exc)}
        release_memory()
        self.data[name] = {**result, "item_seconds": time.perf_counter() - t0}
        self.save()
        return self.data[name]


def describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from pvnas.runtime.device import default_device

    items = Items(args.partial, args.child_seconds - 3)
    device = default_device()
    if args.smoke:  # (toy networks: a second thread costs more at OpenMP barriers than it gains, as for `tiny`)
        torch.set_num_threads(1)
    items.data["env"] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }
    items.save()
    CHILDREN[args.child](args, device, items)
    return items.data


# ---------------------------------------------------------------------------------------------------------------
# measuring


def synchronize(device) -> None:
    from pvnas.runtime.device import synchronize as wait

    wait(device)


def timed_steps(step: Callable[[], Any], device, warmup: int, steps: int, budget: float) -> dict[str, Any]:
    """``warmup`` untimed calls, then up to ``steps`` timed ones within ``budget`` seconds (the device synchronised
    before every clock reading): mean, median, count, first timed."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    synchronize(device)
    end = time.perf_counter() + budget
    while len(times) < steps and (not times or time.perf_counter() + statistics.fmean(times) < end):
        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return {"mean_s": statistics.fmean(times), "median_s": statistics.median(times), "steps": len(times),
            "first_timed_s": times[0]}


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def batch(shape: tuple[int, ...], n: int, device, seed: int = 1):
    import torch

    from pvnas.runtime.device import to_device

    g = torch.Generator().manual_seed(seed)
    return (to_device(torch.randn(n, *shape, generator=g), device),
            torch.randint(0, CLASSES, (n,), generator=g).to(device))


def search_state(cfg, device, compile: bool = False, amp: bool = True):
    import torch

    from pvnas.nn.supernet import supernet_from_config
    from pvnas.runtime.device import cuda_layout
    from pvnas.search.loop import make_state
    from pvnas.search.remedies import remedies_of

    torch.manual_seed(0)
    model = supernet_from_config(cfg, CLASSES, remedies_of(cfg)).to(device)
    cuda_layout(model, device)
    state = make_state(model, cfg, compile)
    state.amp = amp
    return state


def time_search(cfg, device, n: int, steps: int, budget: float, warmup: int) -> dict[str, Any]:
    """Search steps of ``cfg``'s supernet at batch ``n``: timed, with the peak memory."""
    from pvnas.search.loop import search_step

    state = search_state(cfg, device)
    clips, labels = batch((3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop), n, device)
    reset_peak(device)
    result = timed_steps(lambda: search_step(state, clips, labels), device, warmup, steps, budget)
    return {"batch": n, **result, "peak_gib": peak_gib(device)}


def memory_line_max_batch(cfg, device, limit: int) -> dict[str, Any]:
    """The largest batch (<= ``limit``) whose search step fits in 92% of the device, from the exact peaks of a
    second step at batch 1 and 2 (the first selects algorithms); ``limit`` where memory is not measured (CPU)."""
    import torch

    from pvnas.search.loop import search_step

    if device.type != "cuda":
        return {"max_batch": limit, "source": "not measured off CUDA"}
    state = search_state(cfg, device)
    peaks = {}
    for n in (1, 2):
        clips, labels = batch((3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop), n, device)
        search_step(state, clips, labels)
        reset_peak(device)
        search_step(state, clips, labels)
        peaks[n] = torch.cuda.max_memory_allocated(device) / 2**30
    per_clip = max(peaks[2] - peaks[1], 1e-3)
    room = 0.92 * torch.cuda.get_device_properties(device).total_memory / 2**30
    fitting = max(0, math.floor((room - (peaks[1] - per_clip)) / per_clip))
    return {"max_batch": min(limit, fitting), "predicted_max_batch": fitting, "peak_gib_batch_1": peaks[1],
            "per_clip_gib": per_clip, "room_gib": room, "predicted_peak_gib_at_limit": peaks[1] + (limit - 1) * per_clip}


def time_search_shrinking(cfg, device, n: int, steps: int, budget: float, warmup: int) -> dict[str, Any]:
    """:func:`time_search` at ``n``, or at 3/4 of it after an out-of-memory (three tries)."""
    import torch

    for _ in range(3):
        try:
            return time_search(cfg, device, n, steps, budget, warmup)
        except torch.OutOfMemoryError:
            release_memory()
            if n == 1:
                raise
            n = max(1, n * 3 // 4)
    return time_search(cfg, device, n, steps, budget, warmup)


# ---------------------------------------------------------------------------------------------------------------
# the sections


def section_search(args, device, items: Items) -> None:
    from pvnas.config import SEARCH_PRESETS, override

    base = override(SEARCH_PRESETS["search"], channels=args.channels, batch_size=args.batch,
                    clip=override(SEARCH_PRESETS["search"].clip, frames=args.frames, crop=args.size))
    fast1, fast4 = override(base, impl="fast"), override(base, impl="fast", partial_channels=4)
    ref = override(base, impl="reference")
    items.data["config"] = {"channels": args.channels, "clip": [3, args.frames, args.size, args.size], "batch": args.batch}
    k1 = items.item("fast_k1", lambda: time_search(fast1, device, args.batch, args.max_steps, 30, args.warmup), need=15)
    k4 = items.item("fast_k4", lambda: time_search(fast4, device, args.batch, args.max_steps, 20, args.warmup), need=10)
    line = items.item("reference_memory", lambda: memory_line_max_batch(ref, device, args.batch), need=10)
    if "max_batch" not in line:
        return
    both = line["max_batch"] if args.both_fit_batch is None else args.both_fit_batch
    if line["max_batch"] == args.batch:
        r = items.item("reference_k1", lambda: time_search(ref, device, args.batch, min(5, args.max_steps), 25,
                                                           args.warmup), need=15)
        for fast in (k1, k4):
            if "mean_s" in r and "mean_s" in fast:
                fast["speedup_vs_reference_k1"] = r["mean_s"] / fast["mean_s"]
    else:
        items.data["reference_k1"] = {"batch": args.batch, "fits": False, **line}
    if both >= args.batch:
        items.save()
        return

    def common() -> dict[str, Any]:  # the largest batch both fit: reference first (it may still need to shrink)
        r = time_search_shrinking(ref, device, max(1, both), min(5, args.max_steps), 15, args.warmup)
        out: dict[str, Any] = {"batch": r["batch"], "preset_batch": args.batch, "reference_k1": r}
        for name, cfg in (("fast_k1", fast1), ("fast_k4", fast4)):
            try:
                out[name] = time_search(cfg, device, r["batch"], min(10, args.max_steps), 10, args.warmup)
                out[name]["speedup_vs_reference_k1"] = r["mean_s"] / out[name]["mean_s"]
            except Exception as exc:  # noqa: BLE001
                out[name] = {"error": describe(exc)}
        return out

    items.item("largest_batch_both_fit", common, need=20)


def section_retrain(args, device, items: Items) -> None:
    import torch

    from pvnas.config import NETWORK_PRESETS, override
    from pvnas.nn.network import network_from_config
    from pvnas.retrain.evaluate import view_logits
    from pvnas.retrain.train import make_optimizer, train_step
    from pvnas.runtime.device import autocast, cuda_layout, to_device
    from pvnas.space.genotype import Genotype

    genotype = Genotype.random(1, min_conv=4)
    shape = (3, args.frames, args.train_size, args.train_size)
    items.data["config"] = {"clip": list(shape), "batch": args.train_batch, "channels": args.train_channels,
                            "test_views": 30}

    def build(impl: str):
        torch.manual_seed(0)
        cfg = override(NETWORK_PRESETS["L"], impl=impl, channels=args.train_channels)
        model = network_from_config(genotype, cfg, CLASSES).to(device)
        cuda_layout(model, device)
        return model, make_optimizer(model, cfg)

    views = torch.randn(1, 30, *shape, generator=torch.Generator().manual_seed(2))

    def measure(impl: str) -> dict[str, Any]:
        model, opt = build(impl)
        clips, labels = batch(shape, args.train_batch, device)
        model.train()
        reset_peak(device)
        train = timed_steps(lambda: train_step(model, opt, clips, labels, device), device, args.warmup + 1,
                            args.max_steps, 15)
        train["peak_gib"] = peak_gib(device)
        model.eval()
        on_device = to_device(views.flatten(0, 1), device)  # the views of one video, already on the device

        @torch.no_grad()
        def forward() -> None:
            with autocast(device):
                model(on_device)

        test = timed_steps(forward, device, args.warmup, min(10, args.max_steps), 10)
        end_to_end = timed_steps(lambda: view_logits(model, views, 30, device), device, 1, min(5, args.max_steps), 10)
        return {"train_step": train, "train_clips_per_s": args.train_batch / train["mean_s"],
                "test_30_views_on_device": test, "test_30_views_end_to_end": end_to_end}

    fast = items.item("fast", lambda: measure("fast"), need=10)
    ref = items.item("reference", lambda: measure("reference"), need=10)
    if "train_step" in fast and "train_step" in ref:
        items.data["train_speedup"] = ref["train_step"]["mean_s"] / fast["train_step"]["mean_s"]
        items.data["test_speedup"] = (ref["test_30_views_on_device"]["mean_s"]
                                      / fast["test_30_views_on_device"]["mean_s"])

    def sweep() -> dict[str, Any]:
        model, opt = build("fast")
        model.train()
        out: dict[str, Any] = {}
        for b in args.sweep:
            if items.left() < 8:
                out[str(b)] = {"skipped": "deadline"}
                break
            try:
                data = batch(shape, b, device)
                reset_peak(device)
                r = timed_steps(lambda data=data: train_step(model, opt, *data, device), device, args.warmup,
                                min(10, args.max_steps), 5)
                out[str(b)] = {"clips_per_s": b / r["mean_s"], "step_s": r["mean_s"], "peak_gib": peak_gib(device)}
            except torch.OutOfMemoryError:
                out[str(b)] = {"error": "out of memory"}
                break
            finally:
                data = None
                release_memory()
        good = {b: v for b, v in out.items() if "clips_per_s" in v}
        if good:
            best = max(good, key=lambda b: good[b]["clips_per_s"])
            out["best_batch"], out["best_clips_per_s"] = int(best), good[best]["clips_per_s"]
        return out

    items.item("batch_sweep", sweep, need=10)


def section_estimate(args, device, items: Items) -> None:
    """``pvnas estimate`` against the means the search and retrain sections measured at the same settings."""
    import torch

    from pvnas.estimate.retrain import estimate_train
    from pvnas.estimate.search import estimate as estimate_search
    from pvnas.space.genotype import Genotype

    measured = json.loads(args.measured or "{}")

    def compare(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        est = run()
        out = {key: est.get(key) for key in ("step_seconds", "step_seconds_source", "measured_batch", "timed_steps",
                                             "fits_in_memory", "max_batch", "peak_step_memory_mb",
                                             "activation_memory_mb", "dtype", "threads", "compile")}
        out["estimate_wall_s"] = time.perf_counter() - t0
        mean = measured.get(name)
        out["measured_mean_s"] = mean
        out["ratio"] = None if mean is None or est["step_seconds"] is None else est["step_seconds"] / mean
        if mean is None:
            out["ratio_missing"] = "no measured mean: its section did not measure it"
        return out

    threads = torch.get_num_threads()  # (the threads the sections above measured on)
    common = dict(batch=args.batch, frames=args.frames, size=args.size, channels=args.channels, dataset_size=1000,
                  num_classes=CLASSES, time_budget=args.estimate_budget, threads=threads)
    for name, k in (("search_k1", 1), ("search_k4", 4)):
        items.item(name, lambda k=k, name=name: compare(name, lambda: estimate_search("search", partial_channels=k,
                                                                                      **common)), need=20)
    genotype = Genotype.random(1, min_conv=4)
    items.item("retrain_L", lambda: compare("retrain_L", lambda: estimate_train(
        genotype, "L", batch=args.train_batch, size=args.train_size, frames=args.frames, channels=args.train_channels,
        dataset_size=1000, num_classes=CLASSES, time_budget=args.estimate_budget, threads=threads)), need=15)


def section_agreement(args, device, items: Items) -> None:
    """Alphas after N steps from one init on the same batches: fast bf16 / fast fp32 vs reference fp32, float32 runs
    with TF32 off (cuDNN and matmuls), and the cosine of the first alpha gradients (Adam with beta1 = 0 moves each
    alpha by ~lr * sign(g), so rounding flips near-zero gradients: the cosine says whether the maths agree)."""
    import torch

    from pvnas.config import SEARCH_PRESETS, override
    from pvnas.search.loop import search_step

    cfg = override(SEARCH_PRESETS["search"], channels=args.agree_channels,
                   clip=override(SEARCH_PRESETS["search"].clip, frames=args.frames, crop=args.agree_size))
    shape = (3, args.frames, args.agree_size, args.agree_size)
    batches = [batch(shape, args.agree_batch, device, seed=s) for s in range(args.agree_steps)]
    finals: dict[str, Any] = {}

    def run(name: str, impl: str, amp: bool) -> dict[str, Any]:
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        if not amp:  # float32 means float32: no TF32 convolutions (cuDNN's default) or matmuls
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            state = search_state(override(cfg, impl=impl), device, amp=amp)
            arch = state.alpha_opt.param_groups[0]["params"]
            first: list[torch.Tensor] = []

            def keep_first(opt, *_: Any) -> None:
                if not first:
                    first.extend((torch.zeros_like(p) if p.grad is None else p.grad).detach().flatten().double().cpu()
                                 for p in arch)

            handle = state.alpha_opt.register_step_pre_hook(keep_first)
            start = torch.cat([a.detach().flatten().double().cpu() for a in arch])
            for clips, labels in batches:
                search_step(state, clips, labels)
            handle.remove()
            finals[name] = (start, torch.cat([a.detach().flatten().double().cpu() for a in arch]),
                            torch.cat(first) if first else None, state.model.genotype().to_dict()["cells"])
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        return {"steps": len(batches)}

    items.data["config"] = {"steps": args.agree_steps, "channels": args.agree_channels, "clip": list(shape),
                            "batch": args.agree_batch}
    for name, impl, amp in (("reference_fp32", "reference", False), ("fast_fp32", "fast", False),
                            ("fast_bf16", "fast", True)):
        items.item(f"run_{name}", lambda n=name, i=impl, a=amp: run(n, i, a), need=5)
    if "reference_fp32" not in finals:
        return
    start, ref, ref_grad, ref_genotype = finals["reference_fp32"]
    moved = float((ref - start).norm())
    items.data["alpha_movement_l2"] = moved
    for name in ("fast_fp32", "fast_bf16"):
        if name not in finals:
            continue
        _, alphas, grad, genotype = finals[name]
        rel = float((alphas - ref).norm()) / max(moved, 1e-12)
        tol = 0.05 if name == "fast_fp32" else 0.25
        cosine = None if grad is None or ref_grad is None else float(
            torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0))
        items.data[name] = {"relative_l2_diff": rel, "max_abs_diff": float((alphas - ref).abs().max()),
                            "first_alpha_grad_cosine": cosine, "same_genotype": genotype == ref_genotype,
                            "tolerance": tol, "agrees": rel <= tol}
    items.save()


def section_compile(args, device, items: Items) -> None:
    """``--compile``: the first step (compilation) and timed steps, fast search step K=1 and L train step."""
    import torch

    from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, override
    from pvnas.nn.network import network_from_config
    from pvnas.retrain.train import make_optimizer, train_step
    from pvnas.runtime.device import compiled, cuda_layout
    from pvnas.search.loop import search_step
    from pvnas.space.genotype import Genotype

    def search() -> dict[str, Any]:
        cfg = override(SEARCH_PRESETS["search"], channels=args.channels,
                       clip=override(SEARCH_PRESETS["search"].clip, frames=args.frames, crop=args.size))
        state = search_state(cfg, device, compile=True)
        clips, labels = batch((3, args.frames, args.size, args.size), args.batch, device)
        synchronize(device)
        t0 = time.perf_counter()
        search_step(state, clips, labels)
        synchronize(device)
        first = time.perf_counter() - t0
        return {"batch": args.batch, "first_step_s": first,
                **timed_steps(lambda: search_step(state, clips, labels), device, 1, min(20, args.max_steps), 20)}

    def retrain() -> dict[str, Any]:
        torch.manual_seed(0)
        cfg = override(NETWORK_PRESETS["L"], channels=args.train_channels)
        model = network_from_config(Genotype.random(1, min_conv=4), cfg, CLASSES).to(device)
        cuda_layout(model, device)
        opt, forward = make_optimizer(model, cfg), compiled(model, True)
        clips, labels = batch((3, args.frames, args.train_size, args.train_size), args.train_batch, device)
        model.train()
        synchronize(device)
        t0 = time.perf_counter()
        train_step(forward, opt, clips, labels, device)
        synchronize(device)
        first = time.perf_counter() - t0
        return {"batch": args.train_batch, "first_step_s": first,
                **timed_steps(lambda: train_step(forward, opt, clips, labels, device), device, 1,
                              min(20, args.max_steps), 10)}

    items.item("search_fast_k1", search, need=30)
    items.item("retrain_L_fast", retrain, need=30)


CHILDREN = {"search": section_search, "retrain": section_retrain, "estimate": section_estimate,
            "agreement": section_agreement, "compile": section_compile}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deadline", type=float, default=340.0, help="seconds for everything (sections after it are skipped)")
    p.add_argument("--sections", nargs="+", default=None, choices=SECTIONS,
                   help="which, in this order (default: all; with --smoke all but compile)")
    p.add_argument("--smoke", action="store_true", help="toy sizes, any device: checks that every section runs")
    p.add_argument("--max-steps", type=int, default=30, help="timed steps per measurement at most")
    p.add_argument("--both-fit-batch", type=int, help="time fast and reference also at this batch (default: the "
                   "largest both fit, when the reference does not fit the preset batch; --smoke: half the batch)")
    p.add_argument("--out", help="also write the report here (default: $OUT/gpu_check.json when OUT is set)")
    for name in ("channels", "size", "batch", "train_size", "train_batch"):  # e.g. a CPU-sized estimate check
        p.add_argument(f"--{name.replace('_', '-')}", type=int, dest=f"set_{name}", help=f"override the {name}")
    for name in ("child", "partial", "measured"):  # (how the parent runs a section)
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    p.add_argument("--child-seconds", type=float, default=600.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes: dict[str, Any] = dict(channels=64, frames=8, size=112, batch=32, agree_channels=16, agree_size=56,
                                 agree_batch=8, agree_steps=20, train_channels=64, train_size=224, train_batch=8,
                                 sweep=[8, 16, 32, 64, 96], estimate_budget=15.0, warmup=2)
    if args.smoke:
        sizes = dict(channels=4, frames=2, size=16, batch=4, agree_channels=4, agree_size=16, agree_batch=2,
                     agree_steps=2, train_channels=4, train_size=32, train_batch=2, sweep=[2, 4], estimate_budget=1.0,
                     warmup=1)
        args.max_steps = min(args.max_steps, 1)
        args.both_fit_batch = args.both_fit_batch or sizes["batch"] // 2
    for key, value in sizes.items():
        setattr(args, key, value if getattr(args, f"set_{key}", None) is None else getattr(args, f"set_{key}"))
    if args.sections is None:  # (compiling on a CPU takes minutes: not in a smoke run unless asked for)
        args.sections = [s for s in SECTIONS if not (args.smoke and s == "compile")]
    return args


if __name__ == "__main__":
    main()
