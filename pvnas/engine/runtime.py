"""What keeps long runs alive: preemption handling, the non-finite guard, timed checkpoints.

Shared by the search and the training loop so both stop, save and resume the same way.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Callable, Iterable

from tqdm.auto import tqdm

from pvnas.engine.distributed import DistEnv, any_rank
from pvnas.errors import DataError, PvnasError

log = logging.getLogger(__name__)


class Preempted(PvnasError):
    """Raised after a SIGTERM/SIGINT once the current step finished and a checkpoint was written."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class NonFiniteLossError(PvnasError):
    """Too many consecutive non-finite losses: the run stops, the last good checkpoint stays."""


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag checked between steps (so a step is never torn)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum
        log.warning("received %s: finishing the current step, then writing a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave handlers alone
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    @property
    def requested(self) -> bool:
        return self.signum is not None


class NonFiniteGuard:
    """Counts consecutive non-finite losses; the caller skips that step's updates."""

    def __init__(self, limit: int = 5) -> None:
        self.limit, self.in_a_row = limit, 0

    def check(self, loss: float, where: str) -> bool:
        """True if ``loss`` is finite; otherwise warn, count, and raise after ``limit`` in a row."""
        if math.isfinite(loss):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        log.warning("non-finite loss (%s) at %s: skipping this step's updates (%d in a row)", loss, where, self.in_a_row)
        if self.in_a_row >= self.limit:
            raise NonFiniteLossError(
                f"{self.in_a_row} non-finite losses in a row at {where}; the last good checkpoint is kept. "
                "Lower the learning rate or check the data, then resume with --resume"
            )
        return False


class CheckpointTimer:
    """True every ``minutes`` minutes of wall time (0 or None disables timed checkpoints)."""

    def __init__(self, minutes: float | None) -> None:
        self.period = (minutes or 0) * 60.0
        self.last = time.monotonic()

    def due(self) -> bool:
        if self.period <= 0 or time.monotonic() - self.last < self.period:
            return False
        self.last = time.monotonic()
        return True


@dataclass
class Progress:
    """Where a run is inside its epochs; saved in checkpoints so a resume continues mid-epoch."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # batches done in this epoch
    seen: int = 0
    loss_sum: float = 0.0
    acc_sum: float = 0.0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


def run_epoch(
    loader: Iterable,
    progress: Progress,
    step: Callable[[Any], tuple[float, float, bool]],
    *,
    desc: str,
    lr: Callable[[], float],
    env: DistEnv,
    guard: NonFiniteGuard,
    stop: StopSignal,
    timer: CheckpointTimer,
    checkpoint: Callable[[], None],
    resume_hint: str,
    data: str,
) -> None:
    """The batch loop shared by search and training: bar, skipped files, guard, preemption, checkpoints.

    ``step(batch)`` updates the model and returns (loss, accuracy, finite); ``progress`` is advanced
    in place (``progress.step`` counts the batch before ``step`` runs), so a checkpoint written
    here resumes at the next batch.
    """
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, initial=progress.step,
               total=progress.step + len(loader), disable=not env.is_main)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for batch in bar:
        progress.skipped.extend(s.path for s in batch.skipped if s.path not in progress.skipped)
        progress.step += 1
        if batch.labels.numel() > 0:
            loss, acc, finite = step(batch)
            if guard.check(loss if finite else math.nan, f"{desc} step {progress.step}"):
                n = batch.labels.numel()
                progress.seen += n
                progress.loss_sum += loss * n
                progress.acc_sum += acc * n
            if progress.seen:
                bar.set_postfix(loss=f"{progress.loss_sum / progress.seen:.3f}",
                                acc=f"{progress.acc_sum / progress.seen:.3f}", lr=f"{lr():.2g}")
        if any_rank(stop.requested, env):
            progress.seconds += time.perf_counter() - t0
            checkpoint()
            raise Preempted(f"stopped at {desc}, step {progress.step}; {resume_hint}", stop.signum or signal.SIGTERM)
        if timer.due():
            progress.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            checkpoint()
    bar.close()
    progress.seconds += time.perf_counter() - t0
    if progress.seen == 0:
        raise DataError(f"--data {data}: no readable video in {desc} ({len(progress.skipped)} skipped)")
