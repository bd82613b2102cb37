#!/usr/bin/env python
"""Search under a budget (docs/design.md, "Budgets"): the checks of issue #35 and the evidence study.

    python experiments/budget.py derive RUN --preset L --out DIR        # 10 budgets: pvnas derive --max-gflops, then
                                                                         # pvnas flops of each; derivation time
    python experiments/budget.py target --data task:appearance --targets 0.0045 0.0055 0.0065 --seeds 0 1 2 \\
        --epochs 6 --out DIR [--jobs 2]                                  # --target-gflops: final derived cost / target
    python experiments/budget.py step --target 0.005 --out DIR          # search step with / without the term,
                                                                         # interleaved in one process
    python experiments/budget.py study --tasks appearance order --out DIR --jobs 2
                                                                         # the evidence study (issue #35, item 6)

The study, per task (the first of ``--tasks`` the tuning task, the others held out) and search seed, at two budgets
(``--fractions`` of the way from the cheapest genotype the demo search can derive to the mean cost of its plain
searches' genotypes, on the demo retrain network): (a) the plain search derived at the budget, (b) a search with
``--target-gflops`` at the budget, (c) ``--randoms`` random genotypes rejection-sampled to within 3% under the
budget (and within the search's cap on parameter-free edges), (d) the plain search's genotype with the retrain
network's channels narrowed to the widest that fits. Every genotype is retrained ``--retrain-seeds`` times with the
suite's protocol (experiments/search_quality.py: the same units, cached in ``DIR/runs``); noise is the pooled
spread over retrain seeds. Writes ``DIR/study.json``, ``DIR/study.md`` and ``DIR/study.png`` (accuracy against
GFLOPs, all four).

Every command writes ``DIR/<command>.json`` and ``DIR/<command>.md``. Timings name the machine, its load and the
torch threads; CPU times are the process's own (children's for the commands it runs), beside wall times.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, override
from pvnas.data.datasets.tasks import study_slug
from pvnas.data.generators.task_suite import search_spec
from pvnas.metrics.cost import network_costs
from pvnas.runtime.rundir import load_yaml
from pvnas.search.remedies import derive_options
from pvnas.search.remedies.budget import budget_network
from pvnas.search.snapshots import load_alphas, run_remedies, saved_epochs
from pvnas.space.budget import front
from pvnas.space.genotype import Genotype

PVNAS = [sys.executable, "-m", "pvnas"]


def machine() -> dict[str, Any]:
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_1min": os.getloadavg()[0], "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


def timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; its wall seconds and its CPU seconds (user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write(out: Path, name: str, result: dict[str, Any], md: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(md)
    print(md)


# ------------------------------------------------------------------------------------------ derive at 10 budgets
def check_derive(args: argparse.Namespace) -> None:
    run, preset = Path(args.run), args.preset
    net = NETWORK_PRESETS[preset]
    frames, size = args.frames or net.clip.frames, args.size or net.clip.crop
    config = load_yaml(run / "config.yaml") if (run / "config.yaml").exists() else {}
    cap = derive_options(run_remedies(run / "config.yaml", config, {})).get("max_param_free")
    alphas, edges = load_alphas(run, saved_epochs(run)[-1])
    macs, _ = network_costs(net, 400, frames, size)
    whole = front(alphas, [macs], edges, cap)
    plain = macs.of(Genotype.derive(alphas, edge_weights=edges, max_param_free=cap))
    low = float(whole.costs[:, 0].min())
    budgets = [float(b) for b in np.linspace(low, plain, args.budgets + 2)[1:-1] / 1e9]  # strictly between the ends
    rows = []
    for budget in budgets:
        path = Path(args.out) / f"derive_{budget:.6f}.json"
        done, wall, cpu = timed(PVNAS + ["derive", str(run), "--max-gflops", f"{budget:.9f}", "--preset", preset,
                                         "--frames", str(frames), "--crop", str(size), "-o", str(path)])
        if done.returncode:
            raise SystemExit(done.stderr)
        flops, _, _ = timed(PVNAS + ["flops", "--genotype", str(path), "--preset", preset, "--frames", str(frames),
                                     "--crop", str(size)])
        gflops = json.loads(flops.stdout)["gflops"]
        window = [c for c in whole.costs[:, 0] if 0.95 * budget * 1e9 <= c <= budget * 1e9]
        rows.append({"budget_gflops": float(budget), "flops_gflops": gflops, "share": gflops / budget,
                     "within_5pct": bool(gflops >= 0.95 * budget), "front_has_point_in_window": bool(window),
                     "derive_wall_s": wall, "derive_cpu_s": cpu})
    result = {"run": str(run), "preset": preset, "input": [3, frames, size, size], "cap": cap, "machine": machine(),
              "cheapest_gflops": low / 1e9, "unconstrained_gflops": plain / 1e9, "front_points": len(whole.scores),
              "rows": rows}
    md = [f"# pvnas derive --max-gflops at {len(rows)} budgets ({run}, preset {preset}, {frames}x{size}x{size})", "",
          f"Cheapest reachable {low / 1e9:.5g}, unconstrained {plain / 1e9:.5g} GFLOPs; exact front: "
          f"{len(whole.scores)} points. Load {result['machine']['load_1min']:.1f} on {os.cpu_count()} cores.", "",
          "| budget | pvnas flops | of budget | within 5% | front has a point in [0.95B, B] | derive wall s | derive CPU s |",
          "|---:|---:|---:|---|---|---:|---:|"]
    md += [f"| {r['budget_gflops']:.5g} | {r['flops_gflops']:.5g} | {r['share']:.1%} | {r['within_5pct']} | "
           f"{r['front_has_point_in_window']} | {r['derive_wall_s']:.2f} | {r['derive_cpu_s']:.2f} |" for r in rows]
    write(Path(args.out), "derive", result, "\n".join(md) + "\n")


# ------------------------------------------------------------------------------------------ --target-gflops runs
def _target_unit(data: str, preset: str, target: float | None, seed: int, epochs: int, out: str,
                 weight: float | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    from pvnas.search.loop import run_search
    from pvnas.search.remedies import budget as budget_remedy

    if weight is not None:  # tuning the term's weight (--weight): the study of it, not a user setting
        budget_remedy.WEIGHT = weight

    cfg = SEARCH_PRESETS[preset]
    remedies = {**cfg.remedies, **({"target_gflops": target} if target else {})}
    cfg = override(cfg, epochs=epochs, seed=seed, workers=0, remedies=remedies)
    t0 = time.perf_counter()
    if not (Path(out) / "genotype.json").exists():
        run_search(cfg, data, out, preset=preset)
    wall = time.perf_counter() - t0
    name, net = budget_network(cfg)
    macs, _ = network_costs(net, 400, net.clip.frames, net.clip.crop)
    records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    final = Genotype.load(Path(out) / "genotype.json")
    alphas, edges = load_alphas(Path(out), saved_epochs(Path(out))[-1])
    plain = Genotype.derive(alphas, edge_weights=edges, max_param_free=cfg.remedies.get("max_param_free"))
    return {"target": target, "seed": seed, "final_gflops": macs.of(final) / 1e9, "plain_gflops": macs.of(plain) / 1e9,
            "derived_per_epoch": [r.get("derived_gflops") for r in records],
            "expected_per_epoch": [r.get("expected_gflops") for r in records],
            "search_s": wall, "seconds_per_epoch": statistics.mean(r["seconds"] for r in records)}


def check_target(args: argparse.Namespace) -> None:
    out = Path(args.out)
    units = [(args.data, args.preset, t, s, args.epochs, str(out / "runs" / f"t{t}_s{s}"), args.weight)
             for t in ([None] if args.baseline else []) + args.targets for s in args.seeds]
    with cf.ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(_target_unit, *zip(*units)))
    result = {"data": args.data, "preset": args.preset, "epochs": args.epochs, "weight": args.weight,
              "machine": machine(), "rows": rows}
    md = [f"# --target-gflops on {args.data} (preset {args.preset}, {args.epochs} epochs)", "",
          "| target | seed | final derived GFLOPs | of target | within 5% under | paper's rule at the end | per epoch: derived (paper's rule) | s/epoch |",
          "|---:|---:|---:|---:|---|---:|---|---:|"]
    for r in rows:
        share = r["final_gflops"] / r["target"] if r["target"] else None
        md.append(f"| {r['target'] or 'none'} | {r['seed']} | {r['final_gflops']:.5g} | "
                  f"{'' if share is None else f'{share:.1%}'} | {'' if share is None else 0.95 <= share <= 1} | "
                  f"{r['plain_gflops']:.5g} | {' '.join(f'{d:.4g}' for d in r['derived_per_epoch'] if d)} | "
                  f"{r['seconds_per_epoch']:.1f} |")
    write(out, "target", result, "\n".join(md) + "\n")


# ------------------------------------------------------------------------------------------ step time ratio
def check_step(args: argparse.Namespace) -> None:
    """Search steps with and without the term, alternating in one process on the same batches: the ratio of the
    median step times (thread CPU time, and wall)."""
    from pvnas.nn.supernet import supernet_from_config
    from pvnas.search.loop import make_state, search_step
    from pvnas.search.remedies import alpha_terms, remedies_of

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = SEARCH_PRESETS[args.preset]
    with_term = override(base, remedies={**base.remedies, "target_gflops": args.target})
    remedies = {"without": remedies_of(base), "with": remedies_of(with_term)}
    model = supernet_from_config(base, 8, remedies["with"])  # the same forwards; only the alpha loss differs
    state = make_state(model, base)
    clip = base.clip
    clips = torch.randn(base.batch_size, 3, clip.frames, clip.crop, clip.crop)
    labels = torch.randint(0, 8, (base.batch_size,))
    times: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
    for step in range(2 * (args.steps + 2)):
        name = ("without", "with")[step % 2]
        c0, w0 = time.thread_time(), time.perf_counter()
        search_step(state, clips, labels, update_alpha=True,
                    alpha_terms=lambda name=name: alpha_terms(remedies[name], model, 0.75))
        if step >= 4:  # two warm-up steps each
            times[name].append((time.thread_time() - c0, time.perf_counter() - w0))
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}
    result = {"preset": args.preset, "target_gflops": args.target, "steps_each": args.steps, "machine": machine(),
              "median_cpu_s": {k: v[0] for k, v in med.items()}, "median_wall_s": {k: v[1] for k, v in med.items()},
              "ratio_cpu": med["with"][0] / med["without"][0], "ratio_wall": med["with"][1] / med["without"][1]}
    md = (f"# Search step with / without the --target-gflops term ({args.preset} preset, batch {base.batch_size}, "
          f"{args.steps} steps each, alternating, {args.threads} thread)\n\n"
          f"Median step: {med['without'][0] * 1e3:.1f} ms CPU ({med['without'][1] * 1e3:.1f} ms wall) without, "
          f"{med['with'][0] * 1e3:.1f} ms CPU ({med['with'][1] * 1e3:.1f} ms wall) with: ratio "
          f"{result['ratio_cpu']:.3f} CPU, {result['ratio_wall']:.3f} wall. Load {result['machine']['load_1min']:.1f}.\n")
    write(Path(args.out), "step", result, md)


# ------------------------------------------------------------------------------------------ the evidence study
def check_study(args: argparse.Namespace) -> None:
    import dataclasses

    sys.path.insert(0, str(Path(__file__).parent))
    from protocol import run_units
    from search_quality import key_of, pooled_noise, resolve_budget, retrain_stats, retrain_unit, search_unit

    from pvnas.search.snapshots import derive_from_run
    from pvnas.space.genotype import Budget, cheapest

    out = Path(args.out)
    sq_args = argparse.Namespace(search_preset="demo", train_preset="demo", search_epochs=args.search_epochs,
                                 quick=args.quick, epochs=args.epochs, workers=0, set=[], randoms=args.randoms,
                                 retrain_seeds=args.retrain_seeds, stop_at=0.0, max_param_free=None, select="alpha",
                                 variant="budget", views=None)
    plain = resolve_budget(sq_args)
    cap = plain.search.remedies.get("max_param_free")
    net_name, net = budget_network(plain.search)
    macs, _ = network_costs(net, 400, net.clip.frames, net.clip.crop)
    low = cheapest([macs], cap)["macs"]
    tasks = []
    for role, task in [("tuning", args.tasks[0])] + [("held out", t) for t in args.tasks[1:]]:
        data = task if ":" in task else f"task:{task}"
        plain = resolve_budget(sq_args, data)  # the task's own retrain length
        runs, searched = out / "runs" / study_slug(data), search_spec(data)  # a task's searches may see part of it

        def retrain_units(genotypes: list[tuple[str, float, dict[str, Any], Any]]) -> list[tuple]:
            return [(retrain_unit, data, g, r, b, runs / f"train_{key_of(g['cells'])}_c{b.network.channels}_r{r}")
                    for _, _, g, b in genotypes for r in plain.retrain_seeds]

        searches = run_units(args.jobs, 1, [(search_unit, searched, s, plain, runs / f"search_plain_s{s}")
                                            for s in args.seeds])
        setting = args.budget_seeds or args.seeds  # (an extended study keeps the budgets of its first seeds)
        top = statistics.fmean(macs.of(Genotype.from_dict(r["genotype"])) for s, r in zip(args.seeds, searches)
                               if s in setting)
        budgets = [low + f * (top - low) for f in args.fractions]
        genotypes: list[tuple[str, float, dict[str, Any], Any]] = []  # (variant, budget, genotype, study budget)
        for budget in budgets:
            target = dataclasses.replace(plain, search=override(plain.search, remedies={**plain.search.remedies,
                                                                                       "target_gflops": budget / 1e9}))
            aimed = run_units(args.jobs, 1, [(search_unit, searched, s, target, runs / f"search_t{budget / 1e9:.6f}_s{s}")
                                             for s in args.seeds])
            limit = Budget([(macs, budget)], f"{net_name} 400 classes")
            for s, a in zip(args.seeds, aimed):
                genotypes.append(("(a) plain search, derived at the budget", budget,
                                  derive_from_run(runs / f"search_plain_s{s}", budget=limit).to_dict(), plain))
                genotypes.append(("(b) search with --target-gflops", budget, a["genotype"], target))
            found, i = [], 0
            while len(found) < args.randoms:  # rejection sampling: within 3% under the budget, within the cap
                g = Genotype.random(5000 + i, min_conv=0)
                i += 1
                if 0.97 * budget <= macs.of(g) <= budget and (cap is None or max(g.parameter_free_edges().values()) <= cap):
                    found.append(g)
            genotypes += [("(c) random, within 3% under", budget, g.to_dict(), plain) for g in found]
            for s, r in zip(args.seeds, searches):  # (d) the widest channels that fit
                g = Genotype.from_dict(r["genotype"])
                for c in range(net.channels, 0, -1):
                    narrow = override(net, channels=c)
                    if network_costs(narrow, 400, net.clip.frames, net.clip.crop)[0].of(g) <= budget:
                        break
                genotypes.append((f"(d) plain genotype narrowed", budget, g.to_dict(),
                                  dataclasses.replace(plain, network=override(plain.network, channels=c))))
        units = retrain_units(genotypes)
        trained = run_units(args.jobs, 1, units)
        per: dict[tuple[str, float, str, int], list[dict[str, Any]]] = {}
        for (_, _, g, r, b, _), res in zip(units, trained):
            per.setdefault((key_of(g["cells"]), b.network.channels), []).append(res)
        noise = pooled_noise([[x["top1"] for x in v] for v in per.values()])
        rows = []
        for variant, budget, g, b in genotypes:
            stats = retrain_stats(per[(key_of(g["cells"]), b.network.channels)])
            cost = network_costs(b.network, 400, net.clip.frames, net.clip.crop)[0].of(Genotype.from_dict(g))
            rows.append({"variant": variant, "budget_gflops": budget / 1e9, "gflops": cost / 1e9,
                         "channels": b.network.channels, "top1": stats["top1"], "top1_each": stats["top1_each"]})
        tasks.append({"task": data, "role": role, "budgets_gflops": [b / 1e9 for b in budgets],
                      "unconstrained_mean_gflops": top / 1e9, "cheapest_gflops": low / 1e9, "retrain_noise": noise,
                      "rows": rows})
        write(out, "study", {"machine": machine(), "args": vars(args), "tasks": tasks}, study_markdown(tasks))
    study_plot(tasks, out / "study.png")


def study_markdown(tasks: list[dict[str, Any]]) -> str:
    lines = ["# Search under a budget: accuracy of four ways to meet a GFLOPs budget", ""]
    for t in tasks:
        noise = "n/a" if t["retrain_noise"] is None else f"{100 * t['retrain_noise']:.1f}"
        lines += [f"## {t['task']} ({t['role']})", "",
                  f"Budgets {', '.join(f'{b:.5g}' for b in t['budgets_gflops'])} GFLOPs (cheapest reachable "
                  f"{t['cheapest_gflops']:.5g}, plain searches' mean {t['unconstrained_mean_gflops']:.5g}); retrain noise "
                  f"(one retrain's top-1 std) {noise} points.", "",
                  "| budget | variant | genotypes | GFLOPs | top-1 (mean over genotypes and retrains) | spread over genotypes "
                  "| margin over (c) ± noise |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
        for r in t["rows"]:
            groups.setdefault((r["budget_gflops"], r["variant"]), []).append(r)
        for (budget, variant), rs in sorted(groups.items()):
            top1 = [r["top1"] for r in rs]
            randoms = next((v for (b, name), v in groups.items() if b == budget and name.startswith("(c)")), [])
            lines.append(f"| {budget:.5g} | {variant} | {len(rs)} | {statistics.fmean(r['gflops'] for r in rs):.5g} | "
                         f"{100 * statistics.fmean(top1):.1f} | "
                         + ("" if len(top1) < 2 else f"{100 * statistics.stdev(top1):.1f}") + " | "
                         + ("" if variant.startswith("(c)") or not randoms else _margin(rs, randoms, t["retrain_noise"]))
                         + " |")
        lines.append("")
    return "\n".join(lines)


def _margin(rows: list[dict[str, Any]], randoms: list[dict[str, Any]], noise: float | None) -> str:
    """Mean top-1 of ``rows`` less the randoms', in points, ± the margin noise: one retrain's spread (pooled over
    genotypes) x sqrt(1/n + 1/m) over the n and m retrains the two means average (the suite's rule)."""
    n, m = sum(len(r["top1_each"]) for r in rows), sum(len(r["top1_each"]) for r in randoms)
    margin = 100 * (statistics.fmean(x for r in rows for x in r["top1_each"])
                    - statistics.fmean(x for r in randoms for x in r["top1_each"]))
    return f"{margin:+.1f}" + ("" if noise is None else f" ± {100 * noise * (1 / n + 1 / m) ** 0.5:.1f}")


def study_plot(tasks: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    markers = {"(a)": "o", "(b)": "s", "(c)": "x", "(d)": "^"}
    for ax, t in zip(axes[0], tasks):
        for key, marker in markers.items():
            rs = [r for r in t["rows"] if r["variant"].startswith(key)]
            if rs:
                ax.plot([r["gflops"] * 1e3 for r in rs], [100 * r["top1"] for r in rs], marker, ls="none",
                        label=rs[0]["variant"])
        for b in t["budgets_gflops"]:
            ax.axvline(b * 1e3, ls="--", color="#999999")
        ax.set_xlabel("MFLOPs per view (demo network)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{t['task']} ({t['role']})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("derive")
    d.add_argument("run")
    d.add_argument("--preset", default="L")
    d.add_argument("--frames", type=int)
    d.add_argument("--size", type=int)
    d.add_argument("--budgets", type=int, default=10)
    t = sub.add_parser("target")
    t.add_argument("--data", required=True)
    t.add_argument("--preset", default="demo")
    t.add_argument("--targets", type=float, nargs="+", required=True)
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--jobs", type=int, default=2)
    t.add_argument("--baseline", action="store_true", help="Also the searches without a target.")
    t.add_argument("--weight", type=float, help="The term's weight (default: the remedy's WEIGHT).")
    s = sub.add_parser("step")
    s.add_argument("--preset", default="demo")
    s.add_argument("--target", type=float, default=0.005)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--threads", type=int, default=1)
    y = sub.add_parser("study")
    y.add_argument("--tasks", nargs="+", default=["appearance", "order"], help="the first: the tuning task")
    y.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    y.add_argument("--fractions", type=float, nargs="+", default=[1 / 3, 2 / 3])
    y.add_argument("--budget-seeds", type=int, nargs="+",
                   help="the plain searches whose mean cost sets the budgets (default: all of --seeds; to add seeds to "
                        "a study at its budgets, give its first seeds)")
    y.add_argument("--randoms", type=int, default=5)
    y.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1])
    y.add_argument("--epochs", type=int, help="retrain epochs (default: the task's, 30 but order's and fine_motion's 60)")
    y.add_argument("--search-epochs", type=int, help="search epochs (default: the demo preset's)")
    y.add_argument("--jobs", type=int, default=2)
    y.add_argument("--quick", action="store_true", help="tiny data and budget (search_quality's --quick)")
    for p in (d, t, s, y):
        p.add_argument("--out", required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    {"derive": check_derive, "target": check_target, "step": check_step, "study": check_study}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
