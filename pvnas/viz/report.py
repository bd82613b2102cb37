"""One self-contained HTML report per run directory: config, figures, genotype, cost, accuracy, and the answer
to the first question about it: a search's verdict (did the alphas move, did a cell collapse), a retrain's
diagnosis (did it learn, and if not, the likely cause), per-class accuracy and the confusion matrix.

Images are inlined as base64 so the file can be mailed or attached to a paper draft as is.
A directory holding several runs (e.g. the demo's search/, train/, random/) gets one section each.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from pvnas.config import NETWORK_PRESETS, NetworkConfig
from pvnas.errors import PvnasError
from pvnas.metrics.flops import count_flops
from pvnas.nn.network import network_from_config
from pvnas.retrain.evaluate import per_class
from pvnas.retrain.modelfile import load_model
from pvnas.runtime.rundir import MetricsLog, atomic_write_bytes, load_yaml
from pvnas.space.genotype import Genotype
from pvnas.space.ops import ops_for
from pvnas.viz.plots import confusions, find_evals, plot_run

# a cell kind whose mean alpha entropy fell by less than this share of ln(#ops) (the way from undecided to one op
# per edge) is still undecided: every op of its mixtures weighs about the same
UNDECIDED_SHARE = 0.01

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #aaa;margin-top:2em}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:12px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}th{background:#eee}
.muted{color:#777}
"""


BUDGET_KEYS = ("target_", "expected_", "derived_")  # a --target-* search's per-epoch costs (pvnas.search.remedies.budget)


def _is_run(path: Path) -> bool:
    return (path / "metrics.jsonl").exists() or (path / "config.yaml").exists() or (path / "genotype.json").exists()


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def search_verdict(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Did a search's alphas move, did a cell collapse, when did the derivation last change: from its metrics.

    ``undecided``: the cell kinds whose entropy drop is below :data:`UNDECIDED_SHARE` of ln(#ops);
    ``collapsed``: those the last epoch's derivation left mostly parameter-free (the search's own warning);
    ``settled_at``: the first epoch from which the derived genotype no longer changed; ``text``: one paragraph.
    """
    last = records[-1]
    drops: dict[str, float] = last.get("entropy_drop", {})
    undecided = [k for k, d in drops.items() if d < UNDECIDED_SHARE * math.log(len(ops_for(k)))]
    collapsed = list(last.get("collapsed") or [])
    genotypes = [r.get("genotype") for r in records]
    settled = next(i for i in range(len(genotypes), 0, -1) if i == 1 or genotypes[i - 2] != genotypes[-1])
    settled_at = records[settled - 1]["epoch"]
    shown = ", ".join(f"{k} {d:.3g}" for k, d in drops.items())
    if drops and len(undecided) == len(drops):
        text = (f"The alphas barely moved: every cell's entropy drop ({shown} nats) is below "
                f"{UNDECIDED_SHARE:.0%} of ln(#ops), so each mixture still weighs its ops about equally and the derived "
                "cells rest on small differences another seed may reverse. Search longer (--epochs) or move the "
                "alphas further (--alpha-lr-budget).")
    elif undecided:
        text = (f"The alphas moved in {', '.join(k for k in drops if k not in undecided)} but barely in "
                f"{', '.join(undecided)} (entropy drop {shown} nats; below {UNDECIDED_SHARE:.0%} of ln(#ops) counts as "
                "undecided).")
    else:
        text = f"The alphas moved in every cell (entropy drop {shown} nats)."
    if collapsed:
        text += (f" Collapse: {', '.join(collapsed)} derive{'s' if len(collapsed) == 1 else ''} mostly parameter-free "
                 "ops (identity/pool; paper Fig. 4): see the README's \"Searching at a small budget\".")
    elif drops:
        text += " No cell collapsed (at most half of each derived cell is identity/pool)."
    if len(records) > 1:
        text += (f" The derived genotype last changed at epoch {settled_at} of {last['epoch']}." if settled_at > 1
                 else " The derived genotype did not change after the first epoch.")
    return {"undecided": undecided, "collapsed": collapsed, "settled_at": settled_at, "text": text}


def _matching_network_preset(search_preset: str | None) -> str:
    """The retrain preset of a search preset's name (tiny -> tiny, demo -> demo), else the paper's L."""
    return search_preset if search_preset in NETWORK_PRESETS else "L"


def run_cost(run: Path, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Params and GMACs per view (the paper's "GFLOPs") of what the run made: the trained model (``model.pt``),
    or a search's derived genotype built as the matching retrain preset with the search's classes."""
    if (run / "model.pt").exists():
        trained = load_model(run / "model.pt")
        clip = trained.config.clip
        cost = count_flops(trained.model, (3, clip.frames, clip.crop, clip.crop))
        return [{"network": f"trained ({trained.preset})", "params": cost["params"], "GMACs per view": cost["gmacs"],
                 "clip": f"{clip.frames}x{clip.crop}x{clip.crop}"}]
    if (run / "genotype.json").exists() and config.get("command") == "search" and config.get("classes"):
        preset = _matching_network_preset(config.get("preset"))
        cfg: NetworkConfig = NETWORK_PRESETS[preset]
        model = network_from_config(Genotype.load(run / "genotype.json"), cfg, len(config["classes"]))
        cost = count_flops(model, (3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop))
        return [{"network": f"derived, as `pvnas train --preset {preset}`", "params": cost["params"],
                 "GMACs per view": cost["gmacs"], "clip": f"{cfg.clip.frames}x{cfg.clip.crop}x{cfg.clip.crop}"}]
    return []


def _diagnosis(records: Sequence[Mapping[str, Any]]) -> str:
    """Every diagnosis the retrain recorded (the last epoch's, and any earlier warning), as written."""
    parts = []
    for r in records:
        found = r.get("diagnosis")
        if not isinstance(found, Mapping):
            continue
        head = ("learned" if found.get("learned") else "did not learn") if "learned" in found else "diagnosis"
        causes = found.get("causes") or []
        details = {k: v for k, v in found.items() if k not in ("learned", "causes")}
        parts.append(f"<p><b>epoch {r.get('epoch')}: {html.escape(head)}</b> "
                     + html.escape(", ".join(f"{k} {_fmt(v)}" for k, v in details.items())) + "</p>"
                     + ("<ul>" + "".join(f"<li>{html.escape(str(c))}</li>" for c in causes) + "</ul>" if causes else ""))
    return "<h3>Diagnosis</h3>" + "".join(parts) if parts else ""


def _per_class(run: Path, plots: Mapping[str, Path]) -> str:
    parts = []
    for name, (matrix, classes) in confusions(run).items():
        rows = sorted(({"class": c, **v} for c, v in per_class(matrix, classes).items()),
                      key=lambda r: (r["top1"] is None, r["top1"] if r["top1"] is not None else 0.0))
        what = "last validation (single view)" if name == "val" else name
        parts.append(f"<h4>{html.escape(what)}</h4><p>Worst first.</p>" + _table(rows, ["class", "top1", "videos"]))
        if f"confusion_{name}.png" in plots:
            parts.append(_img(plots[f"confusion_{name}.png"]))
    return "<h3>Per-class accuracy</h3>" + "".join(parts) if parts else ""


def _section(run: Path, title: str) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"]
    plots = {p.name: p for p in plot_run(run)}
    config: dict[str, Any] = {}
    if (run / "config.yaml").exists():
        config = load_yaml(run / "config.yaml")
        restarts = config.get("restarts") or []
        if restarts:
            parts.append(f"<p>Restarted {len(restarts)} time{'s' if len(restarts) > 1 else ''}: "
                         + html.escape("; ".join(f"{r.get('time')} from {r.get('from')} (epoch {r.get('epoch')}, "
                                                 f"step {r.get('step')})" for r in restarts)) + ".</p>")
        parts.append("<h3>Config</h3>" + _pre(yaml.safe_dump(config, sort_keys=False)))
    if (run / "genotype.json").exists():
        genotype = Genotype.load(run / "genotype.json")
        parts.append("<h3>Genotype</h3>" + _pre(genotype.describe()))
        if "cells.png" in plots:
            parts.append(_img(plots["cells.png"]))
        parts.append("<details><summary>genotype.json</summary>" + _pre(json.dumps(genotype.to_dict(), indent=2)) + "</details>")
    try:
        cost = run_cost(run, config)
    except PvnasError as exc:  # an unreadable model.pt or genotype: the rest of the report still helps
        cost, parts = [], parts + [f"<h3>Cost</h3><p>not counted: {html.escape(str(exc))}</p>"]
    if cost:
        parts.append("<h3>Cost</h3><p class='muted'>GMACs: multiply-adds / 1e9 per view, what the paper's "
                     "Table 1 calls GFLOPs.</p>" + _table(cost, list(cost[0])))
    if (run / "pareto.json").exists():
        parts.append(_pareto(run))
    records = MetricsLog(run / "metrics.jsonl").read()
    if records and "entropy_drop" in records[-1]:
        parts.append("<h3>Verdict</h3><p>" + html.escape(search_verdict(records)["text"]) + "</p>")
    if records:
        parts.append(_diagnosis(records))
    if records:
        total = sum(r.get("seconds", 0.0) for r in records)
        parts.append(f"<h3>Training</h3><p>{len(records)} epochs, {total:.1f} s in total "
                     f"({total / len(records):.1f} s per epoch).</p>")
        columns = [c for c in ("epoch", "loss", "acc", "val_top1", "val_top5", "lr", "grad_norm", "clips_per_s", "seconds",
                               "skipped") if any(c in r for r in records)]
        parts.append(_table(records, columns))
        for r in records:  # a retrain that looked like failing, and one that did not learn, say so here too
            if warning := r.get("early_warning"):
                parts.append(f"<p><b>Early warning (epoch {r['epoch']}): this retrain looks {html.escape(warning['kind'])}"
                             f"</b>: {html.escape(warning['saw'])}. Try: {html.escape(warning['try'])}</p>")
            if (diagnosis := r.get("diagnosis")) and not diagnosis["learned"]:
                parts.append("<p><b>The network did not learn</b>: " + html.escape("; ".join(diagnosis["causes"])) + "</p>")
        if "entropy_drop" in records[0]:  # a search: how far the alphas moved, how parameter-free each cell derives
            kinds = list(records[0]["entropy_drop"])
            rows = [{"epoch": r["epoch"], **{f"drop {k}": f"{r['entropy_drop'][k]:.3f}" for k in kinds},
                     **{f"param-free {k}": round(8 * r["param_free_share"][k]) for k in kinds},
                     **{k.replace("_", " "): v for k, v in r.items() if k.startswith(BUDGET_KEYS)}} for r in records]
            budget = (" Target, expected, derived: a --target-* search's budget, the network's expected cost under "
                      "softmax(alpha), the exact cost of the paper's rule's genotype (the derivation keeps within the "
                      "target)." if any(k.startswith(BUDGET_KEYS) for k in records[-1]) else "")
            parts.append("<h3>Alphas</h3><p>Entropy drop: ln(#ops) minus the mean alpha entropy (nats; 0 = undecided). "
                         f"Param-free: identity/pool edges of the cell derived at that epoch, of 8.{budget}</p>"
                         + _table(rows, list(dict.fromkeys(k for r in rows for k in r))))
        for name in ("curves.png", "collapse.png", "alphas_final.png"):
            if name in plots:
                parts.append(_img(plots[name]))
        evolution = sorted(n for n in plots if n.startswith("alphas_") and n != "alphas_final.png")
        if evolution:
            parts.append("<h3>Alpha evolution</h3>" + "".join(_img(plots[n]) for n in evolution))
        skipped = sorted({f for r in records for f in r.get("skipped_files", [])})
        parts.append(f"<h3>Skipped videos</h3><p>{records[-1].get('skipped', 0)} skipped</p>"
                     + (_pre("\n".join(skipped)) if skipped else ""))
    evals = find_evals(run)
    if evals:
        rows = [{"eval": name, **{k: v for k, v in result.items() if not isinstance(v, (dict, list))}}
                for name, result in evals.items()]
        columns = list(dict.fromkeys(k for r in rows for k in r))
        parts.append("<h3>Evaluation</h3>" + _table(rows, columns))
        if "views.png" in plots:
            parts.append(_img(plots["views.png"]))
    parts.append(_per_class(run, plots))
    return "\n".join(parts)


def _pareto(run: Path) -> str:
    """``pvnas pareto``'s front: the budgeted genotypes' costs and alpha scores, and its plot."""
    data = json.loads((run / "pareto.json").read_text())
    metric, u = data["metric"], data["unconstrained"]
    rows = [{f"budget ({metric})": p[f"budget_{metric}"], "GFLOPs": p["gflops"], "params": f"{p['params']:,}",
             "alpha score": p["score"], "of unconstrained": f"{p['score_share']:.1%}"} for p in data["points"]]
    text = (f"<h3>Pareto front</h3><p>Exact budgeted derivations at {len(rows)} budgets (epoch {data['epoch']}, preset "
            f"{html.escape(str(data['network']['preset']))}, input {'x'.join(map(str, data['network']['input']))}); "
            f"unconstrained: {u['gflops']:.4g} GFLOPs, {u['params']:,} parameters.</p>" + _table(rows, list(rows[0])))
    return text + (_img(run / "pareto.png") if (run / "pareto.png").exists() else "")


def _summary(summary: dict[str, Any]) -> str:
    """The demo's comparison at a glance: one row per model, the search's alpha entropy drop, the verdict."""
    models = [name for name in ("searched", "random") if name in summary]
    rows = [{
        "model": name, "top-1 (%)": f"{100 * summary[name]['top1']:.1f}", "top-5 (%)": f"{100 * summary[name]['top5']:.1f}",
        "params": f"{summary[name]['params']:,}", "GMACs per view": summary[name].get("gmacs", summary[name].get("gflops")),  # (0.1: gflops)
        "parameter-free edges (S-NC/S-RC/T-NC/T-RC)": "/".join(map(str, summary[name]["param_free_edges"].values())),
        "learned": "yes" if summary[name]["learned"] else "no: " + "; ".join(summary[name]["causes"]),
    } for name in models]
    verdict = {"searched": "the searched architecture wins", "random": "the random architecture wins",
               "tie": "searched and random tie"}[summary["winner"]]
    search = summary["search"]
    drops = [{"cell": kind, "entropy drop (nats)": f"{drop:.3f}"} for kind, drop in search["entropy_drop"].items()]
    return (f"<h2>Summary</h2><p><b>{html.escape(verdict)}</b> (top-1, then top-5) on {html.escape(summary['data'])}, "
            f"{html.escape(summary['views'])} views per video, clips {html.escape(summary['clip'])}.</p>"
            + _table(rows, list(rows[0]))
            + f"<p>The search ({search['epochs']} epochs, {html.escape(search['schedule'])} schedule) moved its alphas "
              "this far from undecided (0; ln(#ops) would be one op per edge):</p>"
            + _table(drops, ["cell", "entropy drop (nats)"])
            + "<p class='muted'>" + ", ".join(f"{k.removesuffix('_s')}: {v:.0f} s" for k, v in summary["timings"].items())
            + "</p>")


def build_report(run: Path, out: Path | None = None) -> Path:
    """Write ``run/report.html`` (or ``out``) covering ``run`` and every run directly inside it."""
    run = Path(run)
    runs = [run] if _is_run(run) else []
    runs += [p for p in sorted(run.iterdir()) if p.is_dir() and _is_run(p)]
    if not runs:
        from pvnas.errors import ConfigError

        raise ConfigError(f"{run}: no run found (expected metrics.jsonl, config.yaml or genotype.json)")
    summary = run / "summary.json"
    body = [f"<h1>pvnas report: {html.escape(run.name)}</h1>",
            f'<p class="muted">{html.escape(str(run.resolve()))}</p>']
    if summary.exists():
        body.append(_summary(json.loads(summary.read_text())))
    body += [_section(r, r.name if r != run else "run") for r in runs]
    out = Path(out) if out else run / "report.html"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>pvnas report {html.escape(run.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    atomic_write_bytes(out, lambda f: f.write(page.encode()))
    return out
