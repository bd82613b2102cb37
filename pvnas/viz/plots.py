"""The figures a NAS paper needs, from a run directory's files alone (no live objects).

Each function reads what the run wrote (``alphas/``, ``metrics.jsonl``, ``config.yaml``, ``genotype.json``,
``eval_*.json``) and writes one PNG; :func:`plot_run` makes every figure the run supports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pvnas.runtime.rundir import MetricsLog, load_yaml  # noqa: E402
from pvnas.errors import ConfigError  # noqa: E402
from pvnas.search.collapse import drop_from  # noqa: E402
from pvnas.search.snapshots import alpha_history, saved_epochs  # noqa: E402
from pvnas.space.genotype import NODES, Genotype, edge_inputs  # noqa: E402
from pvnas.space.ops import CELL_KINDS, PARAMETER_FREE, ops_for  # noqa: E402

log = logging.getLogger(__name__)

OP_COLORS = {
    "zero": "#bbbbbb", "identity": "#7f7f7f", "avg_pool_1x3x3": "#bcbd22", "max_pool_1x3x3": "#ff7f0e",
    "sep_conv_1x3x3": "#1f77b4", "dil_conv_1x3x3": "#2ca02c", "conv_3x3x3": "#d62728", "conv_3x1x1": "#9467bd",
}


def plot_alpha_evolution(epochs: Sequence[int], history: dict[str, torch.Tensor], out: Path) -> list[Path]:
    """Per cell kind, 14 small multiples: the softmax weight of every op on the edge over epochs
    (``history``: :func:`~pvnas.search.snapshots.alpha_history`)."""
    paths = []
    for kind, w in history.items():
        ops = ops_for(kind)
        fig, axes = plt.subplots(2, 7, figsize=(17, 5), sharex=True, sharey=True)
        for e, (ax, (node, j)) in enumerate(zip(axes.flat, edge_inputs())):
            for o, name in enumerate(ops):
                ax.plot(epochs, w[:, e, o].numpy(), color=OP_COLORS[name], lw=1.6, label=name,
                        ls="--" if name in PARAMETER_FREE else "-")
            ax.set_title(f"{j} -> node {node}", fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("epoch")
        for ax in axes[:, 0]:
            ax.set_ylabel("softmax weight")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(ops), fontsize=9, frameon=False)
        fig.suptitle(f"{kind}: op weights per edge over the search (dashed: parameter-free)")
        # fixed margins: tight_layout over 14 axes cost as much as rendering them
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.2, top=0.87, wspace=0.08, hspace=0.3)
        paths.append(_save(fig, out / f"alphas_{kind}.png"))
    return paths


def plot_alpha_heatmap(epochs: Sequence[int], history: dict[str, torch.Tensor], out: Path) -> Path:
    """Final-epoch softmax weights of all four cell kinds as heatmaps (edges x ops)."""
    fig, axes = plt.subplots(1, 4, figsize=(18, 5))
    for ax, (kind, w) in zip(axes, history.items()):
        ops = ops_for(kind)
        im = ax.imshow(w[-1].numpy(), cmap="viridis", vmin=0, aspect="auto")
        ax.set_xticks(range(len(ops)), [o.replace("_1x3x3", "") for o in ops], rotation=60, fontsize=8)
        ax.set_yticks(range(14), [f"{j}->{n}" for n, j in edge_inputs()], fontsize=8)
        ax.set_title(f"{kind} (epoch {epochs[-1]})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, out / "alphas_final.png")


OP_LABELS = {"identity": "skip", "avg_pool_1x3x3": "avg 3x3", "max_pool_1x3x3": "max 3x3", "sep_conv_1x3x3": "sep 3x3",
             "dil_conv_1x3x3": "dil 3x3", "conv_3x3x3": "3+3x3", "conv_3x1x1": "3+1x1"}


def plot_cells(genotype: Genotype, out: Path) -> Path:
    """The four derived cells as DAGs laid out left to right as DARTS' graphviz plots: inputs c_{k-2}, c_{k-1},
    nodes 0..3, output c_{k} (concat); edges coloured by op and labelled without overlaps."""
    fig, axes = plt.subplots(2, 2, figsize=(15, 8.5))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.92, bottom=0.1, hspace=0.15, wspace=0.05)  # before drawing: pixels
    for ax, kind in zip(axes.flat, CELL_KINDS):
        _draw_cell(ax, genotype.cells[kind].edges, kind)
    used = sorted({op for cell in genotype.cells.values() for op, _ in cell.edges}, key=list(OP_COLORS).index)
    handles = [plt.Line2D([], [], color=OP_COLORS[op], lw=2.5, ls="--" if op in PARAMETER_FREE else "-") for op in used]
    fig.legend(handles, [f"{OP_LABELS[op]} = {op}" for op in used], loc="lower center", ncol=min(4, len(used)),
               fontsize=9, frameon=False)
    fig.suptitle(f"derived cells ({genotype.meta.get('source', 'genotype')}"
                 + (f", epoch {genotype.meta['epoch']}" if "epoch" in genotype.meta else "") + ")")
    return _save(fig, out / "cells.png")


def _cell_layout() -> dict[Any, tuple[float, float]]:
    """Inputs on the left, the 4 nodes zig-zagging left to right, the output on the right."""
    pos: dict[Any, tuple[float, float]] = {0: (0.0, 0.85), 1: (0.0, 0.15), "out": (1.0, 0.5)}
    for k in range(NODES):
        pos[2 + k] = (0.25 + 0.19 * k, 0.68 if k % 2 == 0 else 0.32)
    return pos


def _spread(labels: list[list[Any]], fixed: Sequence[tuple[float, float]], height: float = 0.075,
            width_per_char: float = 0.0105) -> None:
    """Push label boxes ``[x, y, n_chars, ...]`` apart vertically, and off the ``fixed`` node centres, until none
    overlap (a few passes of pairwise pushes)."""
    def overlap(a: Sequence[Any], b: Sequence[Any]) -> bool:
        return abs(a[0] - b[0]) < (a[2] + b[2]) * width_per_char / 2 + 0.01 and abs(a[1] - b[1]) < height

    nodes = [[x, y, 5] for x, y in fixed]
    for _ in range(60):
        moved = False
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                if overlap(a, b):
                    shift = (height - abs(a[1] - b[1])) / 2 + 0.002
                    up, down = (a, b) if a[1] >= b[1] else (b, a)
                    up[1] += shift
                    down[1] -= shift
                    moved = True
            for n in nodes:
                if overlap(a, n):
                    a[1] += (height - abs(a[1] - n[1]) + 0.002) * (1 if a[1] >= n[1] else -1)
                    moved = True
        if not moved:
            return


def _draw_cell(ax: Any, edges: Sequence[tuple[str, int]], kind: str) -> None:
    pos = _cell_layout()
    names = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"} | {2 + k: str(k) for k in range(NODES)}
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(-0.08, 1.08)
    ax.axis("off")
    to_px, to_data = ax.transData.transform, ax.transData.inverted().transform
    labels = []
    for e, (op, j) in enumerate(edges):
        node = 2 + e // 2
        rad = 0.25 if e % 2 else -0.25
        ax.annotate("", xy=pos[node], xytext=pos[j],
                    arrowprops=dict(arrowstyle="-|>", color=OP_COLORS[op], lw=2, shrinkA=15, shrinkB=15,
                                    ls="--" if op in PARAMETER_FREE else "-", connectionstyle=f"arc3,rad={rad}"))
        # the arc's midpoint, in pixels as matplotlib's arc3 draws it: the chord's midpoint moved by rad/2 of the
        # chord along its normal
        (x0, y0), (x1, y1) = to_px(pos[j]), to_px(pos[node])
        mx, my = to_data(((x0 + x1) / 2 + rad * (y1 - y0) / 2, (y0 + y1) / 2 - rad * (x1 - x0) / 2))
        labels.append([mx, my, len(OP_LABELS[op]), op])
    _spread(labels, list(pos.values()))
    for x, y, _, op in labels:
        ax.text(x, y, OP_LABELS[op], fontsize=9, ha="center", va="center", color=OP_COLORS[op], fontweight="bold",
                bbox=dict(fc="white", ec=OP_COLORS[op], lw=0.6, alpha=0.9, boxstyle="round,pad=0.2"))
    for k in range(NODES):
        ax.annotate("", xy=pos["out"], xytext=pos[2 + k],
                    arrowprops=dict(arrowstyle="-|>", color="#bbbbbb", lw=1, shrinkA=15, shrinkB=18))
    for key, (x, y) in pos.items():
        color = "#c6dbef" if key in (0, 1) else ("#fdd0a2" if key == "out" else "#e5f5e0")
        ax.text(x, y, names[key], ha="center", va="center", fontsize=11, zorder=5,
                bbox=dict(boxstyle="circle,pad=0.4" if key not in (0, 1, "out") else "round,pad=0.4", fc=color, ec="black"))
    ax.set_title(kind, fontsize=12)


def plot_curves(run: Path, out: Path) -> Path:
    """Loss, accuracy (train and validation when logged) and learning rate over epochs."""
    records = MetricsLog(run / "metrics.jsonl").read()
    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(epochs, [r["loss"] for r in records], marker="o", label="train loss")
    if any("val_loss" in r for r in records):
        axes[0].plot(epochs, [r.get("val_loss") for r in records], marker="o", label="val loss")
    for key in ("acc", "val_top1", "val_top5"):
        if any(key in r for r in records):
            axes[1].plot(epochs, [r.get(key) for r in records], marker="o", label=key)
    axes[2].plot(epochs, [r["lr"] for r in records], marker="o", label="weight lr")
    axes[2].set_yscale("log")
    for ax, title in zip(axes, ("loss", "accuracy", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "curves.png")


def plot_collapse(run: Path, out: Path) -> Path:
    """Per cell kind: how far the alphas moved (entropy drop) and the parameter-free share of the derivation
    (paper Fig. 4 signal)."""
    records = MetricsLog(run / "metrics.jsonl").read()
    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for kind in CELL_KINDS:
        axes[0].plot(epochs, [drop_from(kind, r["entropy"][kind]) for r in records], marker="o", label=kind)
        axes[1].plot(epochs, [r["param_free_share"][kind] for r in records], marker="o", label=kind)
    axes[1].axhline(0.5, color="red", ls=":", lw=1, label="collapse warning")
    axes[0].set_title("alpha entropy drop: ln(#ops) - entropy (nats; 0 = undecided)")
    axes[1].set_title("parameter-free share of the derived cell")
    axes[1].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "collapse.png")


def plot_views(evals: dict[str, dict[str, Any]], out: Path) -> Path:
    """Top-1/Top-5 against the number of test views, one line per evaluated model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, result in evals.items():
        by_views = result.get("by_views", {})
        items = sorted(by_views.items(), key=lambda kv: _view_count(kv[0]))
        xs = [_view_count(k) for k, _ in items]
        ax.plot(xs, [v["top1"] for _, v in items], marker="o", label=f"{name} top-1")
        ax.plot(xs, [v["top5"] for _, v in items], marker="s", ls="--", label=f"{name} top-5")
        for (k, v), x in zip(items, xs):
            ax.annotate(k, (x, v["top1"]), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("views per video (clips x crops)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy vs number of views")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "views.png")


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str, out: Path) -> Path:
    """The confusion matrix, rows (true class) normalised to 1: the diagonal is each class's accuracy."""
    counts = np.asarray(confusion, dtype=float)
    rows = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = min(14.0, 3 + 0.3 * len(classes))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 40:  # beyond, the names would overlap: the per-class table names them
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, out)


def confusions(run: Path) -> dict[str, tuple[list[list[int]], list[str]]]:
    """Name -> (confusion matrix, class names) of the run: its last validation (``val``) and each eval file."""
    found = {}
    records = MetricsLog(run / "metrics.jsonl").read()
    if records and "val_confusion" in records[-1] and (run / "config.yaml").exists():
        classes = load_yaml(run / "config.yaml").get("classes") or []
        if len(classes) == len(records[-1]["val_confusion"]):
            found["val"] = (records[-1]["val_confusion"], classes)
    for name, result in find_evals(run).items():
        if "confusion" in result and len(result.get("classes", [])) == len(result["confusion"]):
            found[name] = (result["confusion"], result["classes"])
    return found


def _view_count(views: str) -> int:
    clips, _, crops = views.partition("x")
    return int(clips) * int(crops or 1)


def find_evals(run: Path) -> dict[str, dict[str, Any]]:
    """``eval_*.json`` files directly in ``run``, by name."""
    evals = {}
    for path in sorted(run.glob("eval_*.json")):
        try:
            evals[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it as JSON ({exc})") from None
    return evals


def plot_run(run: Path, out: Path | None = None) -> list[Path]:
    """Every figure the files of ``run`` allow, into ``out`` (default ``run/plots``)."""
    run = Path(run)
    out = Path(out) if out else run / "plots"
    made: list[Path] = []
    if (run / "alphas").is_dir() and saved_epochs(run):
        epochs, history = alpha_history(run)
        made += plot_alpha_evolution(epochs, history, out)
        made.append(plot_alpha_heatmap(epochs, history, out))
    if (run / "genotype.json").exists():
        made.append(plot_cells(Genotype.load(run / "genotype.json"), out))
    records = MetricsLog(run / "metrics.jsonl").read()
    if records:
        made.append(plot_curves(run, out))
        if "entropy" in records[0]:
            made.append(plot_collapse(run, out))
    evals = find_evals(run)
    if evals:
        made.append(plot_views(evals, out))
    for name, (matrix, classes) in confusions(run).items():
        made.append(plot_confusion(matrix, classes, f"confusion ({name})", out / f"confusion_{name}.png"))
    return made


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    log.debug("wrote %s", path)
    return path
