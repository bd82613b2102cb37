"""The one dataset class behind every file-based spec: decode -> sample -> transform.

Layout-specific builders (kinetics, ssv2, ucf101, folder, csv, demo) only turn their manifests
into ``(path, label)`` pairs and a class list; everything about clips lives here, so that every
dataset cuts clips the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pvnas.config import ClipConfig
from pvnas.data.decode import DecodeError, Decoder, PyAVDecoder
from pvnas.data.loader import Skipped
from pvnas.data.sampling import eval_indices, train_indices
from pvnas.data.transforms import eval_transform, train_transform
from pvnas.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

VIEWS = ("train", "single", "multi")


def refusal(
    source: str, listed: int, missing: Sequence[str], readable: int | None, allow_missing: bool, example: str = ""
) -> str | None:
    """Why a run refuses a split, or None: it lists no video, some listed videos do not exist (unless
    ``?missing=skip``), or none of them is readable (``readable`` = 0; None: not probed yet). The one rule
    :class:`VideoDataset` and ``pvnas data`` apply, so the check and the runs agree."""
    if listed == 0:
        return f"{source}: lists no videos"
    if len(missing) == listed:
        return f"{source}: none of the {listed} listed videos exist (e.g. {missing[0]})"
    if missing and not allow_missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        return (f"{source}: {len(missing)} of {listed} listed videos do not exist ({shown}); "
                "fix the paths, or add ?missing=skip to --data to leave them out")
    if readable == 0:
        return f"{source}: none of the {listed - len(missing)} videos is readable" + (f" (e.g. {example})" if example else "")
    return None


def check_labels(source: str, samples: Sequence[tuple[str, int]], classes: Sequence[str]) -> None:
    """Every label must index a class: a DataError naming the first that does not."""
    for path, label in samples:
        if not 0 <= label < len(classes):
            raise DataError(f"{source}: label {label} of {path} is outside [0, {len(classes)})")


def file_list_hash(samples: Sequence[tuple[str, int]]) -> str:
    """A short SHA-256 of a split's sorted ``(path, label)`` list, paths relative to the folder they share:
    equal on two machines exactly when they hold the same files in the same split with the same labels
    (recorded in a run's config.yaml)."""
    if not samples:
        return ""
    base = os.path.commonpath([os.path.dirname(p) for p, _ in samples])
    lines = sorted(f"{os.path.relpath(p, base).replace(os.sep, '/')}\t{label}" for p, label in samples)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


class VideoDataset(Dataset):
    """Map-style dataset of ``(path, label)`` samples; items are ``(clip, label, index)`` or ``Skipped``.

    ``views`` decides what a clip is:

    * ``"train"``: one random clip (window, scale, crop, flip drawn from the sample seed; the window is
      ``clip.window_seconds`` long, in frames at the video's own rate),
      float ``(3, T, crop, crop)``;
    * ``"single"``: the centre clip, centre crop, float ``(3, T, crop, crop)`` — cheap validation;
    * ``"multi"``: ``test_clips`` x ``test_crops`` views, float ``(V, 3, T, crop, crop)``,
      clip-major (views ``c * test_crops .. c * test_crops + test_crops - 1`` share clip ``c``).

    Items are keyed by an index or an ``(index, seed)`` pair (:class:`~pvnas.data.loader.SeededSampler`);
    all randomness comes from ``np.random.default_rng(seed)`` (seed = index for a bare int), so
    a clip does not depend on which worker loads it.

    Listed files that do not exist are a :class:`DataError` before any training (a manifest that
    points at nothing means a wrong root or an incomplete download); with ``allow_missing`` they
    are dropped (``self.missing``) with one warning instead. A list with no readable video is a
    :class:`DataError` too. Files that exist but fail to decode come back as
    :class:`Skipped` (the loader warns once per file and counts them); labels never shift.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        clip: ClipConfig,
        *,
        views: str = "train",
        decoder: Decoder | None = None,
        flip: bool | None = None,
        source: str = "",
        allow_missing: bool = False,
    ) -> None:
        if views not in VIEWS:
            raise ConfigError(f"views must be one of {VIEWS}, got {views!r}")
        if clip.scale[0] < clip.crop or clip.scale[0] > clip.scale[1]:
            raise ConfigError(f"clip scale {clip.scale} must satisfy crop ({clip.crop}) <= min <= max")
        self.classes = list(classes)
        self.clip, self.views = clip, views
        self.flip = clip.flip if flip is None else flip
        self.decoder: Decoder = decoder if decoder is not None else PyAVDecoder()
        self.source = source or "the sample list"
        check_labels(self.source, samples, self.classes)
        exists = [os.path.isfile(p) for p, _ in samples]
        self.samples = [s for s, ok in zip(samples, exists) if ok]
        self.missing = [p for (p, _), ok in zip(samples, exists) if not ok]
        if problem := refusal(self.source, len(samples), self.missing, None, allow_missing):
            raise DataError(problem)
        if self.missing:
            logger.warning(
                "%s: %d of %d listed videos are missing and left out, e.g. %s",
                self.source,
                len(self.missing),
                len(samples),
                self.missing[0],
            )
        self._require_readable()
        self.fingerprint = file_list_hash(self.samples)

    def _require_readable(self) -> None:
        """Fail now rather than after an epoch of skips: probe files until one decodes."""
        reasons = []
        for path, _ in self.samples:
            try:
                self.decoder.info(path)
                return
            except DecodeError as e:
                reasons.append(e.reason)
        raise DataError(refusal(self.source, len(self.samples), [], 0, False, f"{self.samples[0][0]}: {reasons[0]}"))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int] | Skipped:
        index, seed = key if isinstance(key, tuple) else (key, key)
        path, label = self.samples[index]
        try:
            clip = self._clip(path, np.random.default_rng(seed))
        except DecodeError as e:
            logger.debug("skipping %s: %s", path, e.reason)
            return Skipped(path, e.reason)
        return clip, label, index

    def _clip(self, path: str, rng: np.random.Generator) -> torch.Tensor:
        cfg = self.clip
        info = self.decoder.info(path)
        n, window = info.num_frames, cfg.window_frames(info.fps)  # the same duration at any frame rate
        if self.views == "train":
            video = self.decoder.read(path, train_indices(n, cfg.frames, window, rng))
            return train_transform(video, cfg, rng, flip=self.flip)
        clips, crops = (cfg.test_clips, cfg.test_crops) if self.views == "multi" else (1, 1)
        indices = eval_indices(n, cfg.frames, window, clips)
        video = self.decoder.read(path, indices.reshape(-1)).unflatten(0, indices.shape)  # (clips, T, H, W, 3)
        views = torch.cat([eval_transform(v, cfg, crops) for v in video])
        return views if self.views == "multi" else views[0]
