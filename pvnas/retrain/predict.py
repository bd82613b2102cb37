"""``pvnas predict``: top-k class names with probabilities for video files.

Every video is decoded and scored on its own, so one broken file (missing, empty, not a video)
gives an error entry for that file and the others still get answers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import torch

from pvnas.data.decode import Decoder, DecodeError, get_decoder
from pvnas.data.datasets.video import VideoDataset
from pvnas.data.loader import Skipped
from pvnas.runtime.device import compiled, cuda_layout, default_device, torch_threads
from pvnas.retrain.evaluate import eval_config, view_logits
from pvnas.retrain.modelfile import load_model
from pvnas.errors import ConfigError

log = logging.getLogger(__name__)


def _unreadable(path: str, decoder: Decoder) -> str | None:
    """Why ``path`` cannot be scored (missing, empty, not a video), or None if it opens."""
    if not os.path.isfile(path):
        return "file not found"
    try:
        decoder.info(path)
    except DecodeError as exc:
        return exc.reason
    return None


def predict_videos(
    checkpoint: str | os.PathLike,
    videos: Sequence[str | os.PathLike],
    *,
    views: str = "1x1",
    top: int = 5,
    batch_size: int | None = None,
    compile: bool = False,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """One entry per video, in order: ``{"video", "views", "predictions": [{"label", "prob"}, ...]}``
    (probabilities averaged over the views, best first) or ``{"video", "error"}``. ``compile``: run the
    network through ``torch.compile``; ``threads``: torch threads (default: the model's)."""
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    device = default_device()
    trained = load_model(checkpoint, device)
    test = eval_config(trained.config, views, batch_size, 0, threads)
    clips, crops, chunk = test.clips, test.crops, test.batch_size
    clip = dataclasses.replace(trained.config.clip, test_clips=clips, test_crops=crops)
    cuda_layout(trained.model, device)
    model = compiled(trained.model, compile)
    decoder = get_decoder("pyav")
    results: list[dict[str, Any]] = []
    with torch_threads(test.threads):
        for video in videos:
            path = os.fspath(video)
            reason = _unreadable(path, decoder)
            if reason is None:
                item = VideoDataset([(path, 0)], trained.classes, clip, views="multi", decoder=decoder, source=path)[0]
            else:
                item = Skipped(path, reason)
            if isinstance(item, Skipped):
                log.warning("%s: %s", path, item.reason)
                results.append({"video": path, "error": item.reason})
                continue
            probs = torch.softmax(view_logits(model, item[0].unsqueeze(0), chunk, device), dim=-1).mean(1)[0]
            best = probs.topk(min(top, probs.numel()))
            results.append({
                "video": path,
                "views": f"{clips}x{crops}",
                "predictions": [
                    {"label": trained.classes[i], "prob": round(float(p), 6)} for p, i in zip(best.values, best.indices)
                ],
            })
    return results
