"""Retraining a derived genotype, from scratch (paper §4.2, docs/design.md §4) or from a trained model (transfer).

SGD (momentum 0.9, weight decay 1e-4), base lr 0.01 per process times the world size, linear
warm-up then cosine decay, set every iteration from a pure function of (epoch progress), so a
resumed run follows exactly the schedule it would have followed. Epoch and warm-up defaults come
from the dataset (Kinetics/SSv2 196 + 36, UCF-101/HMDB-51 128 + 16) and shrink proportionally with
``--epochs``. Drop-path ramps linearly from 0 to its configured value over the epochs, as in DARTS.

The run directory gets ``config.yaml``, ``genotype.json``, ``metrics.jsonl`` (one record per
epoch: train loss/accuracy, single-view top-1/top-5 on a validation subset, lr, throughput,
skipped videos), ``checkpoint.pt`` (everything --resume needs, also written on SIGTERM and every
``checkpoint_every`` minutes) and ``model.pt`` (weights + genotype + classes + network config).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pvnas.config import NetworkConfig, RunOptions, override, to_dict
from pvnas.data import build_dataset
from pvnas.data.loader import CachedItems, ClipDataset, Item, VideoLoader, build_loader
from pvnas.retrain.diagnose import blind_to_motion, check_epochs, diagnose, early_check
from pvnas.runtime.distributed import DistEnv, average_gradients, broadcast_module, check_same_on_all_ranks
from pvnas.runtime.device import autocast, compiled, cuda_layout, to_device
from pvnas.retrain.evaluate import evaluate
from pvnas.retrain.modelfile import fitting_model_file, init_from_model, model_record, save_model
from pvnas.runtime.run import Run
from pvnas.runtime.steps import finite_on_all_ranks, step_if
from pvnas.errors import ConfigError, DataError
from pvnas.nn.network import Network, network_from_config
from pvnas.lr_schedules import train_lr
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)

# paper §4.2: (epochs, warm-up epochs) per dataset (HMDB-51, of UCF-101's size, gets UCF-101's); other specs
# (demo, folder, list, csv) get Kinetics'
DATASET_SCHEDULES: dict[str, tuple[int, int]] = {"kinetics": (196, 36), "ssv2": (196, 36), "ucf101": (128, 16),
                                                 "hmdb51": (128, 16)}
DEFAULT_SCHEDULE = DATASET_SCHEDULES["kinetics"]
VAL_CACHE_BYTES = 2 << 30  # validation clips kept in memory across epochs (float32: ~200 views of 16x224x224)


def resolve_schedule(cfg: NetworkConfig, data: str, epochs: int | None = None) -> NetworkConfig:
    """Fill ``epochs``/``warmup_epochs``: preset value, else the dataset's; ``epochs`` rescales warm-up."""
    kind = data.partition("?")[0].partition(":")[0]
    d_epochs, d_warmup = DATASET_SCHEDULES.get(kind, DEFAULT_SCHEDULE)
    base_epochs = cfg.epochs if cfg.epochs is not None else d_epochs
    base_warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else round(d_warmup * base_epochs / d_epochs)
    if epochs is None:
        epochs, warmup = base_epochs, base_warmup
    else:
        warmup = round(base_warmup * epochs / base_epochs)
    return override(cfg, epochs=epochs, warmup_epochs=warmup)  # (NetworkConfig checks both)


def make_optimizer(model: nn.Module, cfg: NetworkConfig) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 and weight decay 1e-4 (paper §4.2), or AdamW; the lr is set every step. Fused, so that a
    step is skipped on the device (:func:`~pvnas.runtime.steps.step_if`)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           fused=True)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, clips: torch.Tensor, labels: torch.Tensor,
    device: torch.device, env: DistEnv = DistEnv(), *, label_smoothing: float = 0.0, grad_clip: float = 0.0,
    stats: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SGD step: (loss, accuracy, whether the loss was finite on every rank; if not, no update), 0-dim tensors
    on the device; nothing here waits for the device (:mod:`pvnas.runtime.steps`).

    ``grad_clip`` > 0 clips the global gradient norm; ``stats`` (if given) receives that norm before clipping,
    ``grad_norm``, which the early check of a retrain reads."""
    with autocast(device):
        logits = model(clips)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    finite = finite_on_all_ranks(loss, env)
    loss.backward()
    trained = [p for p in model.parameters() if p.requires_grad]  # (frozen ones stay without grad)
    average_gradients(trained, env)
    if grad_clip > 0 or stats is not None:
        norm = nn.utils.clip_grad_norm_(trained, grad_clip if grad_clip > 0 else math.inf)
        if stats is not None:
            stats["grad_norm"] = norm
    step_if(optimizer, finite)
    optimizer.zero_grad(set_to_none=True)
    acc = (logits.detach().argmax(1) == labels).float().mean()
    return loss.detach(), acc, finite


class KeyedSubset(Dataset):
    """A subset that passes the sampler's ``(index, seed)`` keys through (``torch`` Subset does not)."""

    def __init__(self, dataset: ClipDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.classes = dataset.classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        index, seed = key if isinstance(key, tuple) else (key, key)
        return self.dataset[(self.indices[index], seed)]


def validation_subset(dataset: ClipDataset, size: int) -> ClipDataset:
    """``size`` videos spread evenly over the split (covers every class of a sorted manifest)."""
    n = len(dataset)
    if size >= n:
        return dataset
    return KeyedSubset(dataset, np.linspace(0, n - 1, size).round().astype(int).tolist())


def validation_loader(data: str, cfg: NetworkConfig, classes: list[str], run: Run) -> VideoLoader | None:
    """The single-view loader over ``cfg.val_videos`` validation videos (None without validation); the files of
    the validation split go into config.yaml's ``data_files``. Centre views are the same every epoch, so the
    first :data:`VAL_CACHE_BYTES` of them stay in memory (on a small split, validation stops decoding)."""
    if cfg.val_videos == 0:
        return None
    val_set = build_dataset(data, "val", cfg.clip, seed=cfg.seed, views="single")
    if list(val_set.classes) != classes:
        raise DataError(f"--data {data}: the val split's classes differ from the train split's")
    run.note_files("val", val_set)
    cached = CachedItems(validation_subset(val_set, cfg.val_videos), VAL_CACHE_BYTES // max(cfg.workers, 1))
    return build_loader(cached, cfg.batch_size, shuffle=False, seed=cfg.seed, workers=cfg.workers,
                        rank=run.env.rank, world=run.env.world)


def frozen_epochs(freeze: float, epochs: int) -> int:
    """How many first epochs ``--freeze`` keeps the stem and cells fixed: that share of the epochs, rounded."""
    return int(freeze * epochs + 0.5)


def set_frozen(model: Network, frozen: bool) -> None:
    """Fix (or free) the stem and cells: no gradients, eval mode (batch-norm statistics held, no drop-path), so the
    features stay exactly those of the initial model while the classifier learns on them (a linear probe; the
    dropout before it still trains)."""
    for name, module in model.named_children():
        if name in ("classifier", "dropout"):
            continue
        for p in module.parameters():
            p.requires_grad_(not frozen)
        module.train(not frozen and model.training)


@dataclass
class TrainEpochs:
    """What the steps and epoch ends of one retrain share: the lr follows :func:`train_lr` of the batch about to
    run (so a resume is exact), drop-path ramps up per epoch; every epoch validates and writes ``model.pt``."""

    cfg: NetworkConfig
    run: Run
    model: Network
    optimizer: torch.optim.Optimizer
    forward: nn.Module
    val_loader: VideoLoader | None
    classes: list[str]
    steps_per_epoch: int
    frozen_epochs: int = 0  # --freeze: the first epochs train the classifier alone
    lr: float = 0.0
    warned: bool = False  # the early check warns once per run (a resumed run reads it from its records)
    grad_norms: list[torch.Tensor] = field(default_factory=list)  # this epoch's, summed up at its end

    def begin_epoch(self, epoch: int) -> None:
        self.model.train()
        self.model.drop_path_prob = self.cfg.drop_path * epoch / self.cfg.epochs  # DARTS' linear ramp
        self.grad_norms = []
        set_frozen(self.model, epoch < self.frozen_epochs)
        if epoch == self.frozen_epochs > 0 and self.run.env.is_main:
            log.info("epoch %d: the stem and cells are trained from now on (--freeze)", epoch + 1)

    def step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p, env = self.run.progress, self.run.env
        self.lr = train_lr(self.cfg, p.epoch + (p.step - 1) / self.steps_per_epoch, env.world)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        stats: dict[str, Any] = {}
        out = train_step(self.forward, self.optimizer, to_device(batch.clips, env.device),
                         batch.labels.to(env.device, non_blocking=True), env.device, env,
                         label_smoothing=self.cfg.label_smoothing, grad_clip=self.cfg.grad_clip, stats=stats)
        if "grad_norm" in stats:
            self.grad_norms.append(stats["grad_norm"].detach())
        return out

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        run, cfg, model, env = self.run, self.cfg, self.model, self.run.env
        check_same_on_all_ranks(model.parameters(), "weights", env)
        p = run.progress
        record = {
            "epoch": epoch + 1, "loss": p.loss_sum / p.seen, "acc": p.acc_sum / p.seen, "seen": p.seen, "lr": self.lr,
            "drop_path": model.drop_path_prob, "seconds": p.seconds, "clips_per_s": p.seen / max(p.seconds, 1e-9),
        }
        skipped = set(p.skipped)
        if self.val_loader is not None:
            val = evaluate(model, self.val_loader, 1, 1, env.device, chunk=cfg.batch_size,
                           desc=f"val {epoch + 1}/{cfg.epochs}", env=env)
            skipped.update(val["skipped_files"])
            record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], val_videos=val["videos"])
            if epoch + 1 == cfg.epochs:  # the report's per-class accuracy and confusion matrix
                record["val_confusion"] = val["confusion"]
        record["skipped"] = len(skipped)
        if self.grad_norms and math.isfinite(norm := float(torch.stack(self.grad_norms).float().nanmean())):
            record["grad_norm"] = norm  # (one host sync per epoch; skipped non-finite steps left out)
        if env.is_main and not self.warned and epoch + 1 in check_epochs(cfg.epochs, cfg.warmup_epochs or 0):
            if warning := early_check(run.metrics.read() + [record], len(self.classes), cfg.epochs):
                record["early_warning"] = warning
                self.warned = True
                log.warning("this retrain looks %s at epoch %d of %d (%s). Try: %s", warning["kind"], epoch + 1,
                            cfg.epochs, warning["saw"], warning["try"])
        if env.is_main and epoch + 1 == cfg.epochs:  # a retrain that did not learn says so, with the likely cause
            record["diagnosis"] = diagnosis = diagnose(run.metrics.read() + [record], len(self.classes), model.genotype)
            if not diagnosis["learned"]:
                log.warning("the network did not learn: training accuracy %.3f after %d epochs, chance %.3f. Likely: %s",
                            record["acc"], cfg.epochs, diagnosis["chance"], "; ".join(diagnosis["causes"]))
        if env.is_main:
            save_model(run.out / "model.pt", model_record(model, self.classes, cfg, run.preset,
                                                          {"epoch": epoch + 1, "data": run.data}))
            log.info("epoch %d/%d loss %.4f acc %.3f val top-1 %s lr %.3g (%.1fs)", epoch + 1, cfg.epochs,
                     record["loss"], record["acc"], record.get("val_top1", "-"), self.lr, p.seconds)
        return record


def run_train(
    genotype: Genotype,
    cfg: NetworkConfig,
    data: str,
    out: str | Path,
    options: RunOptions = RunOptions(),
    *,
    preset: str = "custom",
    compile: bool = False,
    init: str | Path | None = None,
    freeze: float = 0.0,
) -> dict[str, Any]:
    """Train ``genotype`` on ``data`` into run directory ``out``; returns the last epoch's record.

    ``init``: start from the weights of a trained ``model.pt`` instead of from scratch (transfer, fine-tuning;
    :func:`~pvnas.retrain.modelfile.init_from_model` says what is copied and what is refused); what was loaded,
    re-initialised and skipped is logged and saved in config.yaml (``init``). ``freeze``: the share of the epochs
    (in [0, 1], rounded; needs ``init``) during which only the classifier trains, the stem and cells fixed (a
    linear probe), before everything is fine-tuned (1: a linear probe throughout).

    ``cfg`` is resolved with :func:`resolve_schedule` if its epochs are unset. Works alone or
    under ``torchrun``: each process trains on its shard with its own BN statistics (no SyncBN,
    as the paper), gradients are averaged, and the lr is ``cfg.lr`` times the world size; the
    validation subset is sharded too (the sampler pads it to a multiple of the world size, so a
    few videos may count twice). ``options`` says whether to resume or replace a run in ``out``.
    ``compile`` runs the training forward through ``torch.compile``.
    """
    cfg = resolve_schedule(cfg, data) if cfg.epochs is None or cfg.warmup_epochs is None else cfg
    assert cfg.epochs is not None
    if not 0 <= freeze <= 1:
        raise ConfigError(f"--freeze must be a share of the epochs in [0, 1], got {freeze:g}")
    if freeze and init is None:
        raise ConfigError("--freeze keeps the initial model's cells fixed: it needs --init MODEL")
    record = fitting_model_file(init, genotype, cfg) if init is not None else None  # (refused before any listing)
    run, train = Run.open("train", out, options, data, preset, clip=cfg.clip, batch_size=cfg.batch_size,
                          workers=cfg.workers, seed=cfg.seed, threads=cfg.threads)
    env = run.env
    val_loader = validation_loader(data, cfg, train.classes, run)
    model = network_from_config(genotype, cfg, len(train.classes))
    transfer = {}
    if record is not None:
        report = init_from_model(model, record, train.classes, init)
        transfer = {"init": report, "freeze_epochs": frozen_epochs(freeze, cfg.epochs)}
        if env.is_main:
            log.info("--init %s: loaded %d tensors; re-initialised %s; skipped from the file %s", init,
                     len(report["loaded"]), ", ".join(report["reinitialised"]) or "none",
                     ", ".join(report["skipped"]) or "none")
    model = model.to(env.device)
    cuda_layout(model, env.device)
    broadcast_module(model, env)
    optimizer = make_optimizer(model, cfg)
    # (both impls have the same weights and state dict: a run may be resumed with the other)
    run.start({"network": to_dict(cfg), "genotype": genotype.to_dict(), "compile": compile, **transfer},
              {"model": model, "optimizer": optimizer}, train.classes,
              mutable={"network.epochs", "network.warmup_epochs", "network.workers", "network.threads", "network.impl",
                       "compile"})
    if env.is_main:
        genotype.save(run.out / "genotype.json")
        if warning := blind_to_motion(genotype):
            log.warning("%s", warning)
    epochs = TrainEpochs(cfg, run, model, optimizer, compiled(model, compile), val_loader, train.classes,
                         train.steps_per_epoch, transfer.get("freeze_epochs", 0))
    epochs.lr = train_lr(cfg, run.progress.epoch + run.progress.step / train.steps_per_epoch, env.world)
    epochs.warned = any("early_warning" in r for r in run.metrics.read())
    run.loop(cfg.epochs, train.loader, epochs.step, epochs.end_epoch, begin_epoch=epochs.begin_epoch,
             lr=lambda: epochs.lr)
    return {"model": str(run.out / "model.pt"), **run.last_record}
