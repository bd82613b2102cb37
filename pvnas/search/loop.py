"""PV-NAS search (paper Alg. 1): one-level alternation of an alpha step and a weight step.

Per training batch: (1) Adam on alpha with the training loss at the current weights, then
(2) SGD on the weights with the training loss at the *new* alpha. Both use the same batch.
After each epoch the run directory gets the alphas, the derived genotype, collapse statistics
and a checkpoint, so a genotype can be derived from any epoch (paper Table 3).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pvnas import __version__
from pvnas.config import SearchConfig, to_dict
from pvnas.data import build_dataset
from pvnas.data.loader import build_loader
from pvnas.engine.rundir import MetricsLog, load_yaml, rng_state, save_torch, save_yaml, seed_everything, set_rng_state
from pvnas.errors import ConfigError, DataError
from pvnas.search.collapse import collapse_stats, warn_if_collapsed
from pvnas.nn.supernet import DEFAULT_IMPL, supernet_from_config
from pvnas.search.schedule import weight_scheduler
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)


@dataclass
class SearchState:
    """Everything an iteration mutates: model, both optimizers, the weight schedule."""

    model: nn.Module
    alpha_opt: torch.optim.Optimizer
    weight_opt: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    grad_clip: float | None


def make_state(model: nn.Module, cfg: SearchConfig) -> SearchState:
    """Adam(lr 1e-3, betas (0, 0.999)) on alpha, SGD(0.1, momentum 0.9, wd 1e-4) on weights."""
    alpha_opt = torch.optim.Adam(
        model.arch_parameters(), lr=cfg.a_lr, betas=cfg.a_betas, weight_decay=cfg.a_weight_decay
    )
    weight_opt = torch.optim.SGD(
        model.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    scheduler = weight_scheduler(
        weight_opt, cfg.schedule, cfg.epochs, every=cfg.step_every, gamma=cfg.step_gamma, lr=cfg.w_lr, lr_min=cfg.w_lr_min
    )
    return SearchState(model, alpha_opt, weight_opt, scheduler, cfg.grad_clip)


def search_step(state: SearchState, clips: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """One iteration of Alg. 1 on one batch; returns (weight-step loss, weight-step accuracy)."""
    model = state.model
    arch = state.alpha_opt.param_groups[0]["params"]
    weights = state.weight_opt.param_groups[0]["params"]
    # 1. alpha_t <- alpha_{t-1} - d/dalpha L_train(w_{t-1}, alpha_{t-1}); no weight gradient is computed
    F.cross_entropy(model(clips), labels).backward(inputs=arch)
    state.alpha_opt.step()
    state.alpha_opt.zero_grad(set_to_none=True)
    # 2. w_t <- w_{t-1} - d/dw L_train(w_{t-1}, alpha_t); no alpha gradient is computed
    logits = model(clips)
    loss = F.cross_entropy(logits, labels)
    loss.backward(inputs=weights)
    if state.grad_clip:
        nn.utils.clip_grad_norm_(weights, state.grad_clip)
    state.weight_opt.step()
    state.weight_opt.zero_grad(set_to_none=True)
    acc = (logits.detach().argmax(1) == labels).float().mean()
    return float(loss.detach()), float(acc)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_search(
    cfg: SearchConfig,
    data: str,
    out: str | Path,
    *,
    resume: bool = False,
    impl: str = DEFAULT_IMPL,
    preset: str = "custom",
) -> Genotype:
    """Search on ``data`` into the run directory ``out``; returns the final derived genotype."""
    out = Path(out)
    if cfg.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {cfg.epochs}")
    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.exists():
        raise ConfigError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
    if not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(f"{out} already holds a run; use --resume to continue it or choose another --out")

    seed_everything(cfg.seed)
    dataset = build_dataset(data, "train", cfg.clip, seed=cfg.seed)
    classes: Sequence[str] = dataset.classes  # type: ignore[attr-defined]
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError(f"--data {data}: the training split has no videos")
    device = _device()
    model = supernet_from_config(cfg, len(classes), impl).to(device)
    state = make_state(model, cfg)
    loader = build_loader(
        dataset, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers,
        drop_last=len(dataset) >= cfg.batch_size,  # type: ignore[arg-type]
    )
    metrics = MetricsLog(out / "metrics.jsonl")
    config_record: dict[str, Any] = {
        "command": "search", "version": __version__, "preset": preset, "data": data, "impl": impl,
        "classes": list(classes), "search": to_dict(cfg),
    }

    start_epoch = 0
    if resume:
        start_epoch = _load_checkpoint(ckpt_path, state, config_record, out)
        metrics.truncate_after("epoch", start_epoch)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config_record, out / "config.yaml")

    skipped: set[str] = set()
    genotype = model.genotype(epoch=start_epoch, dataset=data)
    for epoch in range(start_epoch, cfg.epochs):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        model.train()
        lr = state.weight_opt.param_groups[0]["lr"]
        t0, seen, loss_sum, acc_sum = time.perf_counter(), 0, 0.0, 0.0
        bar = tqdm(loader, desc=f"search {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        for batch in bar:
            skipped.update(s.path for s in batch.skipped)
            if batch.labels.numel() == 0:
                continue
            clips = batch.clips.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            loss, acc = search_step(state, clips, labels)
            n = labels.numel()
            seen, loss_sum, acc_sum = seen + n, loss_sum + loss * n, acc_sum + acc * n
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{acc_sum / seen:.3f}", lr=f"{lr:.2g}")
        bar.close()
        if seen == 0:
            raise DataError(f"--data {data}: no readable video in epoch {epoch + 1} ({len(skipped)} skipped)")
        state.scheduler.step()
        seconds = time.perf_counter() - t0
        ep = epoch + 1
        alphas = model.alpha_dict()
        save_torch(alphas, out / "alphas" / f"epoch_{ep:03d}.pt")
        genotype = Genotype.derive(alphas, meta={"source": "search", "epoch": ep, "dataset": data})
        collapse = collapse_stats(alphas)
        collapsed = warn_if_collapsed(genotype, ep, cfg.schedule)
        record = {
            "epoch": ep, "loss": loss_sum / seen, "acc": acc_sum / seen, "lr": lr,
            "alpha_lr": state.alpha_opt.param_groups[0]["lr"], "seconds": seconds, "clips_per_s": seen / seconds,
            "skipped": len(skipped), **collapse, "collapsed": collapsed, "genotype": genotype.to_dict(),
        }
        metrics.append(record)
        log.info("epoch %d/%d loss %.4f acc %.3f lr %.3g (%.1fs)", ep, cfg.epochs, record["loss"], record["acc"], lr, seconds)
        _save_checkpoint(ckpt_path, state, ep, config_record)
    genotype.save(out / "genotype.json")
    return genotype


def _save_checkpoint(path: Path, state: SearchState, epoch: int, config_record: dict[str, Any]) -> None:
    save_torch(
        {
            "epoch": epoch,
            "model": state.model.state_dict(),
            "alpha_opt": state.alpha_opt.state_dict(),
            "weight_opt": state.weight_opt.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": rng_state(),
            "config": config_record,
        },
        path,
    )


def _load_checkpoint(path: Path, state: SearchState, config_record: dict[str, Any], out: Path) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    saved = dict(ckpt["config"])
    saved_search = {k: v for k, v in saved["search"].items() if k != "epochs"}
    now_search = {k: v for k, v in config_record["search"].items() if k != "epochs"}
    if saved_search != now_search or saved["data"] != config_record["data"]:
        raise ConfigError(
            f"--resume: {path} was written by a different config (data or search settings differ from "
            f"{out / 'config.yaml'}); resume with the same options or start a new --out"
        )
    state.model.load_state_dict(ckpt["model"])
    state.alpha_opt.load_state_dict(ckpt["alpha_opt"])
    state.weight_opt.load_state_dict(ckpt["weight_opt"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    # --epochs may have grown since the checkpoint: the lr of the next epoch follows the new schedule
    for group, base, factor in zip(state.weight_opt.param_groups, state.scheduler.base_lrs, state.scheduler.lr_lambdas):
        group["lr"] = base * factor(int(ckpt["epoch"]))
    set_rng_state(ckpt["rng"])
    if load_yaml(out / "config.yaml").get("search", {}).get("epochs") != config_record["search"]["epochs"]:
        save_yaml(config_record, out / "config.yaml")
    return int(ckpt["epoch"])
