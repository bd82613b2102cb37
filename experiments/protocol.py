"""What the studies in this folder share: search, derive, retrain + multi-view test, and summary statistics.

Each step is the public pvnas API a user would call (``run_search``, ``derive_from_run``, ``run_train``,
``run_eval``), so a study measures exactly what the commands do.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pvnas.config import NetworkConfig, SearchConfig
from pvnas.retrain.evaluate import run_eval
from pvnas.retrain.modelfile import load_model
from pvnas.retrain.train import run_train
from pvnas.errors import ConfigError, PvnasError
from pvnas.metrics.flops import count_flops
from pvnas.runtime.run import Preempted
from pvnas.search.loop import run_search
from pvnas.search.snapshots import derive_from_run
from pvnas.space.genotype import Genotype
from pvnas.space.ops import CELL_KINDS


def search(cfg: SearchConfig, data: str, run: Path, preset: str) -> float:
    """One supernet search into ``run`` (as ``pvnas search``); returns its wall seconds."""
    t0 = time.perf_counter()
    run_search(cfg, data, run, preset=preset)
    return time.perf_counter() - t0


def derive(run: Path, epoch: int | None = None, overrides: dict[str, Any] | None = None) -> Genotype:
    """The genotype of a saved epoch (as ``pvnas derive RUN --epoch N [--max-param-free K]``, edge weights
    included; ``overrides``: remedy values replacing the run's, as :func:`derive_from_run`)."""
    genotype = derive_from_run(run, epoch, overrides)
    return Genotype(genotype.cells, {**genotype.meta, "run": f"{run.parent.name}/{run.name}"})


def retrain(genotype: Genotype, cfg: NetworkConfig, data: str, run: Path, views: str, preset: str) -> dict[str, Any]:
    """Train from scratch, test multi-view, count params/GFLOPs at the trained clip size."""
    t0 = time.perf_counter()
    last = run_train(genotype, cfg, data, run, preset=preset)
    t1 = time.perf_counter()
    result = run_eval(run / "model.pt", data, views=views)
    t2 = time.perf_counter()
    clip = cfg.clip
    cost = count_flops(load_model(run / "model.pt").model, (3, clip.frames, clip.crop, clip.crop))
    return {
        "top1": result["top1"], "top5": result["top5"], "by_views": result["by_views"], "videos": result["videos"],
        "skipped": result["skipped"], "params": cost["params"], "gflops": cost["gflops"],
        "train_acc": last["acc"], "learned": last["diagnosis"]["learned"], "causes": last["diagnosis"]["causes"],
        "train_seconds": t1 - t0, "eval_seconds": t2 - t1,
    }


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def param_free_edges(genotype: dict[str, Any]) -> str:
    """``"4/6/0/6"``: parameter-free edges per cell kind, the collapse signal of one genotype."""
    edges = Genotype.from_dict(genotype).parameter_free_edges()
    return "/".join(str(edges[kind]) for kind in CELL_KINDS)


def fmt_pm(mean: float, std: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return f"{mean * scale:.{digits}f}" + ("" if std is None else f" ± {std * scale:.{digits}f}")


def fresh_dir(out: Path) -> None:
    """Refuse to mix a study into an old one's files."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)


def check_seeds(seeds: Sequence[int]) -> None:
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds must be distinct non-negative integers, got {list(seeds)}")


def run_main(run: Callable[[argparse.Namespace, str], Any], args: argparse.Namespace, script: str,
             argv: Sequence[str] | None, results: str = "results.md") -> int:
    """Run a study with its torch thread count pinned (it changes float sums); user errors exit 2 as the CLI's."""
    import shlex

    command = shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run(args, command)
    except PvnasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    print((args.out / results).read_text())
    return 0


# ---------------------------------------------------------------- units in processes
def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _call(unit: tuple) -> Any:
    """One unit in a pool worker. A stop signal (SIGTERM to the study's process group: ``timeout``, SLURM,
    ``kill -- -PGID``) ends the worker once its run has checkpointed: otherwise it would go on with the units
    already queued to it, beside the study that is restarted into the same folders."""
    fn, *args = unit
    try:
        return fn(*args)
    except Preempted as stop:
        logging.getLogger(__name__).warning("%s", stop)
        os._exit(stop.exit_code)


def run_units(jobs: int, threads: int, units: list[tuple]) -> list[Any]:
    """Run ``(function, *args)`` units, ``jobs`` at a time in fresh processes (in this one if ``jobs`` is 1)."""
    if jobs <= 1:
        return [fn(*a) for fn, *a in units]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        return list(pool.map(_call, units))
