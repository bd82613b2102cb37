"""The one dataset class behind every file-based spec: decode -> sample -> transform.

Layout-specific builders (kinetics, ssv2, ucf101, folder, csv, demo) only turn their manifests
into ``(path, label)`` pairs and a class list; everything about clips lives here, so that every
dataset cuts clips the same way.
"""

from __future__ import annotations

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
        if not samples:
            raise DataError(f"{self.source}: lists no videos")
        for path, label in samples:
            if not 0 <= label < len(self.classes):
                raise DataError(f"{self.source}: label {label} of {path} is outside [0, {len(self.classes)})")
        exists = [os.path.isfile(p) for p, _ in samples]
        self.samples = [s for s, ok in zip(samples, exists) if ok]
        self.missing = [p for (p, _), ok in zip(samples, exists) if not ok]
        if not self.samples:
            example = f" (e.g. {self.missing[0]})" if self.missing else ""
            raise DataError(f"{self.source}: none of the {len(self.missing)} listed videos exist{example}")
        if self.missing and not allow_missing:
            shown = ", ".join(self.missing[:3]) + (", ..." if len(self.missing) > 3 else "")
            raise DataError(
                f"{self.source}: {len(self.missing)} of {len(samples)} listed videos do not exist ({shown}); "
                "fix the paths, or add ?missing=skip to --data to leave them out"
            )
        if self.missing:
            logger.warning(
                "%s: %d of %d listed videos are missing and left out, e.g. %s",
                self.source,
                len(self.missing),
                len(samples),
                self.missing[0],
            )
        self._require_readable()

    def _require_readable(self) -> None:
        """Fail now rather than after an epoch of skips: probe files until one decodes."""
        reasons = []
        for path, _ in self.samples:
            try:
                self.decoder.info(path)
                return
            except DecodeError as e:
                reasons.append(e.reason)
        raise DataError(
            f"{self.source}: none of the {len(self.samples)} videos is readable "
            f"(e.g. {self.samples[0][0]}: {reasons[0]})"
        )

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
