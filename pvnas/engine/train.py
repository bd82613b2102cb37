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
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pvnas import __version__
from pvnas.config import NetworkConfig, override, to_dict
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
from pvnas.engine.evaluate import autocast, evaluate, to_device
from pvnas.engine.modelfile import model_record, save_model
from pvnas.engine.rundir import MetricsLog, rng_state, save_torch, save_yaml, seed_everything, set_rng_state
from pvnas.engine.runtime import CheckpointTimer, NonFiniteGuard, Progress, StopSignal, run_epoch
from pvnas.engine.tensorboard import TensorBoard
from pvnas.errors import ConfigError, DataError
from pvnas.nn.network import Network, network_from_config
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
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {epochs}")
    if not 0 <= warmup < epochs:
        raise ConfigError(f"warmup_epochs must be in [0, epochs) = [0, {epochs}), got {warmup}")
    return override(cfg, epochs=epochs, warmup_epochs=warmup)


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
    *,
    resume: bool = False,
    preset: str = "custom",
    checkpoint_every: float | None = None,
    max_bad_steps: int = 5,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train ``genotype`` on ``data`` into run directory ``out``; returns the last epoch's record.

    ``cfg`` is resolved with :func:`resolve_schedule` if its epochs are unset. Works alone or
    under ``torchrun``: each process trains on its shard with its own BN statistics (no SyncBN,
    as the paper), gradients are averaged, and the lr is ``cfg.lr`` times the world size; the
    validation subset is sharded too (the sampler pads it to a multiple of the world size, so a
    few videos may count twice). ``tensorboard`` mirrors the metrics to ``RUN/tensorboard``.
    """
    out = Path(out)
    cfg = resolve_schedule(cfg, data) if cfg.epochs is None or cfg.warmup_epochs is None else cfg
    assert cfg.epochs is not None
    if cfg.batch_size < 1 or cfg.channels < 1:
        raise ConfigError(f"--batch-size and --channels must be >= 1, got {cfg.batch_size} and {cfg.channels}")
    ckpt_path = out / "checkpoint.pt"
    if resume and not ckpt_path.exists():
        raise ConfigError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
    if not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(f"{out} already holds a run; use --resume to continue it or choose another --out")

    env = init_distributed()
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
    if env.device.type == "cuda":
        model.to(memory_format=torch.channels_last_3d)
    broadcast_module(model, env)
    optimizer = make_optimizer(model, cfg)
    loader = build_loader(
        train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers, drop_last=True,
        rank=env.rank, world=env.world,
    )
    steps_per_epoch = -(-len(train_set) // env.world) // cfg.batch_size  # type: ignore[arg-type]
    metrics = MetricsLog(out / "metrics.jsonl")
    config_record: dict[str, Any] = {
        "command": "train", "version": __version__, "preset": preset, "data": data, "world_size": env.world,
        "classes": list(classes), "network": to_dict(cfg), "genotype": genotype.to_dict(),
    }

    progress = Progress()
    if resume:
        progress = _load_checkpoint(ckpt_path, model, optimizer, config_record)
        if env.is_main:
            metrics.truncate_after("epoch", progress.epoch)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(config_record, out / "config.yaml")
        genotype.save(out / "genotype.json")

    def checkpoint() -> None:
        if env.is_main:
            _save_checkpoint(ckpt_path, model, optimizer, progress, config_record)

    guard = NonFiniteGuard(max_bad_steps)
    timer = CheckpointTimer(checkpoint_every)
    board = TensorBoard(out, tensorboard and env.is_main)
    record: dict[str, Any] = {}
    with StopSignal() as stop:
        while progress.epoch < cfg.epochs:
            epoch = progress.epoch
            loader.sampler.set_epoch(epoch, start=progress.step * cfg.batch_size)  # type: ignore[attr-defined]
            model.train()
            model.drop_path_prob = cfg.drop_path * epoch / cfg.epochs  # DARTS' linear ramp
            current_lr = [lr_at(epoch + progress.step / steps_per_epoch, cfg, env.world)]

            def step(batch: Any) -> tuple[float, float, bool]:
                # the lr follows a pure function of progress (the batch about to run), so resume is exact
                current_lr[0] = lr_at(epoch + (progress.step - 1) / steps_per_epoch, cfg, env.world)
                for group in optimizer.param_groups:
                    group["lr"] = current_lr[0]
                clips = to_device(batch.clips, env.device)
                return train_step(model, optimizer, clips, batch.labels.to(env.device, non_blocking=True), env.device, env)

            run_epoch(
                loader, progress, step, desc=f"train epoch {epoch + 1}/{cfg.epochs}", lr=lambda: current_lr[0],
                env=env, guard=guard, stop=stop, timer=timer, checkpoint=checkpoint, data=data,
                resume_hint=f"checkpoint written to {ckpt_path}. Resume with the same command plus --resume",
            )
            lr = current_lr[0]
            check_same_on_all_ranks(model.parameters(), "weights", env)
            record = {
                "epoch": epoch + 1, "loss": progress.loss_sum / progress.seen, "acc": progress.acc_sum / progress.seen,
                "lr": lr, "drop_path": model.drop_path_prob, "seconds": progress.seconds,
                "clips_per_s": progress.seen / max(progress.seconds, 1e-9),
            }
            skipped = set(progress.skipped)
            if val_loader is not None:
                val = evaluate(model, val_loader, 1, 1, env.device, chunk=cfg.batch_size,
                               desc=f"val {epoch + 1}/{cfg.epochs}", env=env)
                skipped.update(val["skipped_files"])
                record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], val_videos=val["videos"])
            record["skipped"] = len(skipped)
            if env.is_main:
                metrics.append(record)
                board.scalars(record, epoch + 1)
                save_model(out / "model.pt", model_record(model, classes, cfg, preset, {"epoch": epoch + 1, "data": data}))
                log.info("epoch %d/%d loss %.4f acc %.3f val top-1 %s lr %.3g (%.1fs)", epoch + 1, cfg.epochs,
                         record["loss"], record["acc"], record.get("val_top1", "-"), lr, progress.seconds)
            progress = Progress(epoch=epoch + 1, skipped=progress.skipped)
            checkpoint()
    board.close()
    return {"model": str(out / "model.pt"), **record}


def _save_checkpoint(
    path: Path, model: Network, optimizer: torch.optim.Optimizer, progress: Progress, config_record: dict[str, Any]
) -> None:
    save_torch(
        {
            "progress": asdict(progress),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
            "config": config_record,
        },
        path,
    )


def _load_checkpoint(
    path: Path, model: Network, optimizer: torch.optim.Optimizer, config_record: dict[str, Any]
) -> Progress:
    """Restore everything; only the epoch counts and workers may differ (to extend a run)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torn or foreign file
        raise ConfigError(f"--resume: cannot read {path} ({exc})") from None
    saved = ckpt.get("config", {}) if isinstance(ckpt, dict) else {}
    if saved.get("command") != "train":
        raise ConfigError(f"--resume: {path} is not a `pvnas train` checkpoint")
    ignore = {"epochs", "warmup_epochs", "workers"}
    then_net = {k: v for k, v in saved["network"].items() if k not in ignore}
    now_net = {k: v for k, v in config_record["network"].items() if k not in ignore}
    pairs = [(k, config_record[k], saved.get(k)) for k in ("data", "world_size", "genotype")]
    pairs += [(f"network.{k}", now_net.get(k), then_net.get(k)) for k in sorted(set(then_net) | set(now_net))]
    for key, now, then in pairs:
        if now != then:
            raise ConfigError(
                f"--resume: {path} was written with {key} = {then!r}, this run has {now!r}; "
                "resume with the same options or start a new --out"
            )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    return Progress(**ckpt["progress"])
