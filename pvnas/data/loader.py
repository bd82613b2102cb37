"""Batches that survive bad videos: datasets return a ``Skipped`` marker, collate drops it.

Dropping (not replacing) a bad sample keeps every other label where it was; the skipped paths
travel with the batch so the training loop can count them into ``metrics.jsonl``.

Loader workers outlive a SIGTERM/SIGINT sent to the whole process group (SLURM, Kubernetes, ``timeout``,
torchrun, Ctrl-C): the main process finishes its step and writes a checkpoint first, then shuts them down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

logger = logging.getLogger(__name__)

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
# Linux: a worker can tell who sent a signal. Elsewhere (macOS, Windows) workers keep torch's handling.
TAKES_STOP_SIGNALS = hasattr(signal, "sigwaitinfo")


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


class CachedItems:
    """Keeps a dataset's items in memory after their first load, up to ``max_bytes`` of clips (later items are
    loaded each time): validating every epoch then decodes each video once.

    Only for items that do not depend on the sample seed (``views="single"`` or ``"multi"``): the cache is keyed
    by the index alone. Each loader worker holds its own cache (its share of a persistent loader's batches).
    """

    def __init__(self, dataset: ClipDataset, max_bytes: int) -> None:
        self.dataset, self.max_bytes = dataset, max_bytes
        self.classes = dataset.classes
        self.items: dict[int, Item] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        index = key[0] if isinstance(key, tuple) else key
        if (item := self.items.get(index)) is not None:
            return item
        item = self.dataset[key]
        size = 0 if isinstance(item, Skipped) else item[0].nbytes
        if self.bytes + size <= self.max_bytes:
            self.items[index] = item
            self.bytes += size
        return item


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
    """A loader worker's start: seed python/numpy from torch's per-worker seed (itself from the loader seed),
    and leave stopping to the main process."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    _leave_stop_signals_to_the_loader()


def _leave_stop_signals_to_the_loader() -> None:
    """Keep this worker alive through a SIGTERM/SIGINT sent to its process group.

    torch's worker handler dies on any SIGTERM not sent by the main process, which then fails mid-step
    ("worker is killed by signal") before it can checkpoint. The signals stay blocked (every thread started
    from here on inherits that) and one thread takes them: a SIGTERM from the main process (torch's fallback
    for a worker that does not stop, and multiprocessing's at exit) still ends the worker, as in torch.
    """
    if not TAKES_STOP_SIGNALS:
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def take() -> None:
        while True:
            info = signal.sigwaitinfo(STOP_SIGNALS)
            if info.si_signo == signal.SIGTERM and info.si_pid == parent:
                os._exit(0)

    threading.Thread(target=take, name="pvnas-stop-signals", daemon=True).start()


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGTERM/SIGINT in this thread: workers forked inside start with them blocked, so a signal sent
    to the group before :func:`seed_worker` runs waits there instead of killing them. Here it is delivered
    on leaving."""
    if not TAKES_STOP_SIGNALS:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        with _stop_signals_blocked():  # the first iteration starts the (persistent) workers
            batches = super().__iter__()
        for batch in batches:
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
