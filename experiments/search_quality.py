#!/usr/bin/env python
"""Does the search decide? The searched genotype against random ones at the same retrain budget, per seed.

For each seed and weight schedule: one search with the preset's settings (only the schedule changed), its
final genotype retrained from scratch and tested multi-view; and, once per seed, R random genotypes with at
least 4 convolutions per cell (the paper's Table 3 baseline) retrained and tested with the same budget and
seed. A seed is a win when the searched genotype's top-1 beats the mean top-1 of that seed's randoms. The
report also gives, per seed, the parameter-free edges of each derived cell (collapse, paper Fig. 4), the
alpha entropy drop per cell kind (how far the alphas moved from undecided) and the wall times.

Writes ``OUT/results.md``, ``OUT/results.json`` (every number, the budget, the command) and
``OUT/search_quality.png``; ``OUT/seed_N/search_<schedule>`` and ``OUT/seed_N/train/<name>`` are ordinary
pvnas run directories.

    python experiments/search_quality.py                         # demo, seeds 0-4, 5 randoms, preset schedule
    python experiments/search_quality.py --schedules converge step constant cosine --seeds 0 1 2
    python experiments/search_quality.py --data folder:/data/clips --seeds 0 1 2
    python experiments/search_quality.py --quick --out /tmp/q    # the whole protocol on tiny data, ~1 min
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pvnas.config import (  # noqa: E402
    NETWORK_PRESETS,
    SEARCH_PRESETS,
    NetworkConfig,
    SearchConfig,
    get_preset,
    override,
    to_dict,
)
from pvnas.engine.rundir import MetricsLog  # noqa: E402
from pvnas.errors import ConfigError  # noqa: E402
from pvnas.schedules import SEARCH_SCHEDULES  # noqa: E402
from pvnas.space.genotype import Genotype  # noqa: E402
from pvnas.space.ops import CELL_KINDS  # noqa: E402
from protocol import check_seeds, derive, fmt_pm, fresh_dir, mean_std, retrain, run_main, search  # noqa: E402

log = logging.getLogger("search_quality")


@dataclass(frozen=True)
class Budget:
    """Everything that sets the cost of the study; ``results.json`` records it."""

    search: SearchConfig
    network: NetworkConfig
    views: str
    randoms: int
    search_preset: str
    train_preset: str


def resolve_budget(args: argparse.Namespace) -> Budget:
    """The presets (``tiny`` with --quick, else ``demo``) with the command-line overrides applied and checked."""
    search_preset = args.search_preset or ("tiny" if args.quick else "demo")
    train_preset = args.train_preset or ("tiny" if args.quick else "demo")
    search_cfg = override(get_preset(SEARCH_PRESETS, search_preset), epochs=args.search_epochs,
                          channels=args.search_channels)
    network = get_preset(NETWORK_PRESETS, train_preset)
    if args.quick:
        search_cfg = override(search_cfg, channels=4, epochs=args.search_epochs or 2, workers=0)
        network = override(network, channels=4, epochs=1, warmup_epochs=0, val_videos=0, workers=0)
    if args.epochs is not None:  # keep the warm-up inside the (possibly shorter) schedule
        network = override(network, epochs=args.epochs, warmup_epochs=min(network.warmup_epochs or 0, args.epochs - 1))
    network = override(network, val_videos=0)  # the multi-view test at the end is the measurement
    randoms = 1 if args.quick and args.randoms is None else (args.randoms if args.randoms is not None else 5)
    if randoms < 1:
        raise ConfigError(f"--randoms must be >= 1, got {randoms}")
    views = args.views or f"{network.clip.test_clips}x{network.clip.test_crops}"
    return Budget(search_cfg, network, views, randoms, search_preset, train_preset)


def final_record(run: Path) -> dict[str, Any]:
    """The search's last metrics record: entropy drop and parameter-free share per cell kind, lr, decays."""
    return MetricsLog(run / "metrics.jsonl").read()[-1]


def summarise(per_seed: list[dict[str, Any]], schedules: Sequence[str]) -> list[dict[str, Any]]:
    """One row per schedule: wins, top-1 of searched and random (mean ± std over seeds), collapse, entropy drop."""
    rows = []
    for schedule in schedules:
        mine = [s for s in per_seed if s["schedule"] == schedule]
        searched, random = [s["searched"]["top1"] for s in mine], [s["random_mean_top1"] for s in mine]
        drops = {k: [s["entropy_drop"][k] for s in mine] for k in CELL_KINDS}
        rows.append({
            "schedule": schedule, "seeds": len(mine), "wins": sum(s["win"] for s in mine),
            "searched_top1": mean_std(searched), "random_top1": mean_std(random),
            "max_param_free": {k: max(s["param_free"][k] for s in mine) for k in CELL_KINDS},
            "entropy_drop": {k: mean_std(v) for k, v in drops.items()},
            "min_entropy_drop": {k: min(v) for k, v in drops.items()},
            "search_minutes": mean_std([s["search_seconds"] / 60 for s in mine]),
            "not_learned": sum(not s["searched"]["learned"] for s in mine),
        })
    return rows


def per_kind(values: dict[str, Any], spec: str = "") -> str:
    """``"4/6/0/6"``: one value per cell kind, in S-NC/S-RC/T-NC/T-RC order."""
    return "/".join(format(values[k], spec) for k in CELL_KINDS)


def markdown(result: dict[str, Any]) -> str:
    """``results.md``: the summary per schedule, then per seed, then the derived cells."""
    b = result["budget"]
    s, n = b["search"], b["network"]
    clip = s["clip"]
    alpha_lr = (f"alpha lr {s['a_lr_budget']} / alpha updates (Adam)" if s.get("a_lr_budget")
                else f"alpha lr {s['a_lr']} (Adam)")
    lines = [
        "# Search quality: searched vs random genotypes at the same retrain budget",
        "",
        f"Command: `{result['command']}`  ",
        f"Data `{result['data']}`; seeds {', '.join(map(str, result['seeds']))}; wall time "
        f"{result['wall_seconds'] / 60:.1f} min on {result['machine']['cpus']} CPU cores, {result['threads']} torch "
        f"thread(s), load average at start {result['machine']['load_start']}.",
        "",
        f"- Search (preset `{b['search_preset']}`): C={s['channels']}, {s['epochs']} epochs, batch {s['batch_size']}, "
        f"{clip['frames']}x{clip['crop']}x{clip['crop']} clips, {alpha_lr}, weights-only warm-up "
        f"{100 * s['a_warmup']:.0f}% of the steps, operation dropout {s['op_dropout']}, weight lr {s['w_lr']}.",
        f"- Retrain (preset `{b['train_preset']}`): C={n['channels']}, {n['epochs']} epochs ({n['warmup_epochs']} "
        f"warm-up), batch {n['batch_size']}, lr {n['lr']}, dropout {n['dropout']}, drop-path {n['drop_path']}; "
        f"test {b['views']} views. Random genotypes: {b['randoms']} per seed, >= 4 convolutions per cell.",
        "",
        "## Summary",
        "",
        "| schedule | wins | searched top-1 (%) | random top-1 (%) | max param-free edges S-NC/S-RC/T-NC/T-RC "
        "| entropy drop S-NC/S-RC/T-NC/T-RC (nats, mean) | search (min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["summary"]:
        lines.append(
            f"| {r['schedule']} | {r['wins']}/{r['seeds']} | {fmt_pm(*r['searched_top1'], 100)} | "
            f"{fmt_pm(*r['random_top1'], 100)} | {per_kind(r['max_param_free'])} | "
            f"{per_kind({k: v[0] for k, v in r['entropy_drop'].items()}, '.3f')} | {fmt_pm(*r['search_minutes'], 1, 1)} |"
        )
    lines += [
        "",
        "A win: the searched genotype's top-1 is above the mean top-1 of the seed's random genotypes. Param-free "
        "edges: identity or pooling, of 8 per cell (5 or more is the collapse of paper Fig. 4). Entropy drop: "
        "ln(#ops) minus the mean softmax entropy of a cell's alphas at the end of the search.",
        "",
        "## Per seed",
        "",
        "| schedule | seed | searched top-1 | randoms top-1 (mean: each) | win | param-free edges | entropy drop | "
        "search (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in result["per_seed"]:
        each = " ".join(f"{100 * t:.1f}" for t in p["random_top1"])
        learned = "" if p["searched"]["learned"] else " (did not learn)"
        lines.append(
            f"| {p['schedule']} | {p['seed']} | {100 * p['searched']['top1']:.1f}{learned} | "
            f"{100 * p['random_mean_top1']:.1f}: {each} | {'yes' if p['win'] else 'no'} | "
            f"{per_kind(p['param_free'])} | {per_kind(p['entropy_drop'], '.3f')} | {p['search_seconds'] / 60:.1f} |"
        )
    lines += ["", "## Derived cells", ""]
    for p in result["per_seed"]:
        lines += [f"{p['schedule']}, seed {p['seed']}:", "```",
                  Genotype.from_dict(p["searched"]["genotype"]).describe(), "```"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Per schedule: searched vs random top-1 per seed (dots: each random); right: entropy drop per cell kind."""
    schedules = [r["schedule"] for r in result["summary"]]
    fig, axes = plt.subplots(1, len(schedules) + 1, figsize=(4.5 * (len(schedules) + 1), 4), squeeze=False)
    for ax, schedule in zip(axes[0], schedules):
        mine = [p for p in result["per_seed"] if p["schedule"] == schedule]
        xs = range(len(mine))
        ax.bar([x - 0.2 for x in xs], [100 * p["searched"]["top1"] for p in mine], 0.38, label="searched", color="#1f77b4")
        ax.bar([x + 0.2 for x in xs], [100 * p["random_mean_top1"] for p in mine], 0.38, label="random (mean)",
               color="#bbbbbb")
        for x, p in zip(xs, mine):
            ax.plot([x + 0.2] * len(p["random_top1"]), [100 * t for t in p["random_top1"]], "k.", ms=4)
        ax.set_xticks(list(xs), [f"seed {p['seed']}" for p in mine], fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{schedule}: {sum(p['win'] for p in mine)}/{len(mine)} wins")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax = axes[0][-1]
    width = 0.8 / len(schedules)
    for i, r in enumerate(result["summary"]):
        ax.bar([k + i * width for k in range(len(CELL_KINDS))], [r["entropy_drop"][k][0] for k in CELL_KINDS], width,
               yerr=[r["entropy_drop"][k][1] or 0 for k in CELL_KINDS], capsize=3, label=r["schedule"])
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(CELL_KINDS))], list(CELL_KINDS))
    ax.set_ylabel("alpha entropy drop (nats)")
    ax.set_title("how far the alphas moved")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Search quality on {result['data']} ({result['budget']['views']} views)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset spec (default: demo; with --quick: synthetic:16)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2 3 4; with --quick: 0)")
    p.add_argument("--schedules", nargs="+", choices=list(SEARCH_SCHEDULES), help="weight schedules side by side (default: the preset's)")
    p.add_argument("--out", type=Path, default=Path("runs/search_quality"), help="output directory (must be new or empty)")
    p.add_argument("--quick", action="store_true", help="tiny presets and data: the whole protocol in about a minute")
    p.add_argument("--search-preset", help="search preset (default: demo)")
    p.add_argument("--train-preset", help="retrain preset (default: demo)")
    p.add_argument("--search-epochs", type=int, help="search epochs (preset default)")
    p.add_argument("--search-channels", type=int, help="initial channels C of the supernet (preset default)")
    p.add_argument("--epochs", type=int, help="retrain epochs (preset default)")
    p.add_argument("--views", help="test views CLIPSxCROPS (default: the retrain preset's)")
    p.add_argument("--randoms", type=int, help="random genotypes per seed (default 5)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (the thread count changes float sums: keep it to reproduce numbers)")
    return p.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The whole protocol; returns what ``results.json`` holds."""
    t_start = time.perf_counter()
    budget = resolve_budget(args)
    data = args.data or ("synthetic:16" if args.quick else "demo")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2, 3, 4])
    check_seeds(seeds)
    schedules = args.schedules or [budget.search.schedule]
    out: Path = args.out
    fresh_dir(out)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        seed_dir = out / f"seed_{seed}"
        network = override(budget.network, seed=seed)
        randoms = []
        for i in range(budget.randoms):
            genotype = Genotype.random(1000 * seed + i, min_conv=4)
            log.info("seed %d: retrain random genotype %d", seed, i)
            randoms.append({"genotype": genotype.to_dict(),
                            **retrain(genotype, network, data, seed_dir / "train" / f"random_{i}", budget.views, "study")})
        random_top1 = [r["top1"] for r in randoms]
        for schedule in schedules:
            run_dir = seed_dir / f"search_{schedule}"
            log.info("seed %d: %s search", seed, schedule)
            search_seconds = search(override(budget.search, seed=seed, schedule=schedule), data, run_dir, "study")
            genotype = derive(run_dir)
            searched = {"genotype": genotype.to_dict(),
                        **retrain(genotype, network, data, seed_dir / "train" / f"searched_{schedule}", budget.views,
                                  "study")}
            record = final_record(run_dir)
            per_seed.append({
                "seed": seed, "schedule": schedule, "searched": searched, "random_top1": random_top1,
                "random_mean_top1": statistics.fmean(random_top1), "randoms": randoms,
                "win": searched["top1"] > statistics.fmean(random_top1),
                "param_free": genotype.parameter_free_edges(), "entropy_drop": record["entropy_drop"],
                "decays": record.get("decays"), "search_seconds": search_seconds,
            })
            log.info("seed %d %s: searched top-1 %.3f vs random mean %.3f", seed, schedule, searched["top1"],
                     statistics.fmean(random_top1))

    result: dict[str, Any] = {
        "command": command, "data": data, "seeds": seeds, "schedules": schedules, "threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_start": load_start},
        "budget": {"search": to_dict(budget.search), "network": to_dict(budget.network), "views": budget.views,
                   "randoms": budget.randoms, "search_preset": budget.search_preset, "train_preset": budget.train_preset},
        "per_seed": per_seed, "summary": summarise(per_seed, schedules),
    }
    result["wall_seconds"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    plot(result, out / "search_quality.png")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; prints the results. Exit code 2 on a user error (as the pvnas CLI)."""
    return run_main(run, parse_args(argv), "experiments/search_quality.py", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main())
