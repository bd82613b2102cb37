#!/usr/bin/env python
"""Paper Table 3 (ablation) and §3.3 / Fig. 4 (collapse) at a small budget, on any dataset spec.

Per seed: one supernet search with the step weight schedule (the baseline) and the same search
with the cosine schedule (the collapse study); genotypes derived from the step search at 1/4,
1/2, 3/4 of its epochs and at the end; the final genotype at half and double channels; and
``--randoms`` random genotypes with at least 4 convolutions per cell. Every genotype is
retrained from scratch with the same budget and tested multi-view. The seed drives the search,
the retrain initialisation and data order, and the random genotypes; the torch thread count is
pinned (``--threads``), so the same command gives the same numbers.

Writes ``OUT/results.md`` (tables), ``OUT/results.json`` (every raw number, the budget, wall
time), ``OUT/ablation.png`` and ``OUT/collapse.png``; the run directories under ``OUT/seed_N``
are ordinary pvnas runs (``pvnas plot``/``report`` work on them).

    python experiments/ablation.py                       # demo, seeds 0 1 2: ~20-30 min on 2 CPU cores
    python experiments/ablation.py --quick --out runs/ablation_quick  # synthetic data, tiny budget: under a minute
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
    FIG5B_STAGES,
    NETWORK_PRESETS,
    SEARCH_PRESETS,
    ClipConfig,
    NetworkConfig,
    SearchConfig,
    override,
    to_dict,
)
from pvnas.runtime.rundir import MetricsLog  # noqa: E402
from pvnas.errors import ConfigError  # noqa: E402
from pvnas.search.collapse import drop_from  # noqa: E402
from pvnas.space.genotype import Genotype  # noqa: E402
from pvnas.space.ops import CELL_KINDS  # noqa: E402
from protocol import (  # noqa: E402
    check_seeds, derive, fmt_pm, fresh_dir, mean_std, param_free_edges, retrain, run_main, search,
)

log = logging.getLogger("ablation")

STOPS = ((1, 4), (1, 2), (3, 4))  # paper: genotypes of epochs 20, 40, 60 of 80
SCHEDULES = ("step", "cosine")

# 4 frames spread over the whole 32-frame demo video (more motion per frame step than a 16-frame
# window), 32 px: the cheapest clip on which retrained genotypes still differ clearly (measured).
SMALL_CLIP = ClipConfig(frames=4, window_seconds=32 / 15, crop=32, scale=(32, 37), test_clips=4, test_crops=3)


@dataclass(frozen=True)
class Budget:
    """Everything that sets the cost of a run; ``results.json`` records it."""

    search: SearchConfig
    network: NetworkConfig
    views: str
    randoms: int


def default_budget() -> Budget:
    """~20-30 min for 3 seeds on `demo` on a shared 2-core CPU (docs/history.md has the timings of one run).

    Spelled out from the paper defaults rather than from the `demo` presets, so that tuning the
    demo does not silently change the numbers docs/history.md reports.

    The supernet is searched at C=4 and the genotypes retrained at C=8 (DARTS also searches
    narrower than it trains): the search is half of the cost, and C=4 takes a third less time.
    The retrain drops dropout and drop-path: the paper's 0.4 / 0.1 regularise 128-196 epochs; in
    a few epochs they only slow learning (top-1 of one random genotype 0.36 with them, 0.50 without).
    """
    search = SearchConfig(channels=4, clip=SMALL_CLIP, batch_size=16, epochs=8, workers=1)
    network = NetworkConfig(
        channels=8, repeats=1, stages=FIG5B_STAGES, stem_stride=2, clip=SMALL_CLIP, batch_size=16, epochs=6,
        warmup_epochs=1, lr=0.1, dropout=0.0, drop_path=0.0, val_videos=0, workers=1,
    )
    return Budget(search, network, views="4x3", randoms=5)


def quick_budget() -> Budget:
    """A smoke run of the whole protocol (tests): tiny presets, C=4, one retrain epoch."""
    search = override(SEARCH_PRESETS["tiny"], channels=4, epochs=4, workers=0)
    network = override(
        NETWORK_PRESETS["tiny"], channels=4, epochs=1, warmup_epochs=0, dropout=0.0, drop_path=0.0,
        val_videos=0, workers=0,
    )
    return Budget(search, network, views="2x3", randoms=1)


@dataclass(frozen=True)
class Variant:
    """One retrain of the protocol: which Table 3 row it belongs to and what it trains."""

    row: str
    name: str  # run directory name under OUT/seed_N/train
    genotype: Genotype
    channels: int
    search_epoch: int | None  # None for random genotypes


def row_names(randoms: int) -> list[str]:
    """The Table 3 rows, in the paper's order."""
    return (["Baseline"] + [f"Stop at {a}/{b}" for a, b in STOPS] + ["Half Channel", "Double Channel"]
            + [f"Random (mean of {randoms})"])


def stop_epochs(epochs: int) -> list[int]:
    """The search epochs of the "stop at" rows (2, 4, 6 of 8)."""
    return [round(epochs * a / b) for a, b in STOPS]


def variants(seed: int, step_run: Path, budget: Budget) -> list[Variant]:
    """The genotypes to retrain for one seed (paper Table 3 rows)."""
    epochs, c = budget.search.epochs, budget.network.channels
    rows = row_names(budget.randoms)
    final = derive(step_run, epochs)
    out = [Variant(rows[0], "baseline", final, c, epochs)]
    out += [Variant(row, f"stop_{e:03d}", derive(step_run, e), c, e) for row, e in zip(rows[1:4], stop_epochs(epochs))]
    out += [Variant(rows[4], "half_channel", final, c // 2, epochs), Variant(rows[5], "double_channel", final, 2 * c, epochs)]
    out += [
        Variant(rows[6], f"random_{i}", Genotype.random(1000 * seed + i, min_conv=4), c, None)
        for i in range(budget.randoms)
    ]
    return out


def summarise(runs: list[dict[str, Any]], seeds: Sequence[int], randoms: int) -> list[dict[str, Any]]:
    """Table rows: top-1/top-5 mean ± std over seeds (random rows first averaged within a seed)."""
    table = []
    for row in row_names(randoms):
        mine = [r for r in runs if r["row"] == row]
        per_seed = {
            key: [statistics.fmean(r[key] for r in mine if r["seed"] == s) for s in seeds] for key in ("top1", "top5")
        }
        (t1, t1s), (t5, t5s) = mean_std(per_seed["top1"]), mean_std(per_seed["top5"])
        epochs = {r["search_epoch"] for r in mine}
        table.append({
            "row": row, "search_epoch": epochs.pop() if len(epochs) == 1 else None, "channels": mine[0]["channels"],
            "top1_mean": t1, "top1_std": t1s, "top5_mean": t5, "top5_std": t5s,
            "top1_per_seed": per_seed["top1"], "top5_per_seed": per_seed["top5"],
            "params": statistics.fmean(r["params"] for r in mine), "gflops": statistics.fmean(r["gflops"] for r in mine),
            "n_runs": len(mine),
        })
    return table


def collapse_curves(run: Path) -> list[dict[str, Any]]:
    """Per epoch: weight lr, alpha entropy and parameter-free share per cell kind (from metrics.jsonl)."""
    return [
        {"epoch": r["epoch"], "lr": r["lr"], "entropy": r["entropy"], "param_free_share": r["param_free_share"]}
        for r in MetricsLog(run / "metrics.jsonl").read()
    ]


def collapse_final(curves: dict[str, dict[int, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Final-epoch statistics per schedule and cell kind (plus the mean over kinds), mean ± std over seeds."""
    out: dict[str, Any] = {}
    for schedule, by_seed in curves.items():
        finals = [c[-1] for c in by_seed.values()]
        values = {
            "param_free_share": [f["param_free_share"] for f in finals],
            "entropy": [f["entropy"] for f in finals],
            "entropy_drop": [{k: drop_from(k, f["entropy"][k]) for k in CELL_KINDS} for f in finals],
        }
        stats: dict[str, Any] = {}
        for key, per_seed in values.items():
            per_kind = {kind: [v[kind] for v in per_seed] for kind in CELL_KINDS}
            per_kind["all cells"] = [statistics.fmean(v[k] for k in CELL_KINDS) for v in per_seed]
            stats[key] = {kind: dict(zip(("mean", "std"), mean_std(v)), values=v) for kind, v in per_kind.items()}
        out[schedule] = stats
    return out


def fmt_count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def markdown(result: dict[str, Any]) -> str:
    """``results.md``: the Table 3 analogue, per-seed top-1, and the collapse table."""
    b, seeds = result["budget"], result["seeds"]
    s, n = b["search"], b["network"]
    clip = n["clip"]
    res = f"{clip['frames']}x{clip['crop']}x{clip['crop']}"
    lines = [
        "# PV-NAS ablation (paper Table 3) and collapse study (§3.3, Fig. 4) at a small budget",
        "",
        f"Command: `{result['command']}`  ",
        f"Data `{result['data']}`, seeds {', '.join(map(str, seeds))}; wall time {result['wall_seconds'] / 60:.1f} min "
        f"on {result['machine']['cpus']} CPU cores, {result['threads']} torch thread(s), supernet `{result['impl']}`.",
        "",
        f"- Search: C={s['channels']}, {s['epochs']} epochs, batch {s['batch_size']}, {res} clips, "
        f"weight lr {s['w_lr']} with the step schedule (x{s['step_gamma']} at "
        f"{', '.join(f'{100 * a:.0f}%' for a in s['decay_at'])} of the steps).",
        f"- Retrain: C={n['channels']} (half {n['channels'] // 2}, double {2 * n['channels']}), {n['epochs']} epochs ({n['warmup_epochs']} warm-up), batch {n['batch_size']}, lr {n['lr']}, "
        f"dropout {n['dropout']}, drop-path {n['drop_path']}, {res} clips, stem stride {n['stem_stride']}, "
        f"cells {' '.join(n['stages'])}.",
        f"- Test: {b['views']} views (clips x crops) per video, scores averaged.",
        "",
        "## Ablation (Table 3)",
        "",
        "| Model | Search epoch | Channels | Top-1 (%) | Top-5 (%) | Params | GFLOPs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["table"]:
        epoch = "-" if r["search_epoch"] is None else str(r["search_epoch"])
        lines.append(
            f"| {r['row']} | {epoch} | {r['channels']} | {fmt_pm(r['top1_mean'], r['top1_std'], 100)} | "
            f"{fmt_pm(r['top5_mean'], r['top5_std'], 100)} | {fmt_count(r['params'])} | {r['gflops']:.4f} |"
        )
    lines += [
        "",
        f"Top-1/Top-5: mean ± sample std over the {len(seeds)} seed(s); the random row first averages its "
        f"{b['randoms']} genotypes within a seed. Params and GFLOPs (multiply-adds per {res} view) are means over "
        "the retrained networks of the row (the derived genotypes differ between seeds).",
        "",
        "Top-1 (%) per seed; for searched genotypes, in brackets, the parameter-free edges (identity/pool, of 8) "
        "of its S-NC/S-RC/T-NC/T-RC cells:",
        "",
        "| Model | " + " | ".join(f"seed {x}" for x in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for r in result["table"]:
        cells = [f"{100 * v:.1f}" for v in r["top1_per_seed"]]
        if r["search_epoch"] is not None:
            mine = {x["seed"]: x for x in result["runs"] if x["row"] == r["row"]}
            cells = [f"{c} ({param_free_edges(mine[seed]['genotype'])})" for c, seed in zip(cells, seeds)]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    shared = [f"seed {r['seed']}: {r['name']} = {r['same_as']}" for r in result["runs"] if r.get("same_as")]
    if shared:
        lines += ["", "Identical genotypes were trained once (deterministic, so the numbers are the same): "
                  + "; ".join(shared) + "."]
    final = result["collapse"]["final"]
    last = s["epochs"]
    lines += [
        "",
        "## Collapse: step vs cosine weight schedule (§3.3, Fig. 4)",
        "",
        f"The same search (seeds {', '.join(map(str, seeds))}) with each schedule; epoch {last} of {last}, "
        "mean ± std over seeds. Parameter-free share: fraction of the 8 derived edges of a cell that are identity "
        "or pooling (the collapse signal). Alpha entropy H: mean softmax entropy over the 14 edges; shown as its "
        "drop from undecided, ln(#ops) - H, in 10^-3 nats (ln 6 = 1.792 for spatial, ln 8 = 2.079 for temporal "
        "cells; raw values in results.json).",
        "",
        "| Cell | Param-free share, step | Param-free share, cosine | Entropy drop, step | Entropy drop, cosine |",
        "|---|---|---|---|---|",
    ]
    for kind in [*CELL_KINDS, "all cells"]:
        share = [final[sch]["param_free_share"][kind] for sch in SCHEDULES]
        drop = [final[sch]["entropy_drop"][kind] for sch in SCHEDULES]
        lines.append(f"| {kind} | " + " | ".join([fmt_pm(c["mean"], c["std"], digits=3) for c in share]
                                                + [fmt_pm(c["mean"], c["std"], 1e3, digits=2) for c in drop]) + " |")
    lrs = {sch: [c["lr"] for c in next(iter(result["collapse"]["curves"][sch].values()))] for sch in SCHEDULES}
    lines += [""] + [f"Weight lr by epoch, {sch}: " + ", ".join(f"{v:.3g}" for v in lrs[sch]) + "." for sch in SCHEDULES]
    lines += ["", "Figures: `ablation.png` (Top-1/Top-5 with std error bars, dots = seeds), `collapse.png` "
              "(entropy and parameter-free share per epoch, one line per seed and schedule).", ""]
    return "\n".join(lines)


def plot_ablation(result: dict[str, Any], path: Path) -> None:
    """Grouped bars (Top-1, Top-5) per row with std error bars; dots are the per-seed values."""
    table = result["table"]
    fig, ax = plt.subplots(figsize=(11, 4.5))
    xs = range(len(table))
    for offset, key, color in ((-0.2, "top1", "#1f77b4"), (0.2, "top5", "#ff7f0e")):
        means = [100 * r[f"{key}_mean"] for r in table]
        errs = [100 * (r[f"{key}_std"] or 0.0) for r in table]
        ax.bar([x + offset for x in xs], means, 0.38, yerr=errs, capsize=3, color=color, alpha=0.8,
               label=key.replace("top", "Top-"))
        for x, r in zip(xs, table):
            ax.plot([x + offset] * len(r[f"{key}_per_seed"]), [100 * v for v in r[f"{key}_per_seed"]], "k.", ms=4)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{r['row']}\nC={r['channels']}" for r in table], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 115)
    ax.set_title(f"Ablation on {result['data']} (mean ± std over seeds {', '.join(map(str, result['seeds']))}, "
                 f"{result['budget']['views']} views)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_collapse(result: dict[str, Any], path: Path) -> None:
    """Alpha entropy drop from uniform (top, log) and parameter-free share (bottom) per cell kind, step vs cosine."""
    curves = result["collapse"]["curves"]
    fig, axes = plt.subplots(2, len(CELL_KINDS), figsize=(16, 6.5), sharex=True)
    colors = {"step": "#1f77b4", "cosine": "#d62728"}
    for col, kind in enumerate(CELL_KINDS):
        for row, key in enumerate(("entropy", "param_free_share")):
            ax = axes[row, col]
            for schedule in SCHEDULES:
                for i, c in enumerate(curves[schedule].values()):
                    ys = [drop_from(kind, e[key][kind]) if key == "entropy" else e[key][kind] for e in c]
                    ax.plot([e["epoch"] for e in c], ys, marker="o", ms=3, color=colors[schedule], alpha=0.75,
                            label=schedule if i == 0 else None)
            if key == "entropy":
                ax.set_yscale("log")
                ax.set_title(kind)
            else:
                ax.axhline(0.5, color="gray", ls=":", lw=1)
                ax.set_ylim(-0.05, 1.05)
                ax.set_xlabel("search epoch")
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("ln(#ops) - alpha entropy (nats)")
    axes[1, 0].set_ylabel("parameter-free share")
    axes[0, 0].legend()
    fig.suptitle(f"Collapse study on {result['data']}: step vs cosine weight schedule (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="dataset spec (default: demo; with --quick: synthetic:8)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2; with --quick: 0)")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"), help="output directory (must be new or empty)")
    p.add_argument("--quick", action="store_true", help="tiny budget: the whole protocol in about a minute")
    p.add_argument("--search-epochs", type=int, help="search epochs (>= 4; stops at 1/4, 1/2, 3/4)")
    p.add_argument("--epochs", type=int, help="retrain epochs")
    p.add_argument("--search-channels", type=int, help="initial channels C of the supernet")
    p.add_argument("--channels", type=int, help="initial channels C of the retrained networks (>= 2)")
    p.add_argument("--views", help="test views CLIPSxCROPS")
    p.add_argument("--randoms", type=int, help="random genotypes per seed")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core CPU two threads stall each other; "
                        "the thread count also changes float sums, so keep it to reproduce numbers)")
    return p.parse_args(argv)


def resolve_budget(args: argparse.Namespace) -> Budget:
    """The preset budget with the command-line overrides applied and checked."""
    budget = quick_budget() if args.quick else default_budget()
    search_cfg = override(budget.search, epochs=args.search_epochs, channels=args.search_channels)
    network_cfg = override(budget.network, epochs=args.epochs, channels=args.channels)
    if search_cfg.epochs < 4 or search_cfg.channels < 1:
        raise ConfigError(
            f"--search-epochs must be >= 4 (stops at 1/4, 1/2, 3/4) and --search-channels >= 1, "
            f"got {search_cfg.epochs} and {search_cfg.channels}"
        )
    if network_cfg.channels < 2 or network_cfg.epochs is None or network_cfg.epochs < 1:
        raise ConfigError(f"--channels must be >= 2 and --epochs >= 1, got {network_cfg.channels} and {network_cfg.epochs}")
    if args.epochs is not None:  # keep the warm-up inside the (possibly shorter) schedule
        network_cfg = override(network_cfg, warmup_epochs=min(budget.network.warmup_epochs or 0, args.epochs - 1))
    randoms = budget.randoms if args.randoms is None else args.randoms
    if randoms < 1:
        raise ConfigError(f"--randoms must be >= 1, got {randoms}")
    return Budget(search_cfg, network_cfg, args.views or budget.views, randoms)


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The whole protocol; returns what ``results.json`` holds."""
    t_start = time.perf_counter()
    budget = resolve_budget(args)
    data = args.data or ("synthetic:8" if args.quick else "demo")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    check_seeds(seeds)
    out: Path = args.out
    fresh_dir(out)

    seconds = {"search": 0.0, "train": 0.0, "eval": 0.0}
    runs: list[dict[str, Any]] = []
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {sch: {} for sch in SCHEDULES}
    for seed in seeds:
        seed_dir = out / f"seed_{seed}"
        for schedule in SCHEDULES:
            log.info("seed %d: %s search (%d epochs)", seed, schedule, budget.search.epochs)
            run_dir = seed_dir / f"search_{schedule}"
            seconds["search"] += search(override(budget.search, seed=seed, schedule=schedule), data, run_dir, "ablation")
            curves[schedule][seed] = collapse_curves(run_dir)
        trained: dict[tuple[str, int], str] = {}  # (cells, channels) -> variant: identical work runs once
        for v in variants(seed, seed_dir / "search_step", budget):
            key = (json.dumps(v.genotype.to_dict()["cells"]), v.channels)
            record = {"seed": seed, "row": v.row, "name": v.name, "search_epoch": v.search_epoch, "channels": v.channels,
                      "genotype": v.genotype.to_dict(), "dir": str(Path(seed_dir.name) / "train" / v.name)}
            if key in trained:
                same = next(r for r in runs if r["seed"] == seed and r["name"] == trained[key])
                runs.append({**same, **record, "dir": same["dir"], "same_as": trained[key]})
                continue
            log.info("seed %d: retrain %s (C=%d)", seed, v.name, v.channels)
            cfg = override(budget.network, channels=v.channels, seed=seed)
            metrics = retrain(v.genotype, cfg, data, seed_dir / "train" / v.name, budget.views, "ablation")
            seconds["train"] += metrics["train_seconds"]
            seconds["eval"] += metrics["eval_seconds"]
            trained[key] = v.name
            runs.append({**record, **metrics, "same_as": None})
            log.info("seed %d: %s top-1 %.3f top-5 %.3f", seed, v.name, metrics["top1"], metrics["top5"])

    result: dict[str, Any] = {
        "command": command, "data": data, "seeds": seeds, "impl": budget.search.impl, "threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "budget": {"search": to_dict(budget.search), "network": to_dict(budget.network), "views": budget.views,
                   "randoms": budget.randoms},
        "runs": runs, "table": summarise(runs, seeds, budget.randoms),
        "collapse": {"curves": curves, "final": collapse_final(curves)},
        "seconds": seconds,
    }
    result["wall_seconds"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    plot_ablation(result, out / "ablation.png")
    plot_collapse(result, out / "collapse.png")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; prints the results table. Exit code 2 on a user error (as the pvnas CLI)."""
    return run_main(run, parse_args(argv), "experiments/ablation.py", argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    sys.exit(main())
