"""``pvnas demo``: the whole PV-NAS pipeline on generated videos, in minutes on a laptop CPU.

search -> derive -> retrain the derived genotype -> retrain a random genotype with the same
budget -> multi-view eval of both -> plots -> HTML report. The comparison is reported as measured,
whichever model wins: at this budget a random cell can beat a searched one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, NetworkConfig, SearchConfig, override
from pvnas.runtime.rundir import MetricsLog
from pvnas.errors import ConfigError
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoBudget:
    """What the demo spends; ``quick`` is for smoke tests (seconds, not minutes)."""

    search: SearchConfig
    train: NetworkConfig
    views: str


def demo_budget(quick: bool = False, seed: int = 0) -> DemoBudget:
    search, train = SEARCH_PRESETS["demo"], NETWORK_PRESETS["demo"]
    if quick:
        search = override(search, channels=4, epochs=1, batch_size=16)
        train = override(train, channels=4, epochs=1, warmup_epochs=0, val_videos=16)
        return DemoBudget(override(search, seed=seed), override(train, seed=seed), "2x3")
    return DemoBudget(override(search, seed=seed), override(train, seed=seed), "4x3")


def run_demo(out: str | Path, *, data: str = "demo", quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary (also written to ``out/summary.json``).

    On the demo presets' one torch thread (their ``threads``): the demo's networks are too small to gain from
    more (docs/performance.md, "Threads").
    """
    from pvnas.retrain.evaluate import run_eval
    from pvnas.retrain.train import run_train
    from pvnas.retrain.modelfile import load_model
    from pvnas.metrics.flops import count_flops
    from pvnas.search.loop import run_search
    from pvnas.viz.report import build_report

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose another --out or remove it")
    budget = demo_budget(quick, seed)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def stage(name: str) -> float:
        log.info("demo: %s", name)
        return time.perf_counter()

    t = stage(f"search (paper Alg. 1, {budget.search.schedule} schedule)")
    searched = run_search(budget.search, data, out / "search", preset="demo").genotype
    searched.save(out / "genotype.json")
    timings["search_s"] = time.perf_counter() - t
    last = MetricsLog(out / "search" / "metrics.jsonl").read()[-1]

    random = Genotype.random(seed, min_conv=4, meta={"note": "random-wired baseline (paper Table 3)"})
    random.save(out / "random_genotype.json")
    models: dict[str, dict[str, Any]] = {}
    for name, genotype in (("searched", searched), ("random", random)):
        t = stage(f"retrain the {name} genotype")
        run = out / name
        trained = run_train(genotype, budget.train, data, run, preset="demo")
        timings[f"train_{name}_s"] = time.perf_counter() - t
        t = stage(f"evaluate the {name} model ({budget.views} views)")
        result = run_eval(run / "model.pt", data, views=budget.views)
        (out / f"eval_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        timings[f"eval_{name}_s"] = time.perf_counter() - t
        clip = budget.train.clip
        cost = count_flops(load_model(run / "model.pt").model, (3, clip.frames, clip.crop, clip.crop))
        (run / "flops.json").write_text(json.dumps(cost) + "\n")
        models[name] = {"top1": result["top1"], "top5": result["top5"], "videos": result["videos"],
                        "skipped": result["skipped"], **cost, "train_acc": trained["acc"],
                        "learned": trained["diagnosis"]["learned"], "causes": trained["diagnosis"]["causes"],
                        "param_free_edges": genotype.parameter_free_edges()}

    stage("plots and report")
    timings["total_s"] = time.perf_counter() - t_all  # the report shows the timings: all but its own
    summary = {
        "data": data, "views": budget.views, "clip": f"{budget.train.clip.frames}x{budget.train.clip.crop}x{budget.train.clip.crop}",
        "searched": models["searched"], "random": models["random"],
        "winner": _winner(models["searched"], models["random"]),
        "search": {"entropy_drop": last["entropy_drop"], "schedule": budget.search.schedule,
                   "epochs": budget.search.epochs, "alpha_lr": budget.search.a_lr},
        "timings": timings,
        "report": str(out / "report.html"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    build_report(out)
    return summary


def _winner(searched: dict[str, Any], random: dict[str, Any]) -> str:
    """Top-1 decides, Top-5 breaks ties; equal on both is a tie."""
    a, b = (searched["top1"], searched["top5"]), (random["top1"], random["top5"])
    return "tie" if a == b else ("searched" if a > b else "random")


def summary_lines(summary: dict[str, Any], genotype: Genotype) -> list[str]:
    """The closing lines of ``pvnas demo``: where the report is, the cells, cost and both accuracies."""
    s, r = summary["searched"], summary["random"]
    lines = ["derived cells:", *("  " + line for line in genotype.describe().splitlines())]
    for name, m in (("searched", s), ("random  ", r)):
        lines.append(
            f"{name}: top-1 {100 * m['top1']:.1f}%  top-5 {100 * m['top5']:.1f}%  params {m['params'] / 1e6:.3f}M  "
            f"GMACs {m['gmacs']:.3f} per view ({summary['clip']}, {summary['views']} views, {m['videos']} videos)"
        )
    drops = summary["search"]["entropy_drop"]
    lines.append("alpha entropy drop after the search (nats; 0 = undecided): "
                 + ", ".join(f"{kind} {drop:.3f}" for kind, drop in drops.items()))
    for name, m in (("searched", s), ("random", r)):
        if not m["learned"]:
            lines.append(f"warning: the {name} network did not learn: " + "; ".join(m["causes"]))
    verdict = {
        "searched": "the searched architecture beats the random one",
        "random": "the random architecture wins at this tiny budget (README, \"What the demo shows\")",
        "tie": "searched and random tie at this tiny budget (README, \"What the demo shows\")",
    }[summary["winner"]]
    lines.append(f"result: {verdict}; search to eval took {summary['timings']['total_s'] / 60:.1f} min")
    lines.append(f"report: {summary['report']}")
    return lines
