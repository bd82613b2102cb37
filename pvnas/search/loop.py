"""PV-NAS search (paper Alg. 1): one-level alternation of an alpha step and a weight step.

Per training batch: (1) Adam on alpha with the training loss at the current weights, then
(2) SGD on the weights with the training loss at the *new* alpha. Both use the same batch.
After each epoch the run directory gets the alphas, the derived genotype, collapse statistics
and a checkpoint, so a genotype can be derived from any epoch (paper Table 3).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pvnas import __version__
from pvnas.config import SearchConfig, override, to_dict
from pvnas.data import build_dataset
from pvnas.data.loader import build_loader
from pvnas.engine.distributed import (
    DistEnv,
    any_rank,
    average_gradients,
    broadcast_module,
    check_same_on_all_ranks,
    init_distributed,
)
from pvnas.engine.rundir import MetricsLog, rng_state, save_torch, save_yaml, seed_everything, set_rng_state
from pvnas.engine.tensorboard import TensorBoard
from pvnas.engine.runtime import CheckpointTimer, NonFiniteGuard, Progress, StopSignal, run_epoch
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


@contextmanager
def frozen(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """``params`` do not require grad inside: a forward there records no graph for them alone, and custom
    autograd functions (the fast cell's) see in ``needs_input_grad`` that their gradients are not wanted,
    which ``backward(inputs=...)`` cannot tell them."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def search_step(
    state: SearchState, clips: torch.Tensor, labels: torch.Tensor, env: DistEnv = DistEnv()
) -> tuple[float, float, bool]:
    """One iteration of Alg. 1 on one batch: (weight-step loss, accuracy, whether both losses were finite).

    A non-finite loss (on any rank) skips that update, so one bad batch cannot poison alpha or w.
    """
    model = state.model
    arch = state.alpha_opt.param_groups[0]["params"]
    weights = state.weight_opt.param_groups[0]["params"]
    # 1. alpha_t <- alpha_{t-1} - d/dalpha L_train(w_{t-1}, alpha_{t-1}); no weight gradient is computed
    with frozen(weights):
        loss_a = F.cross_entropy(model(clips), labels)
    finite = not any_rank(not torch.isfinite(loss_a).item(), env)
    if finite:
        loss_a.backward(inputs=arch)
        average_gradients(arch, env)
        state.alpha_opt.step()
        state.alpha_opt.zero_grad(set_to_none=True)
    del loss_a
    # 2. w_t <- w_{t-1} - d/dw L_train(w_{t-1}, alpha_t); no alpha gradient is computed
    with frozen(arch):
        logits = model(clips)
    loss = F.cross_entropy(logits, labels)
    finite = finite and not any_rank(not torch.isfinite(loss).item(), env)
    if finite:
        loss.backward(inputs=weights)
        average_gradients(weights, env)
        if state.grad_clip:
            nn.utils.clip_grad_norm_(weights, state.grad_clip)
        state.weight_opt.step()
        state.weight_opt.zero_grad(set_to_none=True)
    acc = (logits.detach().argmax(1) == labels).float().mean()
    return float(loss.detach()), float(acc), finite


@dataclass
class SearchResult:
    genotype: Genotype
    alphas: dict[str, torch.Tensor]  # this process's final alphas (identical on every rank)


def run_search(
    cfg: SearchConfig,
    data: str,
    out: str | Path,
    *,
    resume: bool = False,
    impl: str = DEFAULT_IMPL,
    preset: str = "custom",
    checkpoint_every: float | None = None,
    max_bad_steps: int = 5,
    tensorboard: bool = False,
) -> SearchResult:
    """Search on ``data`` into the run directory ``out``; returns the final genotype and alphas.

    Works alone or under ``torchrun`` (one process per device). ``checkpoint_every`` minutes adds
    timed checkpoints to the per-epoch ones; SIGTERM/SIGINT checkpoint and raise :class:`Preempted`.
    """
    out = Path(out)
    if cfg.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {cfg.epochs}")
    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.exists():
        raise ConfigError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
    if not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(f"{out} already holds a run; use --resume to continue it or choose another --out")

    env = init_distributed()
    seed_everything(cfg.seed)
    dataset = build_dataset(data, "train", cfg.clip, seed=cfg.seed)
    classes: Sequence[str] = dataset.classes  # type: ignore[attr-defined]
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError(f"--data {data}: the training split has no videos")
    if cfg.batch_size * env.world > len(dataset):  # type: ignore[arg-type]
        raise ConfigError(
            f"--batch-size {cfg.batch_size} x {env.world} processes exceeds the {len(dataset)} training videos "  # type: ignore[arg-type]
            f"of {data}; lower --batch-size"
        )
    model = supernet_from_config(cfg, len(classes), impl).to(env.device)
    broadcast_module(model, env)
    # the paper's lr is per GPU: gradients are averaged, so the weight lr scales with the world size
    state = make_state(model, override(cfg, w_lr=cfg.w_lr * env.world, w_lr_min=cfg.w_lr_min * env.world))
    loader = build_loader(
        dataset, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, drop_last=True,
        rank=env.rank, world=env.world,
    )
    metrics = MetricsLog(out / "metrics.jsonl")
    config_record: dict[str, Any] = {
        "command": "search", "version": __version__, "preset": preset, "data": data, "impl": impl,
        "world_size": env.world, "classes": list(classes), "search": to_dict(cfg),
    }

    progress = Progress()
    if resume:
        progress = _load_checkpoint(ckpt_path, state, config_record)
        if env.is_main:
            metrics.truncate_after("epoch", progress.epoch)
            save_yaml(config_record, out / "config.yaml")
    elif env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config_record, out / "config.yaml")

    def checkpoint() -> None:
        if env.is_main:
            _save_checkpoint(ckpt_path, state, progress, config_record)

    board = TensorBoard(out, tensorboard and env.is_main)
    guard = NonFiniteGuard(max_bad_steps)
    timer = CheckpointTimer(checkpoint_every)
    genotype = model.genotype(epoch=progress.epoch, dataset=data)
    with StopSignal() as stop:
        while progress.epoch < cfg.epochs:
            epoch = progress.epoch
            loader.sampler.set_epoch(epoch, start=progress.step * cfg.batch_size)  # type: ignore[attr-defined]
            model.train()
            lr = state.weight_opt.param_groups[0]["lr"]

            def step(batch: Any) -> tuple[float, float, bool]:
                clips = batch.clips.to(env.device, non_blocking=True)
                return search_step(state, clips, batch.labels.to(env.device, non_blocking=True), env)

            run_epoch(
                loader, progress, step, desc=f"search epoch {epoch + 1}/{cfg.epochs}", lr=lambda: lr, env=env,
                guard=guard, stop=stop, timer=timer, checkpoint=checkpoint, data=data,
                resume_hint=f"checkpoint written to {ckpt_path}. Resume with the same command plus --resume",
            )
            state.scheduler.step()
            alphas = model.alpha_dict()
            check_same_on_all_ranks(alphas.values(), "alphas", env)
            genotype = model.genotype(epoch=epoch + 1, dataset=data)
            if env.is_main:
                record = _end_of_epoch(out, metrics, alphas, genotype, progress, state, lr, cfg)
                board.scalars(record, epoch + 1)
                board.alphas(alphas, epoch + 1)
            progress = Progress(epoch=epoch + 1, skipped=progress.skipped)
            checkpoint()
    board.close()
    if env.is_main:
        genotype.save(out / "genotype.json")
    return SearchResult(genotype, model.alpha_dict())


def _end_of_epoch(
    out: Path, metrics: MetricsLog, alphas: dict[str, torch.Tensor], genotype: Genotype,
    progress: Progress, state: SearchState, lr: float, cfg: SearchConfig,
) -> dict[str, Any]:
    """Alphas, genotype, collapse statistics and throughput of the finished epoch (rank 0 only)."""
    ep = progress.epoch + 1
    save_torch(alphas, out / "alphas" / f"epoch_{ep:03d}.pt")
    if state.model.betas:  # PC-DARTS edge normalisation: the edge weights rank edges at derivation
        save_torch(state.model.edge_weight_dict(), out / "alphas" / f"edges_{ep:03d}.pt")
    collapse = collapse_stats(alphas)
    collapsed = warn_if_collapsed(genotype, ep, cfg.schedule)
    record = {
        "epoch": ep, "loss": progress.loss_sum / progress.seen, "acc": progress.acc_sum / progress.seen,
        "lr": lr, "alpha_lr": state.alpha_opt.param_groups[0]["lr"], "seconds": progress.seconds,
        "clips_per_s": progress.seen / max(progress.seconds, 1e-9), "skipped": len(progress.skipped),
        "skipped_files": progress.skipped[:100], **collapse, "collapsed": collapsed, "genotype": genotype.to_dict(),
    }
    metrics.append(record)
    log.info("epoch %d/%d loss %.4f acc %.3f lr %.3g (%.1fs)", ep, cfg.epochs, record["loss"], record["acc"], lr,
             progress.seconds)
    return record


def _save_checkpoint(path: Path, state: SearchState, progress: Progress, config_record: dict[str, Any]) -> None:
    save_torch(
        {
            "progress": asdict(progress),
            "model": state.model.state_dict(),
            "alpha_opt": state.alpha_opt.state_dict(),
            "weight_opt": state.weight_opt.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": rng_state(),
            "config": config_record,
        },
        path,
    )


def _load_checkpoint(path: Path, state: SearchState, config_record: dict[str, Any]) -> Progress:
    """Restore everything; only ``epochs`` may differ from the checkpoint's config (to extend a run)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torn or foreign file
        raise ConfigError(f"--resume: cannot read {path} ({exc})") from None
    saved = ckpt["config"]
    ignore = {"epochs", "workers"}
    saved_search = {k: v for k, v in saved["search"].items() if k not in ignore}
    now_search = {k: v for k, v in config_record["search"].items() if k not in ignore}
    for key, now, then in [("data", config_record["data"], saved["data"]), ("impl", config_record["impl"], saved["impl"]),
                           ("world size", config_record["world_size"], saved["world_size"])] + [
        (f"search.{k}", now_search.get(k), saved_search.get(k)) for k in sorted(set(saved_search) | set(now_search))
    ]:
        if now != then:
            raise ConfigError(
                f"--resume: {path} was written with {key} = {then!r}, this run has {now!r}; "
                "resume with the same options or start a new --out"
            )
    state.model.load_state_dict(ckpt["model"])
    state.alpha_opt.load_state_dict(ckpt["alpha_opt"])
    state.weight_opt.load_state_dict(ckpt["weight_opt"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    progress = Progress(**ckpt["progress"])
    # --epochs may have grown since the checkpoint: the lr of this epoch follows the new schedule
    for group, base, factor in zip(state.weight_opt.param_groups, state.scheduler.base_lrs, state.scheduler.lr_lambdas):
        group["lr"] = base * factor(progress.epoch)
    set_rng_state(ckpt["rng"])
    return progress
