"""Reference vs fast retrain network (``Network.impl``): SGD train steps and 30-view test, one JSON report.

Both variants hold the same weights and run interleaved in one process (ref, fast, ref, fast, ...), so a
shared, noisy machine slows both alike; read ``cpu_speedup`` (process CPU time) on a loaded machine, best
with ``--threads 1``. The train step is :func:`pvnas.retrain.train.train_step` (forward, backward, SGD; bf16
autocast on CUDA), the test :func:`pvnas.retrain.evaluate.view_logits` over one video's 30 views (10 clips x
3 crops) in chunks of ``--eval-batch`` clips, as ``pvnas eval`` runs them. Peak memory is measured per
variant and task in a fresh subprocess (growth of the peak RSS on CPU, ``max_memory_allocated`` on CUDA).

    python benchmarks/bench_network.py                      # PV-NAS-L at 8x160 (CPU) / 8x224 (CUDA), and demo
    python benchmarks/bench_network.py --threads 1 --iters 5 --presets L
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: beside other jobs, spinning threads cost 3-20x

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402

import pvnas  # noqa: E402
from pvnas.config import NETWORK_PRESETS  # noqa: E402
from pvnas.estimate.memory import peak_rss, reset_peak_rss  # noqa: E402
from pvnas.runtime.device import cuda_layout, to_device  # noqa: E402
from pvnas.retrain.evaluate import view_logits  # noqa: E402
from pvnas.retrain.train import make_optimizer, train_step  # noqa: E402

IMPLS = ("reference", "fast")
VIEWS = 30


def shapes(args: argparse.Namespace, preset: str, device: torch.device) -> dict[str, int]:
    """Clip shape, batches and classes of a preset: L at 8x160 (CPU) or 8x224 (CUDA), demo as the demo runs."""
    cfg = NETWORK_PRESETS[preset]
    if preset == "demo":  # (the demo dataset's 8 classes)
        return {"frames": cfg.clip.frames, "size": cfg.clip.crop, "batch": cfg.batch_size, "eval_batch": VIEWS, "classes": 8}
    cuda = device.type == "cuda"
    return {
        "classes": args.classes,
        "frames": args.frames or cfg.clip.frames,
        "size": args.size or (cfg.clip.crop if cuda else 160),
        "batch": args.batch or (cfg.batch_size if cuda else 2),
        "eval_batch": args.eval_batch or (VIEWS if cuda else 10),
    }


def build(args: argparse.Namespace, preset: str, impl: str, device: torch.device):
    """The network (same weights for every impl: fixed seed) and its SGD optimizer."""
    genotype = pvnas.Genotype.load(args.genotype) if args.genotype else pvnas.Genotype.random(args.seed, min_conv=4)
    torch.manual_seed(0)
    model = pvnas.build_network(genotype, preset, num_classes=shapes(args, preset, device)["classes"], impl=impl)
    model.to(device)
    cuda_layout(model, device)  # (as pvnas train/eval: channels-last-3d and cudnn.benchmark on CUDA)
    return model, make_optimizer(model, NETWORK_PRESETS[preset])


def inputs(shape: dict[str, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g, classes = torch.Generator().manual_seed(1), shape["classes"]
    clip = (3, shape["frames"], shape["size"], shape["size"])
    clips = to_device(torch.randn(shape["batch"], *clip, generator=g), device)
    labels = torch.randint(0, classes, (shape["batch"],), generator=g).to(device)
    views = torch.randn(1, VIEWS, *clip, generator=g)  # one video's 30 views, moved per chunk as in `pvnas eval`
    return clips, labels, views


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def tasks(model, optimizer, clips, labels, views, shape, device) -> dict[str, Callable[[], Any]]:
    def train() -> None:
        model.train()
        train_step(model, optimizer, clips, labels, device)

    def test() -> None:
        model.eval()
        view_logits(model, views, shape["eval_batch"], device)

    return {"train_step": train, "eval_30_views": test}


def measure_memory(args: argparse.Namespace, preset: str, impl: str, task: str, device: torch.device) -> float:
    """In a fresh process (a process's peak is its own): peak memory growth, MiB, of two train steps or of one
    video's 30-view test."""
    shape = shapes(args, preset, device)
    model, optimizer = build(args, preset, impl, device)
    clips, labels, views = inputs(shape, device)
    fn = tasks(model, optimizer, clips, labels, views, shape, device)[task]
    rss_before = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    for _ in range(2 if task == "train_step" else 1):
        fn()
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    return peak_rss() - rss_before


def memory_in_subprocess(preset: str, impl: str, task: str) -> float:
    argv = [a for a in sys.argv[1:] if a != "--no-memory"]
    done = subprocess.run([sys.executable, __file__, *argv, "--memory-of", f"{preset}:{impl}:{task}"],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def bench_preset(args: argparse.Namespace, preset: str, device: torch.device) -> dict[str, Any]:
    shape = shapes(args, preset, device)
    built = {impl: build(args, preset, impl, device) for impl in IMPLS}
    built["fast"][0].load_state_dict(built["reference"][0].state_dict())
    clips, labels, views = inputs(shape, device)
    runs = {impl: tasks(*built[impl], clips, labels, views, shape, device) for impl in IMPLS}
    wall: dict[str, dict[str, list[float]]] = {t: {i: [] for i in IMPLS} for t in runs["fast"]}
    cpu: dict[str, dict[str, list[float]]] = {t: {i: [] for i in IMPLS} for t in runs["fast"]}
    for it in range(args.warmup + args.iters):
        for task in wall:
            for impl in IMPLS:
                w, c = timed(runs[impl][task], device)
                if it >= args.warmup:
                    wall[task][impl].append(w)
                    cpu[task][impl].append(c)
    report: dict[str, Any] = {"config": {**shape, "views": VIEWS}}
    for key, samples in (("seconds", wall), ("cpu_seconds", cpu)):
        report[key] = {t: {i: statistics.median(v) for i, v in per.items()} for t, per in samples.items()}
    report["seconds_all"] = wall
    report["speedup"] = {t: m["reference"] / m["fast"] for t, m in report["seconds"].items()}
    report["cpu_speedup"] = {t: m["reference"] / m["fast"] for t, m in report["cpu_seconds"].items()}
    if not args.no_memory:
        del built, runs
        key = "allocated_mb" if device.type == "cuda" else "rss_mb"
        memory = {task: {impl: memory_in_subprocess(preset, impl, task) for impl in IMPLS} for task in wall}
        report[f"peak_{key}"] = memory
        report["memory_ratio_fast_vs_reference"] = {t: m["fast"] / m["reference"] for t, m in memory.items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="L,demo", help="comma-separated retrain presets")
    parser.add_argument("--genotype", default=None, help="genotype JSON (default: Genotype.random(--seed, min_conv=4))")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frames", type=int, default=None, help="L: frames per clip (default 8)")
    parser.add_argument("--size", type=int, default=None, help="L: crop (default 160 on CPU, 224 on CUDA)")
    parser.add_argument("--batch", type=int, default=None, help="L: clips per train step (default 2 on CPU, 8 on CUDA)")
    parser.add_argument("--eval-batch", type=int, default=None, help="L: clips per test forward (default 10 on CPU, 30)")
    parser.add_argument("--classes", type=int, default=400, help="L: classes (demo: its 8)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per variant and task")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant and task")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory subprocesses")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.memory_of:
        print(json.dumps(measure_memory(args, *args.memory_of.split(":"), device)))
        return
    load_before = os.getloadavg()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "genotype": args.genotype or f"Genotype.random({args.seed}, min_conv=4)",
    }
    for preset in args.presets.split(","):
        report[preset] = bench_preset(args, preset, device)
    report["loadavg_1_5_15"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
