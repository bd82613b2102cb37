"""Multi-view testing (docs/design.md §5, paper Table 1 "x 30"): T clips x S crops per video, scores averaged.

A video's V = T*S views are run through the network in chunks of at most ``batch_size`` clips,
so memory is bounded whatever the number of views. The softmax scores of one pass give the
accuracy of three protocols at once: ``1x1`` (the middle clip's middle crop), ``Tx1`` (all clips,
middle crop) and ``TxS`` (all views). Views are clip-major, as the datasets return them. The ``TxS`` scores
also give the confusion matrix (rows: true class, columns: predicted) and the accuracy of each class.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from pvnas.config import EvalConfig, NetworkConfig
from pvnas.runtime.device import autocast, compiled, cuda_layout, default_device, to_device, torch_threads
from pvnas.runtime.distributed import DistEnv
from pvnas.runtime.progress import progress
from pvnas.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TOPK = (1, 5)


def parse_views(text: str) -> tuple[int, int]:
    """``"10x3"`` -> ``(10, 3)``: temporal clips x spatial crops (:class:`~pvnas.config.EvalConfig` checks them)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--views must look like CLIPSxCROPS with both >= 1 (e.g. 10x3, 1x1), got {text!r}")
    return int(match[1]), int(match[2])


def eval_config(trained: NetworkConfig, views: str | None, batch_size: int | None, workers: int | None,
                threads: int | None = None) -> EvalConfig:
    """The model's test grid, batch, loader workers and torch threads, with the command line's overrides."""
    clips, crops = parse_views(views) if views else (trained.clip.test_clips, trained.clip.test_crops)
    return EvalConfig(clips=clips, crops=crops, batch_size=trained.batch_size if batch_size is None else batch_size,
                      workers=trained.workers if workers is None else workers,
                      threads=trained.threads if threads is None else threads)


@torch.no_grad()
def view_logits(model: nn.Module, views: torch.Tensor, chunk: int, device: torch.device) -> torch.Tensor:
    """Logits ``(N, V, K)`` (float32, CPU) of ``(N, V, 3, T, H, W)`` views, ``chunk`` clips per forward."""
    n, v = views.shape[:2]
    flat = views.flatten(0, 1)
    outs = []
    with autocast(device):
        for i in range(0, flat.shape[0], chunk):
            outs.append(model(to_device(flat[i : i + chunk], device)).float().cpu())
    return torch.cat(outs).view(n, v, -1)


def view_protocols(clips: int, crops: int) -> dict[str, tuple[slice | int, slice | int]]:
    """Name -> (clip selector, crop selector) of the ``1x1``, ``Tx1`` and ``TxS`` protocols."""
    mid_clip, mid_crop = clips // 2, crops // 2
    return {
        "1x1": (mid_clip, mid_crop),
        f"{clips}x1": (slice(None), mid_crop),
        f"{clips}x{crops}": (slice(None), slice(None)),
    }


def aggregate_views(probs: torch.Tensor, clips: int, crops: int) -> dict[str, torch.Tensor]:
    """Average per-view scores ``(N, clips*crops, K)`` into ``(N, K)`` per protocol (pure function).

    ``1x1`` is the middle clip's middle crop (index ``clips // 2``, ``crops // 2``), ``Tx1`` the
    mean over clips of the middle crop, ``TxS`` the mean over all views. Names coincide when
    ``clips`` or ``crops`` is 1; the dict then holds each protocol once.
    """
    n, v, k = probs.shape
    if v != clips * crops:
        raise ValueError(f"got {v} views per video, expected clips x crops = {clips} x {crops}")
    grid = probs.reshape(n, clips, crops, k)
    out = {}
    for name, (c, s) in view_protocols(clips, crops).items():
        sel = grid[:, c, s]
        out[name] = sel if sel.dim() == 2 else sel.reshape(n, -1, k).mean(1)
    return out


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOPK) -> dict[int, int]:
    """How many rows of ``scores (N, K)`` have their label among the top ``k`` (k capped at K)."""
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    correct = top == labels.view(-1, 1)
    return {k: int(correct[:, :k].any(1).sum()) for k in ks}


def _all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    if not env.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def evaluate(
    model: nn.Module,
    loader: Iterable,
    clips: int,
    crops: int,
    device: torch.device,
    *,
    chunk: int = 8,
    desc: str = "eval",
    env: DistEnv = DistEnv(),
) -> dict[str, Any]:
    """Score every video of ``loader`` (items ``(N, V, 3, T, H, W)`` or single-view ``(N, 3, T, H, W)``).

    Returns ``videos``, ``skipped`` (count), ``skipped_files``, ``loss`` (NLL of the all-view
    average), ``top1``/``top5`` of ``TxS``, ``by_views``: protocol -> ``{"top1", "top5"}``, accuracies as
    fractions in [0, 1], and ``confusion``: ``[true][predicted]`` video counts of ``TxS``. Under torchrun the
    counts are summed over ranks.
    """
    model.eval()
    names = list(view_protocols(clips, crops))
    hits = {name: {k: 0 for k in TOPK} for name in names}
    videos, nll = 0, 0.0
    skipped: list[str] = []
    confusion: torch.Tensor | None = None
    for batch in progress(loader, desc, disable=not env.is_main):
        skipped.extend(s.path for s in batch.skipped)
        if batch.labels.numel() == 0:
            continue
        views = batch.clips if batch.clips.dim() == 6 else batch.clips.unsqueeze(1)
        probs = torch.softmax(view_logits(model, views, chunk, device), dim=-1)
        scores = aggregate_views(probs, clips, crops)
        for name in names:
            for k, h in topk_hits(scores[name], batch.labels).items():
                hits[name][k] += h
        full = scores[names[-1]]
        nll -= float(full.gather(1, batch.labels.view(-1, 1)).clamp_min(1e-12).log().sum())
        videos += batch.labels.numel()
        n_cls = full.shape[1]
        pairs = batch.labels.view(-1).long() * n_cls + full.argmax(1)
        counted = torch.bincount(pairs, minlength=n_cls * n_cls).view(n_cls, n_cls)
        confusion = counted if confusion is None else confusion + counted
    # the class count: from the scores, or (a rank that saw no readable video) from the network's classifier
    n_cls = confusion.shape[0] if confusion is not None else _num_classes(model, env)
    matrix = confusion if confusion is not None else torch.zeros(n_cls, n_cls, dtype=torch.long)
    flat = [videos, nll, len(skipped)] + [hits[n][k] for n in names for k in TOPK] + matrix.view(-1).tolist()
    videos, nll, n_skipped, *counts = _all_reduce_sum([float(x) for x in flat], env)
    counts, cells = counts[: len(names) * len(TOPK)], counts[len(names) * len(TOPK):]
    by_views: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        c = counts[i * len(TOPK) : (i + 1) * len(TOPK)]
        by_views[name] = {f"top{k}": (h / videos if videos else math.nan) for k, h in zip(TOPK, c)}
    full = by_views[names[-1]]
    return {
        "videos": int(videos),
        "skipped": int(n_skipped),
        "skipped_files": sorted(set(skipped)),
        "loss": nll / videos if videos else math.nan,
        "top1": full["top1"],
        "top5": full["top5"],
        "by_views": by_views,
        "confusion": [[int(c) for c in cells[i * n_cls : (i + 1) * n_cls]] for i in range(n_cls)],
    }


def _num_classes(model: nn.Module, env: DistEnv) -> int:
    """Logits per clip, the width of the confusion matrix, when this process scored no video: the out features
    of the last linear layer (0 on a single process, where no video means no matrix)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears and env.enabled else 0


def per_class(confusion: Sequence[Sequence[int]], classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Class -> ``{"videos", "top1"}`` from a confusion matrix (top-1: the diagonal over the row; None without
    videos), the first thing read on UCF-101 or HMDB: which classes the model gets, which it confuses."""
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(classes):
        row = confusion[i]
        total = sum(row)
        out[name] = {"videos": total, "top1": row[i] / total if total else None}
    return out


def sanitise(spec: str) -> str:
    """A dataset spec as a file-name fragment: ``ucf101:/data/ucf?split=2`` -> ``ucf101_data_ucf_split_2``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", spec).strip("_") or "data"


def run_eval(
    checkpoint: str | os.PathLike,
    data: str,
    *,
    views: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    compile: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Multi-view test of ``model.pt`` on the val split of ``data``; also writes ``eval_<spec>.json``.

    ``views`` defaults to the model's test grid (10x3 for L/M). ``batch_size`` is the number of
    clips per forward pass (default: the training batch size); videos per loader batch follow.
    ``compile``: run the network through ``torch.compile``; ``threads``: torch threads (default: the model's).
    """
    from pvnas.data import build_dataset
    from pvnas.data.loader import build_loader
    from pvnas.retrain.diagnose import at_chance
    from pvnas.retrain.modelfile import load_model
    from pvnas.runtime.rundir import atomic_write_bytes

    device = default_device()
    trained = load_model(checkpoint, device)
    cfg = trained.config
    test = eval_config(cfg, views, batch_size, workers, threads)
    clips, crops, chunk = test.clips, test.crops, test.batch_size
    clip = dataclasses.replace(cfg.clip, test_clips=clips, test_crops=crops)
    dataset = build_dataset(data, "val", clip, seed=cfg.seed, views="multi")
    classes = list(dataset.classes)
    if classes != trained.classes:
        raise DataError(
            f"--data {data}: its classes ({len(classes)}: {', '.join(classes[:4])}, ...) are not the "
            f"{len(trained.classes)} classes {checkpoint} was trained on ({', '.join(trained.classes[:4])}, ...)"
        )
    cuda_layout(trained.model, device)
    loader = build_loader(dataset, max(1, chunk // (clips * crops)), shuffle=False, seed=cfg.seed, workers=test.workers)
    model = compiled(trained.model, compile)
    with torch_threads(test.threads):
        result = evaluate(model, loader, clips, crops, device, chunk=chunk, desc=f"eval {clips}x{crops}")
    if result["videos"] == 0:
        raise DataError(f"--data {data}: no readable video in the val split ({result['skipped']} skipped)")
    out = {"checkpoint": str(checkpoint), "data": data, "views": f"{clips}x{crops}", **result, "classes": classes,
           "per_class": per_class(result["confusion"], classes)}
    if at_chance(result["top1"], len(classes), result["videos"]):  # a model that did not learn says so
        out["at_chance"] = True
        log.warning("top-1 %.3f on %d videos is within 3 standard errors of chance (1/%d = %.3f): this model has not "
                    "learned the task; its training run's metrics.jsonl holds the diagnosis (pvnas report RUN_DIR)",
                    result["top1"], result["videos"], len(classes), 1 / len(classes))
    path = Path(checkpoint).parent / f"eval_{sanitise(data)}.json"
    atomic_write_bytes(path, lambda f: f.write((json.dumps(out, indent=2) + "\n").encode()))
    log.info("wrote %s", path)
    return out
