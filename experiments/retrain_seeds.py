#!/usr/bin/env python
"""How much does a retrain's result depend on its seed? Fixed genotypes retrained over seeds, per recipe.

Per task (``--tasks`` of the generated suite, or ``--data SPEC``), genotype (``r0``..``r4``: the random genotypes
of experiments/search_quality.py, or genotype JSON files) and retrain seed: one retrain with the network preset
(``--preset``, default ``demo``) and the study's schedule (``--epochs``, default the task's: 30, ``order`` and
``fine_motion`` 60), with the overrides of ``--set`` (a recipe: e.g. ``dropout=0.4 drop_path=0.1``). The first steps are
instrumented (gradient norm of the stem, each cell and the classifier, the logits' spread, BatchNorm running
variance, the share of units a ReLU after a BatchNorm would zero), so a retrain that fails can be compared with
one that learns where they part.

Reported per task and recipe: each genotype's top-1 per seed, the pooled std over seeds (the retrain noise of
search_quality.py), the genotypes that failed on one seed (within 10 points of chance where another seed
reached chance + 30) and the early check's warnings (pvnas.retrain.diagnose.early_check) on each run's records.
Every run is cached in ``OUT/VARIANT/TASK/GENOTYPE_rSEED/result.json``; an interrupted study resumes.

    python experiments/retrain_seeds.py --tasks motion appearance --genotypes r0 r3 --seeds 0 1 2 \\
        --variant before --set dropout=0.4 drop_path=0.1 --out runs/rs --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from pvnas.config import NETWORK_PRESETS, get_preset, override
from pvnas.data.datasets.tasks import study_slug
from pvnas.data.generators.task_suite import TASKS, retrain_epochs
from pvnas.errors import ConfigError
from pvnas.retrain.diagnose import check_epochs, early_check
from pvnas.space.genotype import Genotype

RANDOM_SEED_BASE = 1000  # as experiments/search_quality.py: random genotype i is Genotype.random(1000 + i, min_conv=4)
PROBED_STEPS = 200  # every step up to here is recorded, then every 20th


def _instrument(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: list[dict[str, Any]]) -> None:
    """Record, before each optimizer step, what differs between a retrain that learns and one that does not."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    parts = {"stem": list(model.stem.parameters()), "head": list(model.classifier.parameters()),
             **{f"cell{i}": list(cell.parameters()) for i, cell in enumerate(model.cells)}}
    logits: dict[str, torch.Tensor] = {}
    model.classifier.register_forward_hook(lambda m, i, o: logits.__setitem__("o", o.detach()))
    count = [0]

    @torch.no_grad()
    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        count[0] += 1
        n = count[0]
        if n > PROBED_STEPS and n % 20:
            return
        rec: dict[str, Any] = {"step": n, "lr": opt.param_groups[0]["lr"]}
        for k, ps in parts.items():
            rec[f"grad_{k}"] = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in ps if p.grad is not None))
        if "o" in logits:
            rec["logit_std"] = float(logits["o"].float().std())
        rec["bn_var_median"] = sorted(float(m.running_var.mean()) for m in bns)[len(bns) // 2] if bns else None
        dead = [float((0.5 * (1 + torch.erf(-m.bias / m.weight.abs().clamp_min(1e-8) / math.sqrt(2)))).mean())
                for m in bns if m.affine]
        rec["relu_zero_share"] = sum(dead) / len(dead) if dead else None  # of a unit ~ N(bias, weight^2)
        steps.append(rec)

    optimizer.register_step_pre_hook(hook)


def run_unit(data: str, name: str, genotype: dict, seed: int, settings: dict, preset: str, epochs: int,
             out: Path) -> dict[str, Any]:
    """One instrumented retrain and its full-validation top-1 (cached in ``out/result.json``)."""
    torch.set_num_threads(1)
    import pvnas.retrain.train as train
    from pvnas.retrain.evaluate import run_eval

    done = out / "result.json"
    if done.exists() and len((cached := json.loads(done.read_text()))["epochs"]) == epochs:
        return cached  # (a run of another length under the same name is redone)
    shutil.rmtree(out, ignore_errors=True)
    network = get_preset(NETWORK_PRESETS, preset)
    cfg = override(network, epochs=epochs, warmup_epochs=min(network.warmup_epochs or 0, epochs - 1), seed=seed,
                   **settings)
    steps: list[dict[str, Any]] = []
    build = train.make_optimizer

    def make_optimizer(model, c):  # the retrain's own optimizer, with the probe attached
        optimizer = build(model, c)
        _instrument(model, optimizer, steps)
        return optimizer

    train.make_optimizer = make_optimizer
    try:
        train.run_train(Genotype.from_dict(genotype), cfg, data, out)
    finally:
        train.make_optimizer = build
    evaluated = run_eval(out / "model.pt", data, views="1x1")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    result = {"data": data, "genotype": name, "seed": seed, "settings": settings, "top1": evaluated["top1"],
              "videos": evaluated["videos"], "classes": len(evaluated["classes"]),
              "epochs": [{k: r.get(k) for k in ("epoch", "loss", "acc", "val_top1", "val_videos", "seen", "lr",
                                                "grad_norm", "early_warning")} for r in records],
              "warmup_epochs": cfg.warmup_epochs, "steps": steps}
    done.write_text(json.dumps(result))
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return result


def _call(unit: tuple) -> dict[str, Any]:
    return run_unit(*unit)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled std over seeds (points), the genotypes that failed on a seed, and the early check's warnings."""
    by_genotype: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_genotype.setdefault(r["genotype"], []).append(r)
    chance = 100 / results[0]["classes"]
    squares = dof = 0.0
    failed, warnings = [], []
    for name, runs in by_genotype.items():
        top1 = [100 * r["top1"] for r in runs]
        mean = sum(top1) / len(top1)
        squares += sum((x - mean) ** 2 for x in top1)
        dof += len(top1) - 1
        if min(top1) <= chance + 10 and max(top1) >= chance + 30:
            failed.append(f"{name} seed {min(runs, key=lambda r: r['top1'])['seed']}")
    for r in results:
        epochs = len(r["epochs"])
        for at in check_epochs(epochs, r["warmup_epochs"] or 0):
            if warning := early_check(r["epochs"][:at], r["classes"], epochs):
                warnings.append(f"{r['genotype']} seed {r['seed']}: epoch {at} {warning['kind']} "
                                f"(final {100 * r['top1']:.1f})")
                break
    return {"pooled_std": math.sqrt(squares / dof) if dof else None, "dof": int(dof), "failed": failed,
            "warnings": warnings, "chance": chance,
            "top1": {n: [round(100 * r["top1"], 1) for r in sorted(rs, key=lambda r: r["seed"])]
                     for n, rs in by_genotype.items()}}


def parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["motion", "appearance"], help="tasks of the suite")
    p.add_argument("--data", help="a dataset spec instead of the suite")
    p.add_argument("--genotypes", nargs="+", default=["r0", "r3"], help="r0..r4 (random genotypes) or JSON files")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retrain seeds")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="network settings (the recipe)")
    p.add_argument("--variant", default="default", help="a name for the recipe (in OUT)")
    p.add_argument("--preset", default="demo", help="network preset")
    p.add_argument("--epochs", type=int, help="retrain epochs (default: the task's, 30 but order's and fine_motion's 60)")
    p.add_argument("--out", type=Path, default=Path("runs/retrain_seeds"))
    p.add_argument("--jobs", type=int, default=1, help="retrains in parallel processes (one torch thread each)")
    args = p.parse_args(argv)
    try:
        settings = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
        override(get_preset(NETWORK_PRESETS, args.preset), **settings)  # bad keys or values: one line, exit 2
        genotypes = {g: (Genotype.random(RANDOM_SEED_BASE + int(g[1:]), min_conv=4).to_dict() if g[:1] == "r"
                         and g[1:].isdigit() else Genotype.load(g).to_dict()) for g in args.genotypes}
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    specs = [args.data] if args.data else [f"task:{t}" for t in args.tasks]
    summary = {}
    for spec in specs:
        units = [(spec, name, g, seed, settings, args.preset, args.epochs or retrain_epochs(spec),
                  args.out / args.variant / study_slug(spec) / f"{Path(name).stem}_r{seed}")
                 for name, g in genotypes.items() for seed in args.seeds]
        if args.jobs > 1:
            with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                results = list(pool.map(_call, units))
        else:
            results = [_call(u) for u in units]
        summary[spec] = s = summarise(results)
        print(f"{spec} {args.variant}: " + "; ".join(f"{n}: {', '.join(map(str, t))}" for n, t in s["top1"].items())
              + f" | pooled std {s['pooled_std'] if s['pooled_std'] is None else round(s['pooled_std'], 1)}"
              + f" | failed: {', '.join(s['failed']) or 'none'} | warnings: {'; '.join(s['warnings']) or 'none'}",
              flush=True)
    (args.out / args.variant).mkdir(parents=True, exist_ok=True)
    (args.out / args.variant / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
