#!/usr/bin/env python
"""Does the search win on data it was not tuned on? Searched vs random genotypes on the task suite.

Per task (``--tasks``, the generated suite of :mod:`pvnas.data.generators.task_suite`, or ``--data SPEC`` for any dataset) and
search seed: one search with the given settings, the genotype it derives (``--select``) and, for the stop-at-
epoch ablation (paper Table 3), the one derived at ``--stop-at`` of its epochs; ``--randoms`` random genotypes
with >= 4 convolutions per cell (the same ones for every seed and task: a fixed sample of the space). Every
genotype is retrained from scratch ``--retrain-seeds`` times to the end of a cosine schedule (the plateau
protocol: ``--epochs``), its validation accuracy recorded after every epoch (the learning curve's mean is its
area) and its final model tested multi-view.

The retrain noise is measured, not assumed: the spread of one genotype's accuracy over retrain seeds, pooled
over all genotypes of a task. A seed wins when the searched genotype's mean top-1 beats the mean of the
randoms, and wins clearly when it does so by more than the noise of that difference
(``noise * sqrt(1/R + 1/(R * randoms))`` for R retrain seeds).

The noise has parts, reported apart: evaluation noise (the binomial std of a top-1 measured on the validation
clips) and training noise (seeds: the rest). How consistent the searches are is measured too: the (node,
input, op) choices that two seeds' cells share, against what two random cells share by chance.
``--single-frame`` adds the check that no single frame tells a class where the task says so (a small 2D CNN on
single frames, raw and through the pipeline, at full size).

Every unit of work (one search, one retrain) is cached in ``OUT/runs`` and reused, so an interrupted study
resumes where it stopped and a study with other search settings (``--set``, ``--variant``) reuses the random
genotypes' retrains. ``--jobs`` runs units in parallel processes (one torch thread each by default: the
suite's networks gain nothing from a second thread). Writes ``OUT/results.json``, ``OUT/results.md`` and
``OUT/search_quality.png``.

    python experiments/search_quality.py --out runs/sq                           # the suite, seeds 0-2
    python experiments/search_quality.py --out runs/sq --variant noisy --set skip_noise=0.3 --tasks motion
    python experiments/search_quality.py --data folder:/data/clips --out runs/mine --seeds 0 1 2
    python experiments/search_quality.py --quick --out /tmp/q                    # the protocol on tiny data
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, NetworkConfig, SearchConfig, get_preset, override, to_dict  # noqa: E402
from pvnas.data.datasets.tasks import study_slug  # noqa: E402
from pvnas.data.generators.single_frame import FrameCheck  # noqa: E402
from pvnas.data.generators.task_suite import TASKS, retrain_epochs, search_spec  # noqa: E402
from pvnas.search.remedies import REMEDIES, SELECTIONS, remedies_of, selection  # noqa: E402
from pvnas.search.remedies import settings as remedy_settings  # noqa: E402
from pvnas.runtime.rundir import MetricsLog  # noqa: E402
from pvnas.errors import ConfigError  # noqa: E402
from pvnas.space.genotype import NODES, Genotype  # noqa: E402
from pvnas.space.ops import CELL_KINDS, ops_for  # noqa: E402
from protocol import check_seeds, derive, fmt_pm, mean_std, retrain, run_main, run_units, search  # noqa: E402

log = logging.getLogger("search_quality")
RANDOM_SEED_BASE = 1000  # random genotype i is Genotype.random(RANDOM_SEED_BASE + i, min_conv=4)


@dataclasses.dataclass(frozen=True)
class Budget:
    """Everything that sets the cost and the outcome of the study; ``results.json`` records it."""

    search: SearchConfig
    network: NetworkConfig
    views: str
    randoms: int
    retrain_seeds: tuple[int, ...]
    stop_at: float  # stop-at-epoch ablation: derive at this share of the search epochs (0: none)
    select: str  # alpha (the paper's rule) or perturbation (DARTS-PT)
    variant: str  # the name of these search settings in OUT/runs
    max_param_free: int | None = None  # --select alpha: the derivation's cap on identity/pool edges per cell (None: none)

    @property
    def derivation(self) -> str:
        """The name under which a search's genotype of this selection is cached in its ``result.json``."""
        return self.select if self.max_param_free is None else f"{self.select}_pf{self.max_param_free}"


def parse_sets(items: Sequence[str], base: SearchConfig) -> SearchConfig:
    """``--set key=value``: search config fields (their names in :class:`~pvnas.config.SearchConfig`) or remedies
    (their names in :data:`~pvnas.search.remedies.REMEDIES`), applied to ``base``."""
    fields = {f.name for f in dataclasses.fields(SearchConfig)} - {"clip", "seed", "remedies"}
    changes: dict[str, Any] = {}
    chosen = dict(base.remedies)
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields | set(REMEDIES):
            raise ConfigError(f"--set {item}: {key!r} is not a search setting; one of "
                              f"{', '.join(sorted(fields | set(REMEDIES)))}")
        current = REMEDIES[key].type() if key in REMEDIES else getattr(base, key)
        try:
            parsed = (value.lower() in ("1", "true", "yes")) if isinstance(current, bool) else (
                None if value == "none" else type(current if current is not None else 0.0)(value))
        except ValueError:
            raise ConfigError(f"--set {item}: {value!r} is not a value of {key}") from None
        if key in REMEDIES:
            chosen[key] = parsed
        else:
            changes[key] = parsed
    return dataclasses.replace(base, **changes, remedies=chosen)


def resolve_budget(args: argparse.Namespace, data: str | None = None) -> Budget:
    """The study's settings from its arguments; retrains last ``--epochs``, else the suite's length for ``data``
    (:func:`~pvnas.data.generators.task_suite.retrain_epochs`: 30, ``order`` and ``fine_motion`` 60)."""
    search_cfg = override(get_preset(SEARCH_PRESETS, args.search_preset), epochs=args.search_epochs)
    network = get_preset(NETWORK_PRESETS, args.train_preset)
    if args.quick:
        search_cfg = override(search_cfg, channels=4, epochs=args.search_epochs or 2, workers=0)
        network = override(network, channels=4, workers=0)
    epochs = args.epochs or (2 if args.quick else retrain_epochs(data or ""))
    network = override(network, epochs=epochs, warmup_epochs=min(network.warmup_epochs or 0, epochs - 1),
                       val_videos=10**6, workers=args.workers if args.workers is not None else network.workers)
    search_cfg = dataclasses.replace(parse_sets(args.set, search_cfg), workers=network.workers)
    remedies_of(search_cfg)  # a bad remedy value: one line, before anything runs
    if args.randoms < 1 or not args.retrain_seeds or not 0 <= args.stop_at < 1:
        raise ConfigError("--randoms must be >= 1, --retrain-seeds non-empty, --stop-at in [0, 1)")
    if args.max_param_free is not None and (args.select != "alpha" or not 0 <= args.max_param_free <= 8):
        raise ConfigError(f"--max-param-free must be in 0..8 and goes with --select alpha, got {args.max_param_free} "
                          f"with --select {args.select}")
    cap = None if args.select != "alpha" else (
        args.max_param_free if args.max_param_free is not None else search_cfg.remedies.get("max_param_free"))
    views = args.views or f"{network.clip.test_clips}x{network.clip.test_crops}"
    return Budget(search_cfg, network, views, args.randoms, tuple(args.retrain_seeds), args.stop_at, args.select,
                  args.variant, cap)


def key_of(obj: Any) -> str:
    """A short stable hash of a JSON-able object: genotypes and settings name their cache folders."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def settings_of(cfg: Any) -> dict[str, Any]:
    """A config's fields that decide results (torch threads do not: every unit pins its own)."""
    return {k: v for k, v in to_dict(cfg).items() if k != "threads"}


def search_settings(cfg: SearchConfig) -> dict[str, Any]:
    """What decides a search's run: its settings and the remedies that change training (those that change only the
    derivation do not: searches with and without them share their folder)."""
    trains = {k: v for k, v in remedy_settings(cfg).items() if REMEDIES[k].trains and v != REMEDIES[k].off}
    return {**{k: v for k, v in settings_of(cfg).items() if k != "remedies"}, "remedies": trains}


# ---------------------------------------------------------------- units of work (run in worker processes)


def search_unit(data: str, seed: int, budget: Budget, run: Path) -> dict[str, Any]:
    """One search (cached in ``run/result.json``, whatever the selection: both derive from the same run): the
    genotype of ``budget.select`` and the stop-at genotype, statistics, wall seconds."""
    done = run / "result.json"
    result = json.loads(done.read_text()) if done.exists() else None
    if result is None:
        if run.exists():  # an interrupted search: start it again (resuming would time it wrongly)
            import shutil

            shutil.rmtree(run)
        seconds = search(override(budget.search, seed=seed), data, run, "study")
        final = MetricsLog(run / "metrics.jsonl").read()[-1]
        result = {"seconds": seconds, "alpha": derive(run, overrides={"max_param_free": None}).to_dict(),  # the paper's rule
                  "entropy_drop": final["entropy_drop"], "supernet_acc": final["acc"], "decays": final.get("decays")}
    if budget.derivation not in result:  # perturbation: scored on the trained supernet, once
        result[budget.derivation] = (selection(budget.select)(run) if budget.select != "alpha"
                                     else derive(run, overrides={"max_param_free": budget.max_param_free})).to_dict()
    stop_epoch = max(1, round(budget.stop_at * budget.search.epochs)) if budget.stop_at else None
    stop_key = f"stop_{stop_epoch}" + ("" if budget.max_param_free is None else f"_pf{budget.max_param_free}")
    if stop_epoch and stop_key not in result:
        result[stop_key] = derive(run, stop_epoch, {"max_param_free": budget.max_param_free}).to_dict()
    done.write_text(json.dumps(result, indent=2))
    genotype = result[budget.derivation]
    return {**result, "genotype": genotype, "param_free": Genotype.from_dict(genotype).parameter_free_edges(),
            "stop_at": stop_epoch and {"epoch": stop_epoch, "genotype": result[stop_key]}}


def retrain_unit(data: str, genotype: dict[str, Any], seed: int, budget: Budget, run: Path) -> dict[str, Any]:
    """One retrain and its multi-view test (cached in ``run/result.json``), with its validation curve."""
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if run.exists():
        import shutil

        shutil.rmtree(run)
    result = retrain(Genotype.from_dict(genotype), override(budget.network, seed=seed), data, run, budget.views, "study")
    curve = [r["val_top1"] for r in MetricsLog(run / "metrics.jsonl").read()]
    result.update(curve=curve, auc=statistics.fmean(curve), seed=seed)
    done.write_text(json.dumps(result, indent=2))
    return result


# ---------------------------------------------------------------- the study
def retrain_stats(results: list[dict[str, Any]]) -> dict[str, Any]:
    top1, auc = [r["top1"] for r in results], [r["auc"] for r in results]
    return {"top1": statistics.fmean(top1), "auc": statistics.fmean(auc), "top1_each": top1, "auc_each": auc,
            "learned": all(r["learned"] for r in results)}


def pooled_noise(groups: list[list[float]]) -> float | None:
    """The std of one retrain's accuracy over retrain seeds, pooled over genotypes (None with one seed)."""
    pairs = [(g, statistics.fmean(g)) for g in groups if len(g) > 1]
    if not pairs:
        return None
    ss = sum(sum((x - m) ** 2 for x in g) for g, m in pairs)
    return math.sqrt(ss / sum(len(g) - 1 for g, _ in pairs))


def noise_parts(results: list[dict[str, Any]], total: float | None) -> dict[str, Any]:
    """The retrain noise split into its parts: evaluation (the binomial std of a top-1 measured on ``videos``
    clips, at each retrain's own accuracy, pooled) and training (seeds: what is left, in quadrature)."""
    videos = [r.get("videos") for r in results]
    if not results or not all(videos):
        return {"val_videos": None, "eval_noise": None, "train_noise": None}
    eval_var = statistics.fmean(r["top1"] * (1 - r["top1"]) / r["videos"] for r in results)
    train = None if total is None else math.sqrt(max(0.0, total**2 - eval_var))
    return {"val_videos": min(videos), "eval_noise": math.sqrt(eval_var), "train_noise": train}


def shared_choices(a: dict[str, Any], b: dict[str, Any], kind: str) -> int:
    """How many (node, input, op) choices two genotypes' cells of one kind share (of 8)."""
    def choices(g: dict[str, Any]) -> set[tuple[int, int, str]]:
        edges = Genotype.from_dict(g).cells[kind].edges
        return {(2 + i // 2, j, op) for i, (op, j) in enumerate(edges)}

    return len(choices(a) & choices(b))


def chance_shared(kind: str) -> float:
    """What two uniformly random cells share on average: node k picks 2 of its k inputs and an op for each, so
    input j of node k is shared with probability (2/k)^2 and its op with 1/ops: sum over k of 4 / (k * ops)."""
    ops = len(ops_for(kind)) - 1  # never zero
    return sum(4 / (k * ops) for k in range(2, 2 + NODES))


def consistency(genotypes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell kind, the choices that the searched genotypes of different seeds share, pair by pair, against
    what random cells share by chance: are the alphas a signal or seed noise?"""
    pairs = [(a, b) for i, a in enumerate(genotypes) for b in genotypes[i + 1:]]
    out: dict[str, Any] = {}
    for kind in CELL_KINDS:
        shared = [shared_choices(a, b, kind) for a, b in pairs]
        out[kind] = {"pairs": shared, "mean": statistics.fmean(shared) if shared else None,
                     "chance": chance_shared(kind)}
    return out


def study_task(task_data: str, budget: Budget, seeds: Sequence[int], out: Path, jobs: int, threads: int,
               search_only: bool = False) -> dict[str, Any]:
    """Searches and retrains of one task; returns its per-seed rows and summary (``search_only``: the searches, their
    genotypes and how consistent they are, no retrain)."""
    slug, search_data = study_slug(task_data), search_spec(task_data)
    settings = key_of(search_settings(budget.search))
    search_dirs = {s: out / "runs" / study_slug(search_data) / f"search_{settings}" / f"seed_{s}" for s in seeds}
    randoms = [Genotype.random(RANDOM_SEED_BASE + i, min_conv=4).to_dict() for i in range(budget.randoms)]
    train_key = key_of({"network": settings_of(budget.network), "views": budget.views})

    def retrain_dir(genotype: dict[str, Any], seed: int) -> Path:
        return out / "runs" / slug / f"train_{train_key}" / f"{key_of(genotype['cells'])}_r{seed}"

    searches = run_units(jobs, threads, [(search_unit, search_data, s, budget, search_dirs[s]) for s in seeds] +
                         ([] if search_only else [(retrain_unit, task_data, g, r, budget, retrain_dir(g, r))
                                                  for g in randoms for r in budget.retrain_seeds]))[: len(seeds)]
    if search_only:
        return {"data": task_data, "task": task_data.partition(":")[2] if task_data.startswith("task:") else None,
                "search_data": search_data, "consistency": consistency([res["genotype"] for res in searches]),
                "seeds": len(seeds),
                "rows": [{"seed": seed, "genotype": res["genotype"], "param_free": res["param_free"],
                          "entropy_drop": res["entropy_drop"], "search_seconds": res["seconds"],
                          "supernet_acc": res["supernet_acc"]} for seed, res in zip(seeds, searches)]}
    genotypes = [(s, "searched", res["genotype"]) for s, res in zip(seeds, searches)]
    genotypes += [(s, "stop_at", res["stop_at"]["genotype"]) for s, res in zip(seeds, searches) if res["stop_at"]]
    units = [(retrain_unit, task_data, g, r, budget, retrain_dir(g, r)) for _, _, g in genotypes for r in budget.retrain_seeds]
    units += [(retrain_unit, task_data, g, r, budget, retrain_dir(g, r)) for g in randoms for r in budget.retrain_seeds]
    trained = run_units(jobs, threads, units)
    per_genotype: dict[str, list[dict[str, Any]]] = {}
    for (fn, _, g, r, *_), res in zip(units, trained):
        per_genotype.setdefault(key_of(g["cells"]), []).append(res)
    noise = pooled_noise([[r["top1"] for r in rs] for rs in per_genotype.values()])
    random_stats = [retrain_stats(per_genotype[key_of(g["cells"])]) for g in randoms]
    random_mean = statistics.fmean(r["top1"] for r in random_stats)
    r = len(budget.retrain_seeds)
    margin_noise = None if noise is None else noise * math.sqrt(1 / r + 1 / (r * budget.randoms))
    rows = []
    for seed, res in zip(seeds, searches):
        searched = retrain_stats(per_genotype[key_of(res["genotype"]["cells"])])
        stop = res["stop_at"] and retrain_stats(per_genotype[key_of(res["stop_at"]["genotype"]["cells"])])
        margin = searched["top1"] - random_mean
        rows.append({"seed": seed, "searched": searched, "genotype": res["genotype"], "margin": margin,
                     "win": margin > 0, "clear_win": margin_noise is not None and margin > margin_noise,
                     "stop_at": stop and {"epoch": res["stop_at"]["epoch"], **stop}, "param_free": res["param_free"],
                     "entropy_drop": res["entropy_drop"], "search_seconds": res["seconds"],
                     "supernet_acc": res["supernet_acc"]})
    return {"data": task_data, "task": task_data.partition(":")[2] if task_data.startswith("task:") else None,
            "rows": rows, "randoms": random_stats, "random_mean_top1": random_mean, "retrain_noise": noise,
            **noise_parts(trained, noise), "consistency": consistency([res["genotype"] for res in searches]),
            "margin_noise": margin_noise, "wins": sum(x["win"] for x in rows), "clear_wins": sum(x["clear_win"] for x in rows),
            "seeds": len(rows), "retrain_epochs": budget.network.epochs, "search_data": search_data}


# ---------------------------------------------------------------- does one frame tell the class? (full size)
SINGLE_FRAME_RAW = (300, 100)  # raw frames: training and test clips per class, drawn apart from the task's splits
SINGLE_FRAME_DRAWS = 4  # through the pipeline: train on the train splits of task seeds 1..4, test on seed 0's val


def single_frame_unit(name: str, clip: Any, out: Path) -> dict[str, Any]:
    """The single-frame classifier (:mod:`pvnas.data.generators.single_frame`) on one task, at full size: on raw
    rendered frames and through the pipeline (mp4 in the cache, decoded, the retrain preset's clip settings: its
    frames, scale and crop, training augmentation on the training side). Cached in ``out``."""
    import numpy as np

    from pvnas.data import build_dataset
    from pvnas.data.generators.single_frame import Frames, single_frame_check
    from pvnas.data.generators.task_suite import render_clip

    if out.exists():
        return json.loads(out.read_text())
    task = TASKS[name]
    k, rng = len(task.classes), np.random.default_rng(0)
    blind = task.frame_blind or tuple(range(k))  # a task whose frames tell the class: a positive control
    blind_k = len(set(blind))
    train_n, test_n = SINGLE_FRAME_RAW
    fit = [(render_clip(task, i % k, 10**7 + i), blind[i % k]) for i in range(train_n * k)]
    held = [(render_clip(task, i % k, 2 * 10**7 + i), blind[i % k]) for i in range(test_n * k)]
    t0 = time.perf_counter()
    raw = single_frame_check(Frames.of_clips(*zip(*fit), rng, per_clip=4), Frames.of_clips(*zip(*held), rng, 1),
                             blind_k)
    raw_seconds = time.perf_counter() - t0

    def pipeline_frames(spec: str, split: str, views: str, per_clip: int) -> Frames:
        data = build_dataset(spec, split, clip, seed=0, views=views)
        pixels, times, labels = [], [], []
        for i in range(len(data)):
            x, label, _ = data[(i, i)] if views == "train" else data[i]  # (3, T, H, W)
            frames = x.shape[1]
            for j in rng.choice(frames, per_clip, replace=False):
                pixels.append(x[:, j])
                times.append(j / max(frames - 1, 1))
                labels.append(blind[task.classes.index(data.classes[label])])  # (a folder's classes are sorted)
        return Frames(torch.stack(pixels), torch.tensor(times, dtype=torch.float32), torch.tensor(labels))

    t0 = time.perf_counter()
    train = [pipeline_frames(f"task:{name}?seed={s}", "train", "train", 2) for s in range(1, SINGLE_FRAME_DRAWS + 1)]
    train_frames = Frames(*(torch.cat([getattr(f, a) for f in train]) for a in ("pixels", "times", "labels")))
    piped = single_frame_check(train_frames, pipeline_frames(f"task:{name}", "val", "single", 1), blind_k)
    result = {"task": name, "raw": {**raw.to_dict(), "train_clips": train_n * k, "seconds": raw_seconds},
              "pipeline": {**piped.to_dict(), "train_clips": len(train_frames.labels) // 2,
                           "seconds": time.perf_counter() - t0},
              "clip": to_dict(clip)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def single_frame_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Does one frame tell the class?", "",
             "A small 2D CNN that sees one frame, its time in the clip and the pixel coordinates, trained on single "
             "frames and tested on one frame per held-out clip (`pvnas.data.generators.single_frame`). Raw: rendered "
             "frames; pipeline: the mp4 files decoded with the retrain preset's clip settings. At chance: within 2 "
             "binomial standard errors.", "",
             "| task | a frame tells (README) | chance | raw top-1 (z) | raw clips train/test | pipeline top-1 (z) | "
             "pipeline clips train/test | at chance |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        raw, pipe = r["raw"], r["pipeline"]
        ok = FrameCheck(raw["accuracy"], raw["chance"], raw["n_test"], 0).at_chance() and \
            FrameCheck(pipe["accuracy"], pipe["chance"], pipe["n_test"], 0).at_chance()
        told = TASKS[r["task"]].single_frame + (" (checked: the direction)" if TASKS[r["task"]].hidden else "")
        lines.append(f"| {r['task']} | {told} | {100 * raw['chance']:.1f} | "
                     f"{100 * raw['accuracy']:.1f} ({raw['z']:+.1f}) | {raw['train_clips']}/{raw['n_test']} | "
                     f"{100 * pipe['accuracy']:.1f} ({pipe['z']:+.1f}) | {pipe['train_clips']}/{pipe['n_test']} | "
                     f"{'yes' if ok else 'no'} |")
    return lines + [""]


def consistency_lines(tasks: list[dict[str, Any]]) -> list[str]:
    lines = ["## Search consistency across seeds", "",
             "| task | " + " | ".join(CELL_KINDS) + " |", "|---|" + "---|" * len(CELL_KINDS)]
    for t in tasks:
        c = t.get("consistency") or {}
        cells = [("-" if not c.get(k) or c[k]["mean"] is None else
                  f"{c[k]['mean']:.2f} ({' '.join(map(str, c[k]['pairs']))}; chance {c[k]['chance']:.2f})")
                 for k in CELL_KINDS]
        lines.append(f"| {t['data']} | " + " | ".join(cells) + " |")
    return lines + ["", "(node, input, op) choices of 8 that two seeds' searched cells share: mean over pairs of seeds "
                    "(each pair); chance: what two uniformly random cells share on average."]


def search_only_markdown(result: dict[str, Any]) -> str:
    s = result["budget"]["search"]
    lines = ["# Search consistency: searches only", "", f"Command: `{result['command']}`  ",
             f"Wall time {result['wall_seconds'] / 60:.1f} min on {result['machine']['cpus']} CPU cores ({result['jobs']} "
             f"jobs x {result['threads']} torch thread(s)), load average at start {result['machine']['load_start']}.", "",
             f"- Search (preset `{result['budget']['search_preset']}`): C={s['channels']}, {s['epochs']} epochs, batch "
             f"{s['batch_size']}; remedies {s['remedies']}. {search_data_text(result['tasks'])}".rstrip(), ""]
    lines += consistency_lines(result["tasks"])
    lines += ["", "| task | seed | param-free S-NC/S-RC/T-NC/T-RC | supernet train acc | search (min) |", "|---|---|---|---|---|"]
    for t in result["tasks"]:
        for x in t["rows"]:
            lines.append(f"| {t['data']} | {x['seed']} | {'/'.join(str(x['param_free'][k]) for k in CELL_KINDS)} | "
                         f"{x['supernet_acc']:.2f} | {x['search_seconds'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def epochs_text(epochs: int, tasks: list[dict[str, Any]]) -> str:
    """The retrain length for the report: the study's, and each task that had its own."""
    own = [f"{t['data']} {t['retrain_epochs']}" for t in tasks if t.get("retrain_epochs", epochs) != epochs]
    return f"{epochs} epochs" + (f" ({', '.join(own)}: the task's own length)" if own else "")


def search_data_text(tasks: list[dict[str, Any]]) -> str:
    """The report's line on tasks whose searches see part of the retrain's training split (empty if none)."""
    part = [f"{t['data']} on `{t['search_data']}`" for t in tasks if t.get("search_data", t["data"]) != t["data"]]
    return f"Searches of {', '.join(part)}: part of the retrain's training split." if part else ""


def markdown(result: dict[str, Any]) -> str:
    if result.get("search_only"):
        return search_only_markdown(result)
    b = result["budget"]
    s, n = b["search"], b["network"]
    cap = "" if b.get("max_param_free") is None else f", at most {b['max_param_free']} parameter-free edges per cell"
    epochs = epochs_text(n["epochs"], result["tasks"])
    lines = [
        "# Search quality on the task suite: searched vs random genotypes at the same retrain budget", "",
        f"Command: `{result['command']}`  ",
        f"Wall time {result['wall_seconds'] / 60:.1f} min on {result['machine']['cpus']} CPU cores ({result['jobs']} "
        f"jobs x {result['threads']} torch thread(s)), load average at start {result['machine']['load_start']}.", "",
        f"- Search `{b['variant']}` (preset `{b['search_preset']}`): C={s['channels']}, {s['epochs']} epochs, batch "
        f"{s['batch_size']}, alpha lr budget {s['a_lr_budget']}, warm-up {s['a_warmup']}, "
        f"remedies {', '.join(f'{k} {v}' for k, v in s['remedies'].items() if k != 'max_param_free') or 'none'}, "
        f"schedule {s['schedule']}; selection {b['select']}{cap}. {search_data_text(result['tasks'])}".rstrip(),
        f"- Retrain (preset `{b['train_preset']}`): C={n['channels']}, {epochs} ({n['warmup_epochs']} warm-up, "
        f"cosine to 0), batch {n['batch_size']}, lr {n['lr']}; seeds {b['retrain_seeds']}; test {b['views']} views; "
        f"{b['randoms']} random genotypes (>= 4 convs per cell), the same for every task and seed.", "",
        "## Summary", "",
        "| task | role | wins | clear wins | searched top-1 | random top-1 | margin | retrain noise (margin noise) "
        "| max param-free S-NC/S-RC/T-NC/T-RC | needs | search (min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in result["tasks"]:
        searched = [x["searched"]["top1"] for x in t["rows"]]
        margins = [x["margin"] for x in t["rows"]]
        pf = {k: max(x["param_free"][k] for x in t["rows"]) for k in CELL_KINDS}
        noise = "-" if t["retrain_noise"] is None else f"{100 * t['retrain_noise']:.1f} ({100 * t['margin_noise']:.1f})"
        needs = ", ".join(TASKS[t["task"]].needs) if t["task"] in TASKS else "-"
        lines.append(
            f"| {t['data']} | {t['role']} | {t['wins']}/{t['seeds']} | {t['clear_wins']}/{t['seeds']} | "
            f"{fmt_pm(*mean_std(searched), 100)} | {100 * t['random_mean_top1']:.1f} | {fmt_pm(*mean_std(margins), 100)} | "
            f"{noise} | {'/'.join(str(pf[k]) for k in CELL_KINDS)} | {needs} | "
            f"{fmt_pm(*mean_std([x['search_seconds'] / 60 for x in t['rows']]), 1, 1)} |")
    lines += ["", "## Noise", "",
              "| task | val clips | evaluation noise (binomial) | retrain noise | training noise (seeds) | margin noise |",
              "|---|---|---|---|---|---|"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for t in result["tasks"]:
        lines.append(f"| {t['data']} | {t.get('val_videos') or '-'} | {pct(t.get('eval_noise'))} | "
                     f"{pct(t['retrain_noise'])} | {pct(t.get('train_noise'))} | {pct(t['margin_noise'])} |")
    lines += ["", "Points of top-1. Retrain noise: the std of one genotype over retrain seeds, pooled; evaluation noise: "
              "the binomial std of a top-1 on the validation clips at the retrains' accuracies; training noise: the "
              "rest (sqrt(retrain^2 - evaluation^2)). Margin noise: retrain noise x sqrt(1/R + 1/(R x randoms)).", "",
              ""] + consistency_lines(result["tasks"])
    lines += ["", "Top-1 in %, multi-view, mean over retrain seeds. A win: the searched genotype beats the mean of the "
              "randoms; a clear win: by more than the margin noise. Param-free: identity or pooling edges of 8 per cell.",
              "", "## Per seed", "",
              "| task | seed | searched top-1 (each) | curve mean | stop-at top-1 | margin | param-free | entropy drop |",
              "|---|---|---|---|---|---|---|---|"]
    for t in result["tasks"]:
        for x in t["rows"]:
            each = " ".join(f"{100 * v:.1f}" for v in x["searched"]["top1_each"])
            stop = "-" if not x["stop_at"] else f"{100 * x['stop_at']['top1']:.1f} (epoch {x['stop_at']['epoch']})"
            lines.append(f"| {t['data']} | {x['seed']} | {100 * x['searched']['top1']:.1f} ({each}) | "
                         f"{100 * x['searched']['auc']:.1f} | {stop} | {100 * x['margin']:+.1f} | "
                         f"{'/'.join(str(x['param_free'][k]) for k in CELL_KINDS)} | "
                         f"{'/'.join(format(x['entropy_drop'][k], '.2f') for k in CELL_KINDS)} |")
    lines += ["", "## Random genotypes", "", "| task | " + " | ".join(f"random {i}" for i in range(result["budget"]["randoms"])) + " |",
              "|---|" + "---|" * result["budget"]["randoms"]]
    for t in result["tasks"]:
        lines.append(f"| {t['data']} | " + " | ".join(f"{100 * r['top1']:.1f}" for r in t["randoms"]) + " |")
    if result.get("single_frame"):
        lines += [""] + single_frame_markdown(result["single_frame"])
    lines += ["", "## Derived cells", ""]
    for t in result["tasks"]:
        for x in t["rows"]:
            lines += [f"{t['data']}, seed {x['seed']}:", "```", Genotype.from_dict(x["genotype"]).describe(), "```"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.6), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        xs = range(len(t["rows"]))
        ax.bar(list(xs), [100 * x["searched"]["top1"] for x in t["rows"]], 0.6, color="#1f77b4", label="searched")
        ax.axhline(100 * t["random_mean_top1"], color="k", lw=1, label="random mean")
        for r in t["randoms"]:
            ax.axhline(100 * r["top1"], color="#999999", lw=0.5, ls=":")
        ax.set_xticks(list(xs), [f"s{x['seed']}" for x in t["rows"]], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"{t['data']} ({t['role']})\n{t['wins']}/{t['seeds']} wins", fontsize=9)
    axes[0][0].set_ylabel("top-1 (%)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", help=f"tasks of the suite (default: all: {', '.join(TASKS)})")
    p.add_argument("--tuning", nargs="*", default=["motion", "appearance"],
                   help="tasks the settings were chosen on (reported as 'tuning', the others as 'held out')")
    p.add_argument("--data", help="a dataset spec instead of the suite")
    p.add_argument("--seeds", type=int, nargs="+", help="search seeds (default: 0 1 2; --quick: 0)")
    p.add_argument("--randoms", type=int, default=5, help="random genotypes (default 5)")
    p.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1], help="retrains per genotype (default 0 1)")
    p.add_argument("--epochs", type=int, help="retrain epochs (default: the task's, 30 but order's and fine_motion's 60)")
    p.add_argument("--stop-at", type=float, default=0.5, help="stop-at-epoch ablation: share of the search epochs (0: off)")
    p.add_argument("--select", choices=["alpha", *SELECTIONS], default="alpha", help="how genotypes are derived")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="search settings, e.g. skip_noise=0.3")
    p.add_argument("--max-param-free", type=int, default=None,
                   help="--select alpha: derive with at most this many identity/pool edges per cell (default: the "
                   "search preset's; 8: no cap)")
    p.add_argument("--variant", default="default", help="a name for these search settings (in OUT/runs)")
    p.add_argument("--search-preset", default="demo")
    p.add_argument("--train-preset", default="demo")
    p.add_argument("--search-epochs", type=int, help="search epochs (preset default)")
    p.add_argument("--views", help="test views CLIPSxCROPS (default: the retrain preset's)")
    p.add_argument("--out", type=Path, default=Path("runs/search_quality"), help="output and cache directory")
    p.add_argument("--jobs", type=int, default=1, help="units of work in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per unit of work")
    p.add_argument("--workers", type=int, help="loader workers per unit (preset default)")
    p.add_argument("--search-only", action="store_true",
                   help="only the searches: their genotypes and how consistent they are across seeds (no retrain)")
    p.add_argument("--single-frame", action="store_true",
                   help="also train a single-frame classifier per task at full size (raw and through the pipeline): "
                   "does one frame tell the class?")
    p.add_argument("--quick", action="store_true", help="tiny data and budget: the whole protocol in minutes")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    t_start = time.perf_counter()
    budget = resolve_budget(args)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    check_seeds(seeds)
    if args.data:
        specs = [args.data]
    else:
        names = args.tasks or list(TASKS)
        unknown = [n for n in names if n not in TASKS]
        if unknown:
            raise ConfigError(f"--tasks: unknown task {unknown[0]!r}; expected some of {', '.join(TASKS)}")
        specs = [f"task:{n}" for n in names]
    if args.quick:
        specs = ["synthetic:16"] if not args.data else specs
    args.out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    tasks = []
    for spec in specs:
        log.info("task %s", spec)
        t = study_task(spec, resolve_budget(args, spec), seeds, args.out, args.jobs, args.threads, args.search_only)
        t["role"] = "tuning" if t["task"] in args.tuning else ("held out" if t["task"] else "data")
        tasks.append(t)
    result: dict[str, Any] = {
        "command": command, "seeds": seeds, "jobs": args.jobs, "threads": args.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_start": load_start},
        "budget": {"search": {**to_dict(budget.search), "remedies": remedy_settings(budget.search)}, "network": to_dict(budget.network), "views": budget.views,
                   "randoms": budget.randoms, "retrain_seeds": list(budget.retrain_seeds), "stop_at": budget.stop_at,
                   "select": budget.select, "max_param_free": budget.max_param_free, "variant": budget.variant,
                   "search_preset": args.search_preset,
                   "train_preset": args.train_preset},
        "tasks": tasks, "search_only": args.search_only,
    }
    if args.single_frame:
        names = [t["task"] for t in tasks if t["task"] in TASKS]
        result["single_frame"] = run_units(args.jobs, args.threads, [
            (single_frame_unit, n, budget.network.clip, args.out / "single_frame" / f"{n}.json") for n in names])
    result["wall_seconds"] = time.perf_counter() - t_start
    name = "results" if budget.variant == "default" else f"results_{budget.variant}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    if not args.search_only:
        plot(result, args.out / ("search_quality.png" if budget.variant == "default" else f"search_quality_{budget.variant}.png"))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; prints the results. Exit code 2 on a user error (as the pvnas CLI)."""
    args = parse_args(argv)
    return run_main(run, args, "experiments/search_quality.py", argv,
                    results=("results" if args.variant == "default" else f"results_{args.variant}") + ".md")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main())
