"""Retraining a derived genotype from scratch (paper §4.2, DESIGN §4).

SGD (momentum 0.9, weight decay 1e-4), base lr 0.01 per process times the world size, linear
warm-up then cosine decay, set every iteration from a pure function of (epoch progress), so a
resumed run follows exactly the schedule it would have followed. Epoch and warm-up defaults come
from the dataset (Kinetics/SSv2 196 + 36, UCF-101 128 + 16) and shrink proportionally with
``--epochs``. Drop-path ramps linearly from 0 to its configured value over the epochs, as in DARTS.

The run directory gets ``config.yaml``, ``genotype.json``, ``metrics.jsonl`` (one record per
epoch: train loss/accuracy, single-view top-1/top-5 on a validation subset, lr, throughput,
skipped videos), ``checkpoint.pt`` (everything --resume needs, also written on SIGTERM and every
``checkpoint_every`` minutes) and ``model.pt`` (weights + genotype + classes + network config).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pvnas import __version__
from pvnas.config import NetworkConfig, RunOptions, override, to_dict
from pvnas.data import build_dataset
from pvnas.data.loader import build_loader
from pvnas.engine.diagnose import blind_to_motion, diagnose
from pvnas.engine.distributed import (
    DistEnv,
    any_rank,
    average_gradients,
    broadcast_module,
    check_same_on_all_ranks,
    init_distributed,
)
from pvnas.engine.evaluate import autocast, compiled, cuda_layout, evaluate, to_device
from pvnas.engine.modelfile import model_record, save_model
from pvnas.engine.rundir import seed_everything
from pvnas.engine.run import Run
from pvnas.engine.tensorboard import TensorBoard
from pvnas.errors import ConfigError, DataError
from pvnas.nn.network import network_from_config
from pvnas.space.genotype import Genotype

log = logging.getLogger(__name__)

# paper §4.2: (epochs, warm-up epochs) per dataset; other specs (demo, folder, csv) get Kinetics'
DATASET_SCHEDULES: dict[str, tuple[int, int]] = {"kinetics": (196, 36), "ssv2": (196, 36), "ucf101": (128, 16)}
DEFAULT_SCHEDULE = DATASET_SCHEDULES["kinetics"]


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


def lr_at(progress: float, cfg: NetworkConfig, scale: float = 1.0) -> float:
    """Learning rate at ``progress`` epochs (fractional): linear warm-up, then cosine to ``lr_min``.

    ``scale`` is the world size (the paper's lr is per GPU). ``cfg`` must be resolved.
    """
    epochs, warmup = cfg.epochs, cfg.warmup_epochs
    assert epochs is not None and warmup is not None, "resolve_schedule() first"
    lr, lr_min = cfg.lr * scale, cfg.lr_min * scale
    if progress < warmup:
        return lr * (cfg.warmup_start + (1.0 - cfg.warmup_start) * progress / warmup)
    t = min(1.0, (progress - warmup) / max(epochs - warmup, 1e-9))
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * t))


def make_optimizer(model: nn.Module, cfg: NetworkConfig) -> torch.optim.SGD:
    """SGD with momentum 0.9 and weight decay 1e-4 (paper §4.2); the lr is set every step."""
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, clips: torch.Tensor, labels: torch.Tensor,
    device: torch.device, env: DistEnv = DistEnv(),
) -> tuple[float, float, bool]:
    """One SGD step: (loss, accuracy, whether the loss was finite on every rank; if not, no update)."""
    with autocast(device):
        logits = model(clips)
    loss = F.cross_entropy(logits.float(), labels)
    finite = not any_rank(not torch.isfinite(loss).item(), env)
    if finite:
        loss.backward()
        average_gradients(model.parameters(), env)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    acc = (logits.detach().argmax(1) == labels).float().mean()
    return float(loss.detach()), float(acc), finite


class KeyedSubset(Dataset):
    """A subset that passes the sampler's ``(index, seed)`` keys through (``torch`` Subset does not)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.classes = dataset.classes  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]):
        index, seed = key if isinstance(key, tuple) else (key, key)
        return self.dataset[(self.indices[index], seed)]


def validation_subset(dataset: Dataset, size: int) -> Dataset:
    """``size`` videos spread evenly over the split (covers every class of a sorted manifest)."""
    n = len(dataset)  # type: ignore[arg-type]
    if size >= n:
        return dataset
    return KeyedSubset(dataset, np.linspace(0, n - 1, size).round().astype(int).tolist())


def run_train(
    genotype: Genotype,
    cfg: NetworkConfig,
    data: str,
    out: str | Path,
    options: RunOptions = RunOptions(),
    *,
    preset: str = "custom",
    compile: bool = False,
) -> dict[str, Any]:
    """Train ``genotype`` on ``data`` into run directory ``out``; returns the last epoch's record.

    ``cfg`` is resolved with :func:`resolve_schedule` if its epochs are unset. Works alone or
    under ``torchrun``: each process trains on its shard with its own BN statistics (no SyncBN,
    as the paper), gradients are averaged, and the lr is ``cfg.lr`` times the world size; the
    validation subset is sharded too (the sampler pads it to a multiple of the world size, so a
    few videos may count twice). ``options`` says whether to resume or replace a run in ``out``.
    ``compile`` runs the training forward through ``torch.compile``.
    """
    cfg = resolve_schedule(cfg, data) if cfg.epochs is None or cfg.warmup_epochs is None else cfg
    assert cfg.epochs is not None
    env = init_distributed()
    run = Run(out, "train", options, env)
    seed_everything(cfg.seed)
    train_set = build_dataset(data, "train", cfg.clip, seed=cfg.seed, views="train")
    classes: Sequence[str] = train_set.classes  # type: ignore[attr-defined]
    if cfg.batch_size * env.world > len(train_set):  # type: ignore[arg-type]
        raise ConfigError(
            f"--batch-size {cfg.batch_size} x {env.world} processes exceeds the {len(train_set)} training videos "  # type: ignore[arg-type]
            f"of {data}; lower --batch-size"
        )
    val_loader = None
    if cfg.val_videos > 0:
        val_set = build_dataset(data, "val", cfg.clip, seed=cfg.seed, views="single")
        if list(val_set.classes) != list(classes):  # type: ignore[attr-defined]
            raise DataError(f"--data {data}: the val split's classes differ from the train split's")
        val_loader = build_loader(
            validation_subset(val_set, cfg.val_videos), cfg.batch_size, shuffle=False, seed=cfg.seed,
            workers=cfg.workers, rank=env.rank, world=env.world,
        )
    model = network_from_config(genotype, cfg, len(classes)).to(env.device)
    cuda_layout(model, env.device)
    broadcast_module(model, env)
    optimizer = make_optimizer(model, cfg)
    forward = compiled(model, compile)
    loader = build_loader(
        train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, drop_last=True,
        rank=env.rank, world=env.world,
    )
    steps_per_epoch = -(-len(train_set) // env.world) // cfg.batch_size  # type: ignore[arg-type]
    record: dict[str, Any] = {
        "command": "train", "version": __version__, "preset": preset, "data": data, "world_size": env.world,
        "classes": list(classes), "network": to_dict(cfg), "genotype": genotype.to_dict(), "compile": compile,
    }
    # (both impls have the same weights and state dict: a run may be resumed with the other)
    run.start(record, {"model": model, "optimizer": optimizer},
              mutable={"network.epochs", "network.warmup_epochs", "network.workers", "network.impl", "compile"})
    if env.is_main:
        genotype.save(run.out / "genotype.json")
        if warning := blind_to_motion(genotype):
            log.warning("%s", warning)
    board = TensorBoard(run.out, options.tensorboard and env.is_main)
    lr = [lr_at(run.progress.epoch + run.progress.step / steps_per_epoch, cfg, env.world)]

    def begin_epoch(epoch: int) -> None:
        model.train()
        model.drop_path_prob = cfg.drop_path * epoch / cfg.epochs  # DARTS' linear ramp

    def step(batch: Any) -> tuple[float, float, bool]:
        # the lr follows a pure function of progress (the batch about to run), so resume is exact
        lr[0] = lr_at(run.progress.epoch + (run.progress.step - 1) / steps_per_epoch, cfg, env.world)
        for group in optimizer.param_groups:
            group["lr"] = lr[0]
        clips = to_device(batch.clips, env.device)
        return train_step(forward, optimizer, clips, batch.labels.to(env.device, non_blocking=True), env.device, env)

    def end_epoch(epoch: int) -> dict[str, Any]:
        check_same_on_all_ranks(model.parameters(), "weights", env)
        p = run.progress
        record = {
            "epoch": epoch + 1, "loss": p.loss_sum / p.seen, "acc": p.acc_sum / p.seen, "seen": p.seen, "lr": lr[0],
            "drop_path": model.drop_path_prob, "seconds": p.seconds, "clips_per_s": p.seen / max(p.seconds, 1e-9),
        }
        skipped = set(p.skipped)
        if val_loader is not None:
            val = evaluate(model, val_loader, 1, 1, env.device, chunk=cfg.batch_size,
                           desc=f"val {epoch + 1}/{cfg.epochs}", env=env)
            skipped.update(val["skipped_files"])
            record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], val_videos=val["videos"])
        record["skipped"] = len(skipped)
        if env.is_main and epoch + 1 == cfg.epochs:  # a retrain that did not learn says so, with the likely cause
            record["diagnosis"] = diagnosis = diagnose(run.metrics.read() + [record], len(classes), genotype)
            if not diagnosis["learned"]:
                log.warning("the network did not learn: training accuracy %.3f after %d epochs, chance %.3f. Likely: %s",
                            record["acc"], cfg.epochs, diagnosis["chance"], "; ".join(diagnosis["causes"]))
        if env.is_main:
            save_model(run.out / "model.pt", model_record(model, classes, cfg, preset, {"epoch": epoch + 1, "data": data}))
            log.info("epoch %d/%d loss %.4f acc %.3f val top-1 %s lr %.3g (%.1fs)", epoch + 1, cfg.epochs,
                     record["loss"], record["acc"], record.get("val_top1", "-"), lr[0], p.seconds)
        return record

    run.loop(cfg.epochs, loader, step, end_epoch, begin_epoch=begin_epoch, lr=lambda: lr[0], data=data, board=board)
    board.close()
    return {"model": str(run.out / "model.pt"), **run.last_record}
