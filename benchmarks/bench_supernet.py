"""Reference vs fast supernet: full search iterations (alpha step + weight step), one JSON report.

Step times are measured interleaved in one process (ref, fast, fast K, ref, fast, ...) so that a
shared, noisy machine slows every variant alike; peak memory is measured per variant in a fresh
subprocess (peak RSS on CPU, ``max_memory_allocated`` on CUDA), since a process's peak is only its own.

    python benchmarks/bench_supernet.py                 # C=16, T=8, 112 px, batch 4, 10 classes
    python benchmarks/bench_supernet.py --partial 4 --iters 5 --channels 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from pvnas.config import SEARCH_PRESETS, override
from pvnas.estimate.memory import peak_rss, reset_peak_rss
from pvnas.nn.supernet import supernet_from_config
from pvnas.search.loop import make_state, search_step
from pvnas.search.remedies import remedies_of


def variants(partial: int) -> dict[str, tuple[str, int]]:
    """Name -> (cell implementation, partial channels)."""
    out = {"reference": ("reference", 1), "fast": ("fast", 1)}
    if partial > 1:
        out[f"fast_k{partial}"] = ("fast", partial)
    return out


def build(args: argparse.Namespace, impl: str, partial: int, device: torch.device):
    """A supernet and its search state at the benchmark config, with a fixed seed per variant."""
    torch.manual_seed(0)
    cfg = override(SEARCH_PRESETS["search"], channels=args.channels, partial_channels=partial, impl=impl)
    model = supernet_from_config(cfg, args.classes, remedies_of(cfg)).to(device)
    return make_state(model, cfg)


def batch(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    clips = torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=g)
    labels = torch.randint(0, args.classes, (args.batch,), generator=g)
    return clips.to(device), labels.to(device)


def timed_step(state, clips: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one search step."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    search_step(state, clips, labels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def measure_memory(args: argparse.Namespace, name: str, device: torch.device) -> dict[str, float]:
    """Run in a fresh process: peak memory of one search step (after a warm-up step) of one variant."""
    impl, partial = variants(args.partial)[name]
    state = build(args, impl, partial, device)
    clips, labels = batch(args, device)
    rss_before = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    for _ in range(2):
        search_step(state, clips, labels)
    out = {"peak_rss_mb": peak_rss()}
    out["step_rss_mb"] = out["peak_rss_mb"] - rss_before
    if device.type == "cuda":
        out["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["step_allocated_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    return out


def memory_in_subprocess(name: str) -> dict[str, float]:
    argv = [a for a in sys.argv[1:] if a != "--no-memory"]
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--memory-of", name], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant")
    parser.add_argument("--partial", type=int, default=4, help="K of the partial-channel variant (1: none)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip", default="", help="comma-separated variants not to run, e.g. reference")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.memory_of:
        print(json.dumps(measure_memory(args, args.memory_of, device)))
        return

    names = [n for n in variants(args.partial) if n not in args.skip.split(",")]
    states = {n: build(args, *variants(args.partial)[n], device) for n in names}
    clips, labels = batch(args, device)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for it in range(args.warmup + args.iters):
        for n in names:
            wall, used = timed_step(states[n], clips, labels, device)
            if it >= args.warmup:
                times[n].append(wall)
                cpu[n].append(used)
    report = {
        "config": {k: getattr(args, k) for k in ("channels", "frames", "size", "batch", "classes", "iters", "partial")},
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "step_seconds": {n: statistics.median(ts) for n, ts in times.items()},
        "step_seconds_all": times,
        # CPU time is what a shared machine's other load disturbs least (with one thread, at least)
        "step_cpu_seconds": {n: statistics.median(ts) for n, ts in cpu.items()},
    }
    if "reference" in names:
        for key, out in (("step_seconds", "speedup_vs_reference"), ("step_cpu_seconds", "cpu_speedup_vs_reference")):
            ref = report[key]["reference"]
            report[out] = {n: ref / s for n, s in report[key].items() if n != "reference"}
    if not args.no_memory:
        del states
        memory = {n: memory_in_subprocess(n) for n in names}
        report["memory"] = memory
        if "reference" in names:
            key = "step_allocated_mb" if device.type == "cuda" else "step_rss_mb"
            report["memory_ratio_vs_reference"] = {
                n: memory[n][key] / memory["reference"][key] for n in names if n != "reference"
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
