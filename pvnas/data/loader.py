"""Batches that survive bad videos: datasets return a ``Skipped`` marker, collate drops it.

Dropping (not replacing) a bad sample keeps every other label where it was; the skipped paths
travel with the batch so the training loop can count them into ``metrics.jsonl``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import NamedTuple, Protocol, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

logger = logging.getLogger(__name__)


class Skipped(NamedTuple):
    """What a dataset returns instead of a sample when the video cannot be used."""

    path: str
    reason: str


Item = Union[tuple[torch.Tensor, int, int], Skipped]  # (clip, label, dataset index), or why the video was skipped


class ClipDataset(Protocol):
    """What every ``--data`` spec builds (:func:`pvnas.data.build_dataset`) and the loader, the training loops and
    the evaluation read: class names (index = label), a length, and items keyed by an index or by the
    ``(index, seed)`` pairs of :class:`SeededSampler`."""

    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, key: int | tuple[int, int]) -> Item: ...


class Batch(NamedTuple):
    clips: torch.Tensor  # (N, 3, T, H, W) float, or (N, V, 3, T, H, W) for multi-view test
    labels: torch.Tensor  # (N,) long
    indices: torch.Tensor  # (N,) dataset indices of the kept samples
    skipped: tuple[Skipped, ...]


def collate(items: Sequence[Item]) -> Batch:
    """Stack good ``(clip, label, index)`` items; keep ``Skipped`` ones aside."""
    good = [it for it in items if not isinstance(it, Skipped)]
    bad = tuple(it for it in items if isinstance(it, Skipped))
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), bad)
    clips = torch.stack([g[0] for g in good])
    labels = torch.tensor([g[1] for g in good], dtype=torch.long)
    indices = torch.tensor([g[2] for g in good], dtype=torch.long)
    return Batch(clips, labels, indices, bad)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's randomness: a function of (run seed, epoch, index) only.

    ``index=-1`` gives the seed of the epoch's shuffle.
    """
    return int(np.random.SeedSequence([seed, epoch, index + 1]).generate_state(1)[0])


class SeededSampler(Sampler):
    """Yields ``(index, seed)`` pairs: shuffling and per-clip randomness independent of workers.

    Semantics of ``DistributedSampler`` (pad to a multiple of ``world``, rank-strided shard,
    ``set_epoch``), plus ``start`` to resume mid-epoch. Because each clip's randomness comes from
    (seed, epoch, index), the same seed gives the same clips with 0, 1 or 8 loader workers.
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch = 0
        self.start = 0  # samples of this rank's shard to skip (resume inside an epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-self.size // self.world) - self.start

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = -(-self.size // self.world) * self.world
        order += order[: total - len(order)]
        shard = order[self.rank : total : self.world][self.start :]
        for index in shard:
            yield (index, sample_seed(self.seed, self.epoch, index))


def seed_worker(worker_id: int) -> None:
    """Seed python/numpy in a loader worker from torch's per-worker seed (itself from the loader seed)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class VideoLoader(DataLoader):
    """A DataLoader that reports the videos its batches skipped: one warning per file per run.

    Workers cannot share "already warned" state, so the warning is given here, in the main
    process. ``skipped`` maps each skipped path to its reason; ``skip_count`` counts skipped
    items including repeats over epochs (what ``metrics.jsonl`` should record).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = {}
        self.skip_count = 0

    def __iter__(self):
        for batch in super().__iter__():
            for item in batch.skipped:
                self.skip_count += 1
                if item.path not in self.skipped:
                    self.skipped[item.path] = item.reason
                    logger.warning("skipping video %s: %s", item.path, item.reason)
            yield batch


def build_loader(
    dataset: ClipDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    workers: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world: int = 1,
) -> VideoLoader:
    """A deterministic :class:`VideoLoader` over a :class:`SeededSampler`; call ``loader.sampler.set_epoch``.

    Workers persist across epochs (decoders keep their per-file index caches) and memory is
    pinned when CUDA is available.
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = SeededSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world=world)
    return VideoLoader(
        dataset,  # type: ignore[arg-type]  # (a torch Dataset by protocol, not by inheritance)
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
