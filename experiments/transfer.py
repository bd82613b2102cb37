#!/usr/bin/env python
"""Does a trained model transfer? ``pvnas train --init`` on a related task of the suite against training from scratch.

Per seed: the network (one fixed genotype, ``--genotype`` or a random one with >= 4 convolutions per cell) is
retrained on the ``--source`` task with all its training clips; that model then starts retrains on the ``--target``
task, with a share (``--fractions``, drawn per class by a hash of the seed and the file name) of the target's
training clips: fine-tuned throughout (``transfer``), or ``--freeze`` of the epochs as a linear probe first
(``probe+ft``). Training from scratch on the same clips with the same recipe and epochs is the baseline (the same
budget: only the starting weights differ). Every model is tested multi-view on the target's whole validation split.

The noise is measured: the std over seeds of each arm, and of the paired difference transfer - scratch (the same
seed shares the clips and the sampling order). A gain is clear when its mean exceeds twice its standard error.
Every unit (one retrain and its test) is cached in ``OUT/runs`` and reused, so an interrupted study resumes.
``--jobs`` runs units in parallel processes, one torch thread each by default. Writes ``OUT/results.json`` and
``OUT/results.md``.

    python experiments/transfer.py --out runs/transfer --jobs 2                # appearance -> appearance_motion
    python experiments/transfer.py --out runs/transfer2 --source motion --target fine_motion
    python experiments/transfer.py --quick --out /tmp/t                       # the protocol in minutes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch

from pvnas.config import NETWORK_PRESETS, NetworkConfig, get_preset, override, to_dict
from pvnas.data.datasets import tasks as task_trees
from pvnas.data.decode import is_video_file
from pvnas.data.generators.task_suite import TASKS, retrain_epochs
from pvnas.errors import ConfigError
from pvnas.retrain.evaluate import run_eval
from pvnas.retrain.train import run_train
from pvnas.runtime.rundir import MetricsLog
from pvnas.space.genotype import Genotype
from protocol import check_seeds, fmt_pm, mean_std, run_main, run_units

log = logging.getLogger("transfer")
ARMS = ("scratch", "transfer", "probe+ft")


# ---------------------------------------------------------------- data
def subset_lists(task: str, fraction: float, seed: int, out: Path) -> str:
    """A ``list:`` spec of ``task``'s training clips, ``fraction`` of each class (the first by SHA-256 of the seed and
    the file name: the same clips for every arm of a seed), and its whole validation split."""
    root = task_trees.ensure_task(task)
    folder = out / "data" / f"{task_trees.study_slug(f'task:{task}')}-f{fraction:g}-s{seed}"
    if not (folder / "val.txt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        lines = {"train": [], "val": []}
        for split in lines:
            for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                clips = sorted(p for p in cls.iterdir() if is_video_file(p))
                if split == "train":
                    clips.sort(key=lambda p: hashlib.sha256(f"{seed}\0{p.name}".encode()).digest())
                    clips = sorted(clips[: max(1, round(fraction * len(clips)))])
                lines[split] += [f"{p} {cls.name}\n" for p in clips]
        (folder / "train.txt").write_text("".join(lines["train"]))
        (folder / "val.txt").write_text("".join(lines["val"]))
    return f"list:{folder / 'train.txt'}"


# ---------------------------------------------------------------- units


def train_unit(genotype: dict[str, Any], cfg: NetworkConfig, data: str, run: Path, views: str,
               init: str | None = None, freeze: float = 0.0) -> dict[str, Any]:
    """One retrain (from scratch or from ``init``) and its multi-view test, cached in ``run/result.json``."""
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if run.exists():
        import shutil

        shutil.rmtree(run)
    t0 = time.perf_counter()
    last = run_train(Genotype.from_dict(genotype), cfg, data, run, preset="study", init=init, freeze=freeze)
    t1 = time.perf_counter()
    test = run_eval(run / "model.pt", data, views=views)
    curve = [r["val_top1"] for r in MetricsLog(run / "metrics.jsonl").read()]
    result = {"top1": test["top1"], "top5": test["top5"], "videos": test["videos"], "train_acc": last["acc"],
              "curve": curve, "auc": statistics.fmean(curve), "train_seconds": t1 - t0,
              "eval_seconds": time.perf_counter() - t1}
    done.write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------- the study
def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """Mean and std of the per-seed difference a - b, and whether it is clear (|mean| > 2 standard errors)."""
    diffs = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    clear = std is not None and abs(mean) > 2 * std / math.sqrt(len(diffs))
    return {"each": diffs, "mean": mean, "std": std, "clear": clear}


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    for name in (args.source, args.target):
        if name not in TASKS:
            raise ConfigError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    check_seeds(seeds)
    if not all(0 < f <= 1 for f in args.fractions):
        raise ConfigError(f"--fractions must be in (0, 1], got {args.fractions}")
    base = get_preset(NETWORK_PRESETS, args.preset)
    epochs = args.epochs or (2 if args.quick else retrain_epochs(f"task:{args.target}"))
    network = override(base, epochs=epochs, warmup_epochs=min(base.warmup_epochs or 0, epochs - 1),
                       **({"channels": 4, "val_videos": 16} if args.quick else {}))
    source_cfg = override(network, epochs=args.source_epochs or epochs,
                          warmup_epochs=min(base.warmup_epochs or 0, (args.source_epochs or epochs) - 1))
    views = args.views or f"{network.clip.test_clips}x{network.clip.test_crops}"
    genotype = (Genotype.load(args.genotype) if args.genotype else Genotype.random(args.genotype_seed, min_conv=4)).to_dict()
    args.out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    runs = args.out / "runs"
    source_slug, target_slug = (task_trees.study_slug(f"task:{t}") for t in (args.source, args.target))
    source_data = subset_lists(args.source, 1.0, 0, args.out)
    sources = run_units(args.jobs, args.threads, [
        (train_unit, genotype, override(source_cfg, seed=s), source_data, runs / f"source-{source_slug}-s{s}", views)
        for s in seeds])
    units, keys = [], []
    for s in seeds:
        model = str(runs / f"source-{source_slug}-s{s}" / "model.pt")
        for f in args.fractions:
            data = subset_lists(args.target, f, s, args.out)
            cfg = override(network, seed=s)
            for arm, init, freeze in (("scratch", None, 0.0), ("transfer", model, 0.0), ("probe+ft", model, args.freeze)):
                if arm == "probe+ft" and not args.freeze:
                    continue
                keys.append((f, arm, s))
                units.append((train_unit, genotype, cfg, data, runs / f"{target_slug}-f{f:g}-{arm}-s{s}", views, init,
                              freeze))
    results = dict(zip(keys, run_units(args.jobs, args.threads, units)))

    table: dict[str, Any] = defaultdict(dict)
    for f in args.fractions:
        arms = [a for a in ARMS if (f, a, seeds[0]) in results]
        for arm in arms:
            top1 = [results[f, arm, s]["top1"] for s in seeds]
            auc = [results[f, arm, s]["auc"] for s in seeds]
            table[f"{f:g}"][arm] = {"top1_each": top1, "top1": mean_std(top1), "auc": mean_std(auc),
                                    "train_seconds": statistics.fmean(results[f, arm, s]["train_seconds"] for s in seeds)}
        for arm in arms[1:]:
            table[f"{f:g}"][f"{arm} - scratch"] = {
                "top1": paired(table[f"{f:g}"][arm]["top1_each"], table[f"{f:g}"]["scratch"]["top1_each"]),
                "auc": paired([results[f, arm, s]["auc"] for s in seeds], [results[f, "scratch", s]["auc"] for s in seeds])}
    result = {
        "command": command, "source": args.source, "target": args.target, "seeds": seeds, "fractions": args.fractions,
        "task_versions": {t: TASKS[t].version for t in (args.source, args.target)}, "genotype": genotype,
        "freeze": args.freeze, "views": views,
        "network": to_dict(network), "source_network": to_dict(source_cfg), "preset": args.preset,
        "train_clips": {f"{f:g}": sum(1 for _ in open(subset_lists(args.target, f, seeds[0], args.out)[5:]))
                        for f in args.fractions},
        "sources": [{"seed": s, **r} for s, r in zip(seeds, sources)],
        "table": table, "jobs": args.jobs, "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_start": load_start, "load_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "wall_seconds": time.perf_counter() - t_start,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    n = r["network"]
    lines = [
        f"# Transfer: `{r['source']}` (v{r['task_versions'][r['source']]}) -> `{r['target']}` "
        f"(v{r['task_versions'][r['target']]})", "",
        f"`{r['command']}`", "",
        f"- Network: preset `{r['preset']}`, C={n['channels']}, {n['epochs']} epochs ({n['warmup_epochs']} warm-up), "
        f"batch {n['batch_size']}, lr {n['lr']}; the same recipe for every arm; source models "
        f"{r['source_network']['epochs']} epochs on all of `{r['source']}`.",
        f"- Seeds {r['seeds']}: a seed fixes the source model, the target clips drawn and the training order.",
        f"- Test: `{r['target']}`'s whole validation split, {r['views']} views; top-1 in %, mean ± std over seeds.",
        f"- Source models' own top-1 on `{r['source']}`: "
        + ", ".join(f"{s['top1'] * 100:.1f}" for s in r["sources"]),
        f"- Wall {r['wall_seconds'] / 60:.1f} min, {r['jobs']} processes x {r['threads']} threads, "
        f"{r['machine']['cpus']} CPUs, load {r['machine']['load_start']:.1f} at the start, "
        f"{r['machine']['load_end']:.1f} at the end.", "",
        "| target clips | arm | top-1 | curve mean (val top-1 over epochs) | vs scratch: top-1 | vs scratch: curve |",
        "|---|---|---|---|---|---|",
    ]
    for f, arms in r["table"].items():
        for arm in ARMS:
            if arm not in arms:
                continue
            a = arms[arm]
            d = arms.get(f"{arm} - scratch")
            diff = "" if d is None else (f"{fmt_pm(d['top1']['mean'], d['top1']['std'], 100)}"
                                         f"{' (clear)' if d['top1']['clear'] else ''}")
            dauc = "" if d is None else (f"{fmt_pm(d['auc']['mean'], d['auc']['std'], 100)}"
                                         f"{' (clear)' if d['auc']['clear'] else ''}")
            lines.append(f"| {float(f) * 100:g}% ({r['train_clips'][f]}) | {arm} | {fmt_pm(*a['top1'], 100)} | "
                         f"{fmt_pm(*a['auc'], 100)} | {diff} | {dauc} |")
    lines += ["", "Per seed, top-1:", ""]
    for f, arms in r["table"].items():
        for arm in ARMS:
            if arm in arms:
                lines.append(f"- {float(f) * 100:g}% {arm}: " + ", ".join(f"{x * 100:.1f}" for x in arms[arm]["top1_each"]))
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="appearance", help="task the source models learn (all its clips)")
    p.add_argument("--target", default="appearance_motion", help="task they transfer to")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 1.0], help="shares of the target's clips")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; --quick: 0)")
    p.add_argument("--freeze", type=float, default=0.2, help="probe+ft arm: share of linear-probe epochs (0: no arm)")
    p.add_argument("--epochs", type=int,
                   help="target epochs, every arm (default: the target task's, 30 but order's and fine_motion's 60)")
    p.add_argument("--source-epochs", type=int, help="source epochs (default: --epochs)")
    p.add_argument("--preset", default="demo", help="network preset (default demo)")
    p.add_argument("--genotype", help="genotype JSON (default: a random one, >= 4 convolutions per cell)")
    p.add_argument("--genotype-seed", type=int, default=0, help="seed of that random genotype")
    p.add_argument("--views", help="test views CLIPSxCROPS (default: the preset's)")
    p.add_argument("--out", type=Path, default=Path("runs/transfer"), help="output and cache directory")
    p.add_argument("--jobs", type=int, default=1, help="units of work in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per unit of work")
    p.add_argument("--quick", action="store_true", help="a tiny budget: the protocol in minutes")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; prints the results. Exit code 2 on a user error (as the pvnas CLI)."""
    return run_main(run, parse_args(argv), "experiments/transfer.py", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main())
