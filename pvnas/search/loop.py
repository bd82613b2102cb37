"""PV-NAS search (paper Alg. 1): one-level alternation of an alpha step and a weight step.

Per training batch: (1) Adam on alpha with the training loss at the current weights, then
(2) SGD on the weights with the training loss at the *new* alpha. Both use the same batch.
The weight lr is set before every step from a pure function of progress (step / total steps,
:mod:`pvnas.lr_schedules`); the first ``a_warmup`` of the steps train the weights only. After each
epoch the run directory gets the alphas, the derived genotype, collapse statistics and a checkpoint,
so a genotype can be derived from any epoch (paper Table 3).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pvnas.config import LEGACY_REMEDIES, RunOptions, SearchConfig, override, to_dict
from pvnas.lr_schedules import search_lr
from pvnas.nn.supernet import supernet_from_config
from pvnas.runtime.device import autocast, compiled, cuda_layout, to_device
from pvnas.runtime.distributed import DistEnv, average_gradients, broadcast_module, check_same_on_all_ranks
from pvnas.runtime.run import Run
from pvnas.runtime.steps import finite_on_all_ranks, step_if
from pvnas.runtime.rundir import save_torch
from pvnas.search.alpha_schedule import ConvergenceMonitor, alpha_active, alpha_lr
from pvnas.search.collapse import collapse_stats, warn_if_collapsed
from pvnas.search.remedies import Remedy, alpha_terms, derive_options, remedies_of, resumable, settings
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)


@dataclass
class SearchState:
    """Everything an iteration mutates (model and both optimizers), and how it runs the model."""

    model: nn.Module
    alpha_opt: torch.optim.Optimizer
    weight_opt: torch.optim.Optimizer
    grad_clip: float | None
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # the model, or its torch.compile (--compile)
    amp: bool = True  # bf16 autocast on CUDA (benchmarks turn it off to compare with float32)

    def logits(self, clips: torch.Tensor) -> torch.Tensor:
        """The supernet's logits, float32; under bf16 autocast on CUDA (alphas, softmax and both gradients
        stay float32: parameters are float32 and autocast keeps softmax and losses in float32)."""
        with autocast(clips.device, self.amp):
            return (self.forward or self.model)(clips).float()


def make_state(model: nn.Module, cfg: SearchConfig, compile: bool = False) -> SearchState:
    """Adam(lr 1e-3, betas (0, 0.999)) on alpha, SGD(0.1, momentum 0.9, wd 1e-4) on weights (the config's values);
    fused, so that a step is skipped on the device (:func:`~pvnas.runtime.steps.step_if`)."""
    alpha_opt = torch.optim.Adam(
        model.arch_parameters(), lr=cfg.a_lr, betas=tuple(map(float, cfg.a_betas)), weight_decay=cfg.a_weight_decay,
        fused=True,
    )
    weight_opt = torch.optim.SGD(
        model.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay, fused=True
    )
    return SearchState(model, alpha_opt, weight_opt, cfg.grad_clip, compiled(model, compile))


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
    state: SearchState, clips: torch.Tensor, labels: torch.Tensor, env: DistEnv = DistEnv(), update_alpha: bool = True,
    alpha_terms: Callable[[], list[torch.Tensor]] = list,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One iteration of Alg. 1 on one batch: (weight-step loss, accuracy, whether both losses were finite), 0-dim
    tensors on the device; nothing here waits for the device (:mod:`pvnas.runtime.steps`).

    ``update_alpha=False`` is the weights-only warm-up: step 1 is skipped. ``alpha_terms()``: the remedies' terms
    added to the alpha loss (e.g. beta-DARTS' regulariser). A non-finite loss (on any rank) skips that update, so
    one bad batch cannot poison alpha or w: a non-finite alpha loss skips both updates, a non-finite weight loss
    the weight update (decided on the device; the gradients are computed all the same).
    """
    arch = state.alpha_opt.param_groups[0]["params"]
    weights = state.weight_opt.param_groups[0]["params"]
    finite = torch.ones((), dtype=torch.bool, device=clips.device)
    if update_alpha:
        # 1. alpha_t <- alpha_{t-1} - d/dalpha L_train(w_{t-1}, alpha_{t-1}); no weight gradient is computed
        with frozen(weights):
            loss_a = F.cross_entropy(state.logits(clips), labels)
            for term in alpha_terms():
                loss_a = loss_a + term
        finite = finite_on_all_ranks(loss_a, env)
        loss_a.backward(inputs=arch)
        average_gradients(arch, env)
        step_if(state.alpha_opt, finite)
        state.alpha_opt.zero_grad(set_to_none=True)
        del loss_a
    # 2. w_t <- w_{t-1} - d/dw L_train(w_{t-1}, alpha_t); no alpha gradient is computed
    with frozen(arch):
        logits = state.logits(clips)
    loss = F.cross_entropy(logits, labels)
    finite = finite & finite_on_all_ranks(loss, env)
    loss.backward(inputs=weights)
    average_gradients(weights, env)
    if state.grad_clip:
        nn.utils.clip_grad_norm_(weights, state.grad_clip)
    step_if(state.weight_opt, finite)
    state.weight_opt.zero_grad(set_to_none=True)
    acc = (logits.detach().argmax(1) == labels).float().mean()
    return loss.detach(), acc, finite


@dataclass
class SearchResult:
    genotype: Genotype
    alphas: dict[str, torch.Tensor]  # this process's final alphas (identical on every rank)


@dataclass
class SearchEpochs:
    """What the steps and epoch ends of one search share: the weight lr follows :func:`search_lr` of the global
    step, the alphas wait for the warm-up, ``converge`` decides its decays; every epoch saves the alphas."""

    cfg: SearchConfig  # as given (the alpha schedule)
    scaled: SearchConfig  # with the weight lr times the world size
    run: Run
    state: SearchState
    monitor: ConvergenceMonitor
    steps_per_epoch: int
    remedies: list[Remedy]
    lr: float = 0.0

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p, model, env = self.run.progress, self.state.model, self.run.env
        t = p.epoch * self.steps_per_epoch + p.step - 1  # global index of this step
        self.lr = search_lr(self.scaled, t / self.total_steps, self.monitor.decays)
        for group in self.state.weight_opt.param_groups:
            group["lr"] = self.lr
        progress = t / self.total_steps
        active = alpha_active(self.cfg, progress)
        result = search_step(self.state, to_device(batch.clips, env.device),
                             batch.labels.to(env.device, non_blocking=True), env, update_alpha=active,
                             alpha_terms=lambda: alpha_terms(self.remedies, model, progress))
        if (active and self.cfg.schedule == "converge" and self.monitor.due(t + 1)  # (alphas read only when due)
                and self.monitor.observe(t + 1, model.alpha_dict())):
            log.info("converge: the alphas converged at step %d of %d: weight lr x%g (decay %d)",
                     t + 1, self.total_steps, self.cfg.step_gamma, self.monitor.decays)
        return result

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        run, model, cfg = self.run, self.state.model, self.cfg
        alphas = model.alpha_dict()
        check_same_on_all_ranks(alphas.values(), "alphas", run.env)
        genotype = model.genotype(derive_options(self.remedies), epoch=epoch + 1, dataset=run.data)
        if run.env.is_main:
            save_torch(alphas, run.out / "alphas" / f"epoch_{epoch + 1:03d}.pt")
            if model.betas:  # PC-DARTS edge normalisation: the edge weights rank edges at derivation
                save_torch(model.edge_weight_dict(), run.out / "alphas" / f"edges_{epoch + 1:03d}.pt")
            run.board.alphas(alphas, epoch + 1)
        p, t = run.progress, (epoch + 1) * self.steps_per_epoch
        record = {
            "epoch": epoch + 1, "loss": p.loss_sum / p.seen, "acc": p.acc_sum / p.seen, "lr": self.lr,
            "alpha_lr": self.state.alpha_opt.param_groups[0]["lr"],
            "alpha_active": alpha_active(cfg, (t - 1) / self.total_steps),
            **({"decays": self.monitor.decays} if cfg.schedule == "converge" else {}),
            "seconds": p.seconds, "clips_per_s": p.seen / max(p.seconds, 1e-9), "skipped": len(p.skipped),
            "skipped_files": p.skipped[:100], **collapse_stats(alphas),
            "collapsed": warn_if_collapsed(genotype, epoch + 1, cfg.schedule), "genotype": genotype.to_dict(),
        }
        for remedy in self.remedies:
            record.update(remedy.epoch_record(model))
        log.info("epoch %d/%d loss %.4f acc %.3f lr %.3g (%.1fs)", epoch + 1, cfg.epochs, record["loss"],
                 record["acc"], self.lr, p.seconds)
        return record


def run_search(
    cfg: SearchConfig,
    data: str,
    out: str | Path,
    options: RunOptions = RunOptions(),
    *,
    preset: str = "custom",
    compile: bool = False,
) -> SearchResult:
    """Search on ``data`` into the run directory ``out``; returns the final genotype and alphas.

    Works alone or under ``torchrun`` (one process per device). ``options`` says whether to resume or
    replace a run in ``out`` and how often to checkpoint; SIGTERM/SIGINT checkpoint and raise
    :class:`~pvnas.runtime.run.Preempted`. ``compile`` runs the supernet through ``torch.compile``.
    """
    remedies = remedies_of(cfg)  # checked before the run directory is touched
    run, train = Run.open("search", out, options, data, preset, clip=cfg.clip, batch_size=cfg.batch_size,
                          workers=cfg.workers, seed=cfg.seed, threads=cfg.threads)
    env = run.env
    model = supernet_from_config(cfg, len(train.classes), remedies).to(env.device)
    cuda_layout(model, env.device)
    broadcast_module(model, env)
    # the paper's lr is per GPU: gradients are averaged, so the weight lr scales with the world size
    scaled = override(cfg, w_lr=cfg.w_lr * env.world, w_lr_min=cfg.w_lr_min * env.world)
    state = make_state(model, scaled, compile)
    total_steps = train.steps_per_epoch * cfg.epochs
    monitor = ConvergenceMonitor(round(cfg.converge_window * total_steps), cfg.converge_tol)
    run.start({"search": {**to_dict(cfg), "remedies": settings(cfg)}, "compile": compile},
              {"model": model, "alpha_opt": state.alpha_opt, "weight_opt": state.weight_opt, "converge": monitor},
              train.classes, mutable={"search.epochs", "search.workers", "search.threads", "compile", *resumable()},
              renamed={f"search.{name}": f"search.remedies.{name}" for name in LEGACY_REMEDIES})
    for group in state.alpha_opt.param_groups:  # after start(): a resume's --epochs may differ from the checkpoint's
        group["lr"] = alpha_lr(cfg, total_steps)
    epochs = SearchEpochs(cfg, scaled, run, state, monitor, train.steps_per_epoch, remedies)
    run.loop(cfg.epochs, train.loader, epochs.step, epochs.end_epoch, begin_epoch=lambda epoch: model.train(),
             lr=lambda: epochs.lr)
    genotype = model.genotype(derive_options(remedies), epoch=run.progress.epoch, dataset=data)
    if env.is_main:
        genotype.save(run.out / "genotype.json")
    return SearchResult(genotype, model.alpha_dict())
