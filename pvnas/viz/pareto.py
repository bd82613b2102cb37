"""``pvnas pareto``: the best genotype of one search at a sweep of budgets, from the cheapest reachable network to the
unconstrained one (docs/design.md, "Budgets"), as ``pareto.json``, ``pareto.md`` and ``pareto.png``.

Each point is the exact budgeted derivation (:meth:`~pvnas.space.genotype.Genotype.derive` with a budget) with its MACs and parameters
counted from the retrained network's modules (:mod:`pvnas.metrics.cost`) and its alpha score, also as a share of the
unconstrained genotype's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pvnas.config import NetworkConfig  # noqa: E402
from pvnas.errors import ConfigError  # noqa: E402
from pvnas.metrics.cost import network_costs  # noqa: E402
from pvnas.runtime.rundir import atomic_write_bytes, load_yaml  # noqa: E402
from pvnas.search.remedies import derive_options  # noqa: E402
from pvnas.search.snapshots import load_alphas, run_remedies, saved_epoch  # noqa: E402
from pvnas.space.budget import Budget, front, genotype_score  # noqa: E402
from pvnas.space.genotype import Genotype  # noqa: E402

FORMAT = "pvnas-pareto/1"
PAPER_L = {"gflops": 22.14, "params": 19.65e6, "input": [3, 8, 224, 224]}  # PV-NAS-L, paper Table 1, per view
UNITS = {"gflops": ("macs", 1e9), "params": ("params", 1.0)}


def pareto_sweep(run: Path, cfg: NetworkConfig, preset: str, num_classes: int, frames: int, crop: int,
                 metric: str = "gflops", points: int = 12, epoch: int | None = None) -> dict[str, Any]:
    """``points`` budgets evenly spaced from the cheapest reachable cost to the unconstrained genotype's, and the
    budgeted genotype at each (the search's own cap on parameter-free edges applies)."""
    if metric not in UNITS:
        raise ConfigError(f"--metric must be one of {', '.join(UNITS)}, got {metric!r}")
    if points < 2:
        raise ConfigError(f"--points must be >= 2, got {points}")
    run = Path(run)
    epoch = saved_epoch(run, epoch)
    config = load_yaml(run / "config.yaml") if (run / "config.yaml").exists() else {}
    cap = derive_options(run_remedies(run / "config.yaml", config, {})).get("max_param_free")
    alphas, edge_weights = load_alphas(run, epoch)
    macs, params = network_costs(cfg, num_classes, frames, crop)
    table = macs if metric == "gflops" else params
    scale = UNITS[metric][1]
    network = f"{preset} C={cfg.channels} K={cfg.repeats} {frames}x{crop}x{crop} {num_classes} classes"
    plain = Genotype.derive(alphas, edge_weights=edge_weights, max_param_free=cap)
    whole = front(alphas, [table], edge_weights, cap)
    top, low = table.of(plain), float(whole.costs[:, 0].min())
    best = genotype_score(plain, alphas, edge_weights)
    rows = []
    for budget in np.linspace(low, top, points):
        genotype = Genotype.derive(alphas, {"source": "pareto", "run": str(run), "epoch": epoch}, edge_weights, cap,
                                   Budget([(table, float(budget))], network))
        score = genotype_score(genotype, alphas, edge_weights)
        rows.append({f"budget_{metric}": budget / scale, "gflops": macs.of(genotype) / 1e9, "params": int(params.of(genotype)),
                     "score": score, "score_share": score / best, "parameter_free": genotype.parameter_free_edges(),
                     "genotype": genotype.to_dict()})
    return {
        "format": FORMAT, "run": str(run), "epoch": epoch, "metric": metric, "max_param_free": cap,
        "network": {"preset": preset, "channels": cfg.channels, "repeats": cfg.repeats, "stages": list(cfg.stages),
                    "stem_stride": cfg.stem_stride, "input": [3, frames, crop, crop], "num_classes": num_classes},
        "unconstrained": {"gflops": macs.of(plain) / 1e9, "params": int(params.of(plain)), "score": best},
        "front": [{"cost": float(c) / scale, "score": float(s)} for c, s in zip(whole.costs[:, 0], whole.scores)],
        "paper_L": PAPER_L if preset == "L" and [3, frames, crop, crop] == PAPER_L["input"] else None,
        "points": rows,
    }


def write_pareto(data: dict[str, Any], out: Path) -> list[Path]:
    """``out/pareto.json``, ``out/pareto.md`` and ``out/pareto.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "pareto.json", out / "pareto.md", out / "pareto.png"]
    atomic_write_bytes(paths[0], lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
    atomic_write_bytes(paths[1], lambda f: f.write(markdown(data).encode()))
    plot_pareto(data, paths[2])
    return paths


def markdown(data: dict[str, Any]) -> str:
    net, metric = data["network"], data["metric"]
    lines = [f"# Pareto front of {data['run']} (epoch {data['epoch']})", "",
             f"Network: preset {net['preset']}, C={net['channels']}, K={net['repeats']}, input {'x'.join(map(str, net['input']))} "
             f"(GFLOPs = multiply-adds per view / 1e9, as `pvnas flops`), {net['num_classes']} classes; "
             f"cap on parameter-free edges per cell: {data['max_param_free']}.", "",
             f"| budget ({metric}) | GFLOPs | params | alpha score | of unconstrained | parameter-free edges |",
             "|---:|---:|---:|---:|---:|---|"]
    for p in data["points"]:
        free = " ".join(f"{k} {v}" for k, v in p["parameter_free"].items())
        lines.append(f"| {p[f'budget_{metric}']:.4g} | {p['gflops']:.4g} | {p['params']:,} | {p['score']:.4f} | "
                     f"{p['score_share']:.1%} | {free} |")
    u = data["unconstrained"]
    lines += ["", f"Unconstrained (the paper's rule): {u['gflops']:.4g} GFLOPs, {u['params']:,} parameters, "
              f"score {u['score']:.4f}."]
    if data["paper_L"]:
        lines.append(f"Paper's PV-NAS-L: {data['paper_L']['gflops']} GFLOPs, {data['paper_L']['params'] / 1e6:.2f}M parameters.")
    return "\n".join(lines) + "\n"


def plot_pareto(data: dict[str, Any], path: Path) -> Path:
    """Alpha score against GFLOPs and against parameters: the sweep's points, the unconstrained genotype (star)
    and, at the paper's L input, the paper's PV-NAS-L (dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    pts, u = data["points"], data["unconstrained"]
    for ax, key, scale, label in ((axes[0], "gflops", 1.0, "GFLOPs per view"), (axes[1], "params", 1e6, "parameters (M)")):
        if data["metric"] == key:
            ax.step([f["cost"] / scale for f in data["front"]], [f["score"] for f in data["front"]], where="post",
                    color="#bbbbbb", label="exact front")
        ax.plot([p[key] / scale for p in pts], [p["score"] for p in pts], "o", color="#1f77b4", label="budgeted derivations")
        ax.plot([u[key] / scale], [u["score"]], "*", ms=14, color="#d62728", label="unconstrained (paper's rule)")
        if data["paper_L"]:
            ax.axvline(data["paper_L"][key] / scale, ls="--", color="#555555", label="paper's PV-NAS-L")
        ax.set_xlabel(label)
        ax.set_ylabel("alpha score")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{data['run']} epoch {data['epoch']}, preset {data['network']['preset']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
