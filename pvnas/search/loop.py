"""PV-NAS search (paper Alg. 1): one-level alternation of an alpha step and a weight step.

Per training batch: (1) Adam on alpha with the training loss at the current weights, then
(2) SGD on the weights with the training loss at the *new* alpha. Both use the same batch.
The weight lr is set before every step from a pure function of progress (step / total steps,
:mod:`pvnas.search.schedule`); the first ``a_warmup`` of the steps train the weights only. After each
epoch the run directory gets the alphas, the derived genotype, collapse statistics and a checkpoint,
so a genotype can be derived from any epoch (paper Table 3).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pvnas import __version__
from pvnas.config import RunOptions, SearchConfig, override, to_dict
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
from pvnas.engine.rundir import save_torch, seed_everything
from pvnas.engine.run import Run
from pvnas.engine.tensorboard import TensorBoard
from pvnas.errors import ConfigError, DataError
from pvnas.nn.supernet import supernet_from_config
from pvnas.search.collapse import collapse_stats, warn_if_collapsed
from pvnas.search.schedule import ConvergenceMonitor, alpha_active, alpha_lr, lr_at
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)


@dataclass
class SearchState:
    """Everything an iteration mutates: model and both optimizers."""

    model: nn.Module
    alpha_opt: torch.optim.Optimizer
    weight_opt: torch.optim.Optimizer
    grad_clip: float | None


def make_state(model: nn.Module, cfg: SearchConfig) -> SearchState:
    """Adam(lr 1e-3, betas (0, 0.999)) on alpha, SGD(0.1, momentum 0.9, wd 1e-4) on weights (the config's values)."""
    alpha_opt = torch.optim.Adam(
        model.arch_parameters(), lr=cfg.a_lr, betas=cfg.a_betas, weight_decay=cfg.a_weight_decay
    )
    weight_opt = torch.optim.SGD(
        model.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    return SearchState(model, alpha_opt, weight_opt, cfg.grad_clip)


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
    state: SearchState, clips: torch.Tensor, labels: torch.Tensor, env: DistEnv = DistEnv(), update_alpha: bool = True
) -> tuple[float, float, bool]:
    """One iteration of Alg. 1 on one batch: (weight-step loss, accuracy, whether both losses were finite).

    ``update_alpha=False`` is the weights-only warm-up: step 1 is skipped. A non-finite loss (on any rank)
    skips that update, so one bad batch cannot poison alpha or w.
    """
    model = state.model
    arch = state.alpha_opt.param_groups[0]["params"]
    weights = state.weight_opt.param_groups[0]["params"]
    finite = True
    if update_alpha:
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
    options: RunOptions = RunOptions(),
    *,
    preset: str = "custom",
) -> SearchResult:
    """Search on ``data`` into the run directory ``out``; returns the final genotype and alphas.

    Works alone or under ``torchrun`` (one process per device). ``options`` says whether to resume or
    replace a run in ``out`` and how often to checkpoint; SIGTERM/SIGINT checkpoint and raise
    :class:`~pvnas.engine.run.Preempted`.
    """
    env = init_distributed()
    run = Run(out, "search", options, env)
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
    model = supernet_from_config(cfg, len(classes)).to(env.device)
    broadcast_module(model, env)
    # the paper's lr is per GPU: gradients are averaged, so the weight lr scales with the world size
    scaled = override(cfg, w_lr=cfg.w_lr * env.world, w_lr_min=cfg.w_lr_min * env.world)
    state = make_state(model, scaled)
    loader = build_loader(
        dataset, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, drop_last=True,
        rank=env.rank, world=env.world,
    )
    steps_per_epoch = -(-len(dataset) // env.world) // cfg.batch_size  # type: ignore[arg-type]
    total_steps = steps_per_epoch * cfg.epochs
    monitor = ConvergenceMonitor(round(cfg.converge_window * total_steps), cfg.converge_tol)
    record: dict[str, Any] = {
        "command": "search", "version": __version__, "preset": preset, "data": data,
        "world_size": env.world, "classes": list(classes), "search": to_dict(cfg),
    }
    run.start(record, {"model": model, "alpha_opt": state.alpha_opt, "weight_opt": state.weight_opt,
                       "converge": monitor}, mutable={"search.epochs", "search.workers"})
    for group in state.alpha_opt.param_groups:  # after start(): a resume's --epochs may differ from the checkpoint's
        group["lr"] = alpha_lr(cfg, total_steps)
    board = TensorBoard(run.out, options.tensorboard and env.is_main)
    lr = [0.0]

    def step(batch: Any) -> tuple[float, float, bool]:
        t = run.progress.epoch * steps_per_epoch + run.progress.step - 1  # global index of this step
        lr[0] = lr_at(scaled, t / total_steps, monitor.decays)
        for group in state.weight_opt.param_groups:
            group["lr"] = lr[0]
        active = alpha_active(cfg, t / total_steps)
        result = search_step(state, batch.clips.to(env.device, non_blocking=True),
                             batch.labels.to(env.device, non_blocking=True), env, update_alpha=active)
        if active and cfg.schedule == "converge" and monitor.observe(t + 1, model.alpha_dict()):
            log.info("converge: the alphas converged at step %d of %d: weight lr x%g (decay %d)",
                     t + 1, total_steps, cfg.step_gamma, monitor.decays)
        return result

    def end_epoch(epoch: int) -> dict[str, Any]:
        alphas = model.alpha_dict()
        check_same_on_all_ranks(alphas.values(), "alphas", env)
        genotype = model.genotype(epoch=epoch + 1, dataset=data)
        if env.is_main:
            save_torch(alphas, run.out / "alphas" / f"epoch_{epoch + 1:03d}.pt")
            if model.betas:  # PC-DARTS edge normalisation: the edge weights rank edges at derivation
                save_torch(model.edge_weight_dict(), run.out / "alphas" / f"edges_{epoch + 1:03d}.pt")
            board.alphas(alphas, epoch + 1)
        p = run.progress
        t = (epoch + 1) * steps_per_epoch
        record = {
            "epoch": epoch + 1, "loss": p.loss_sum / p.seen, "acc": p.acc_sum / p.seen, "lr": lr[0],
            "alpha_lr": state.alpha_opt.param_groups[0]["lr"], "alpha_active": alpha_active(cfg, (t - 1) / total_steps),
            **({"decays": monitor.decays} if cfg.schedule == "converge" else {}),
            "seconds": p.seconds, "clips_per_s": p.seen / max(p.seconds, 1e-9), "skipped": len(p.skipped),
            "skipped_files": p.skipped[:100], **collapse_stats(alphas),
            "collapsed": warn_if_collapsed(genotype, epoch + 1, cfg.schedule), "genotype": genotype.to_dict(),
        }
        log.info("epoch %d/%d loss %.4f acc %.3f lr %.3g (%.1fs)", epoch + 1, cfg.epochs, record["loss"],
                 record["acc"], lr[0], p.seconds)
        return record

    run.loop(cfg.epochs, loader, step, end_epoch, begin_epoch=lambda epoch: model.train(), lr=lambda: lr[0],
             data=data, board=board)
    board.close()
    genotype = model.genotype(epoch=run.progress.epoch, dataset=data)
    if env.is_main:
        genotype.save(run.out / "genotype.json")
    return SearchResult(genotype, model.alpha_dict())
