"""The one run lifecycle of search and retrain: run directory, config record, resume, checkpoints, signals, epochs.

:class:`Run` owns what both commands must get right the same way:

* the run directory is claimed before anything is written: a directory that holds any part of a run
  (checkpoint, config, metrics, model) is never overwritten without ``--resume`` or ``--overwrite``;
* ``config.yaml`` records the resolved config; a resume is refused if anything but the fields the
  caller declares mutable (e.g. ``--epochs``, ``--workers``) differs, or if the checkpoint is another
  command's;
* ``checkpoint.pt`` holds the state of every registered object, the progress inside the epoch and the
  RNG states; it is written atomically after every epoch, every ``--checkpoint-every`` minutes and on
  SIGTERM/SIGINT, and loaded as data (``weights_only``); a write killed midway leaves the previous one
  (its temp file is removed when the directory is next claimed);
* SIGTERM/SIGINT to the process or its whole group (loader workers outlive it, see
  :mod:`pvnas.data.loader`) stop every rank at the same step: checkpoint, then :class:`Preempted`;
* what both commands do before and around their epochs (:meth:`Run.open`): join the process group, seed,
  build the training split and check its size against the batch, the loader over this rank's shard, the
  steps per epoch, the TensorBoard writer;
* the epoch loop: progress bar, skipped videos, the non-finite guard, preemption.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable, Mapping, Protocol

from tqdm.auto import tqdm

from pvnas.config import ClipConfig, RunOptions
from pvnas.data import build_dataset
from pvnas.data.loader import ClipDataset, VideoLoader, build_loader
from pvnas.runtime.device import torch_threads
from pvnas.runtime.distributed import DistEnv, any_rank, init_distributed
from pvnas.runtime.rundir import (
    MetricsLog, load_torch, remove_stale_temps, rng_state, save_torch, save_yaml, seed_everything, set_rng_state,
)
from pvnas.runtime.tensorboard import TensorBoard
from pvnas.errors import ConfigError, DataError, PvnasError
from pvnas.version import __version__

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pvnas-checkpoint/1"
# what makes a directory a run: never replaced without --resume or --overwrite
RUN_FILES = ("checkpoint.pt", "config.yaml", "metrics.jsonl", "model.pt")
# what --overwrite removes besides RUN_FILES: everything a run writes
OUTPUTS = ("genotype.json", "report.html", "alphas", "plots", "tensorboard")
ALWAYS_MUTABLE = frozenset({"version", "preset"})  # a resume may come from another release or preset name


class Preempted(PvnasError):
    """Raised after a SIGTERM/SIGINT once the current step finished and a checkpoint was written."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class NonFiniteLossError(PvnasError):
    """Too many consecutive non-finite losses: the run stops, the last good checkpoint stays."""


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag checked between steps (so a step is never torn)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        if self.signum is None:  # `timeout` signals the process, then its group: the same stop twice
            log.warning("received %s: finishing the current step, then writing a checkpoint",
                        signal.Signals(signum).name)
        self.signum = signum

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
    """True every ``minutes`` minutes of wall time (None disables timed checkpoints)."""

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


@dataclass
class TrainingSet:
    """What a run trains on: the training split, its classes, the loader over this rank's shard."""

    dataset: ClipDataset
    loader: VideoLoader
    steps_per_epoch: int  # batches of this rank per epoch (the loader drops the last partial one)

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)


def training_set(data: str, clip: ClipConfig, batch_size: int, workers: int, seed: int, env: DistEnv) -> TrainingSet:
    """The training split of ``data`` and its loader; a batch larger than this rank's share is an error."""
    dataset = build_dataset(data, "train", clip, seed=seed, views="train")
    if len(dataset) == 0:
        raise DataError(f"--data {data}: the training split has no videos")
    if batch_size * env.world > len(dataset):
        raise ConfigError(f"--batch-size {batch_size} x {env.world} processes exceeds the {len(dataset)} training "
                          f"videos of {data}; lower --batch-size")
    loader = build_loader(dataset, batch_size, shuffle=True, seed=seed, workers=workers, drop_last=True,
                          rank=env.rank, world=env.world)
    return TrainingSet(dataset, loader, -(-len(dataset) // env.world) // batch_size)


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and key != "genotype":  # a genotype is compared whole
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class Run:
    """A run directory through its life; see the module docstring. Only rank 0 writes.

    Construct it before any output is written: it checks (and with ``--overwrite`` clears) the directory.
    """

    def __init__(self, out: str | Path, command: str, options: RunOptions, env: DistEnv = DistEnv(), *,
                 data: str = "", preset: str = "custom") -> None:
        self.out, self.command, self.options, self.env = Path(out), command, options, env
        self.data, self.preset = data, preset
        self.threads = 0  # torch threads of the epoch loop (0: every core)
        self.board = TensorBoard(self.out, False)  # (a real one once start() knows the run may write)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        self.progress = Progress()
        self.state: dict[str, Stateful] = {}
        self.record: dict[str, Any] = {}
        self.last_record: dict[str, Any] = {}  # the metrics of the last epoch this process ran
        held = [name for name in RUN_FILES if (self.out / name).exists()]
        if options.resume:
            if not self.checkpoint_path.is_file():
                raise ConfigError(f"--resume: no checkpoint at {self.checkpoint_path}; start without --resume")
        elif held and not options.overwrite:
            raise ConfigError(
                f"{self.out} already holds a run ({', '.join(held)}); use --resume to continue it, --overwrite to "
                "replace it, or choose another --out"
            )
        elif held and env.is_main:
            log.warning("--overwrite: replacing the run in %s", self.out)
            for name in RUN_FILES + OUTPUTS:
                path = self.out / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        if env.is_main and self.out.is_dir():
            for path in remove_stale_temps(self.out):
                log.info("removed %s, left by a write that was killed (the file it was replacing is intact)", path)

    @classmethod
    def open(cls, command: str, out: str | Path, options: RunOptions, data: str, preset: str, *, clip: ClipConfig,
             batch_size: int, workers: int, seed: int, threads: int = 0) -> tuple["Run", TrainingSet]:
        """The skeleton of ``pvnas search`` and ``train``: join the process group (torchrun), claim the run
        directory, seed everything, build the training set; :meth:`start` and :meth:`loop` (on ``threads``
        torch threads, 0: every core) follow."""
        env = init_distributed()
        run = cls(out, command, options, env, data=data, preset=preset)
        run.threads = threads
        seed_everything(seed)
        return run, training_set(data, clip, batch_size, workers, seed, env)

    @property
    def resume_hint(self) -> str:
        return f"checkpoint written to {self.checkpoint_path}. Resume with the same command plus --resume"

    def start(self, record: dict[str, Any], state: dict[str, Stateful], classes: list[str],
              mutable: Iterable[str] = (), renamed: Mapping[str, str] | None = None) -> Progress:
        """Register the config ``record`` (command, version, preset, data, world size and ``classes`` are added) and
        the objects a checkpoint holds; resume them or record a fresh start.

        ``mutable``: dotted config keys (``search.epochs``) a resume may change; ``renamed``: old dotted keys of
        checkpoints written by earlier releases -> their names now.
        """
        self.record = {"command": self.command, "version": __version__, "preset": self.preset, "data": self.data,
                       "world_size": self.env.world, "classes": classes, **record}
        self.state = state
        self.board = TensorBoard(self.out, self.options.tensorboard and self.env.is_main)
        if self.options.resume:
            self._restore(set(mutable) | ALWAYS_MUTABLE, renamed or {})
            if self.env.is_main:
                self.metrics.truncate_after("epoch", self.progress.epoch)
        if self.env.is_main:
            save_yaml(self.record, self.out / "config.yaml")
        return self.progress

    def checkpoint(self) -> None:
        """Write ``checkpoint.pt`` atomically (rank 0)."""
        if not self.env.is_main:
            return
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "command": self.command,
                "config": self.record,
                "progress": asdict(self.progress),
                "state": {name: obj.state_dict() for name, obj in self.state.items()},
                "rng": rng_state(),
            },
            self.checkpoint_path,
        )

    def _restore(self, mutable: set[str], renamed: Mapping[str, str]) -> None:
        path = self.checkpoint_path
        ckpt = load_torch(path, f"a `pvnas {self.command}` checkpoint")
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"--resume: {path} is not a pvnas checkpoint (format {CHECKPOINT_FORMAT!r}); "
                              "start a new --out")
        if ckpt.get("command") != self.command:
            raise ConfigError(f"--resume: {path} is a `pvnas {ckpt.get('command')}` checkpoint, not a "
                              f"`pvnas {self.command}` one; resume it with `pvnas {ckpt.get('command')} ... --resume`")
        then, now = {renamed.get(k, k): v for k, v in _flatten(ckpt["config"]).items()}, _flatten(self.record)
        for key in sorted(set(then) | set(now)):
            if key not in then:  # a setting added by a later release: the checkpoint ran without it
                continue
            if key not in mutable and then.get(key) != now.get(key):
                raise ConfigError(
                    f"--resume: {path} was written with {key} = {then.get(key)!r}, this run has {now.get(key)!r}; "
                    "resume with the same options or start a new --out"
                )
        try:
            for name, obj in self.state.items():
                obj.load_state_dict(ckpt["state"][name])
            self.progress = Progress(**ckpt["progress"])
            set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--resume: {path} is incomplete or inconsistent ({type(exc).__name__}: {exc})") from None

    def loop(
        self,
        epochs: int,
        loader: Any,
        step: Callable[[Any], tuple[float, float, bool]],
        end_epoch: Callable[[int], dict[str, Any]],
        *,
        begin_epoch: Callable[[int], None] = lambda epoch: None,
        lr: Callable[[], float],
    ) -> None:
        """Run epochs ``self.progress.epoch .. epochs - 1``: ``begin_epoch(epoch)``, the batch loop with ``step``,
        then ``end_epoch(epoch)`` returns the epoch's metrics record (rank 0 appends it), then a checkpoint."""
        guard = NonFiniteGuard(self.options.max_bad_steps)
        timer = CheckpointTimer(self.options.checkpoint_every)
        with StopSignal() as stop, contextlib.closing(self.board), torch_threads(self.threads):
            while self.progress.epoch < epochs:
                epoch = self.progress.epoch
                loader.sampler.set_epoch(epoch, start=self.progress.step * loader.batch_size)
                begin_epoch(epoch)
                self._epoch(loader, step, f"{self.command} epoch {epoch + 1}/{epochs}", lr, guard, stop, timer)
                record = self.last_record = end_epoch(epoch)
                if self.env.is_main:
                    self.metrics.append(record)
                    self.board.scalars(record, epoch + 1)
                self.progress = Progress(epoch=epoch + 1, skipped=self.progress.skipped)
                self.checkpoint()
                if self.progress.epoch < epochs and any_rank(stop.requested, self.env):  # came during end_epoch
                    raise Preempted(f"stopped after {self.command} epoch {epoch + 1}/{epochs}; {self.resume_hint}",
                                    stop.signum or signal.SIGTERM)

    def _epoch(
        self, loader: Iterable, step: Callable[[Any], tuple[float, float, bool]], desc: str, lr: Callable[[], float],
        guard: NonFiniteGuard, stop: StopSignal, timer: CheckpointTimer,
    ) -> None:
        """One pass over ``loader``; ``progress.step`` counts the batch before ``step`` runs, so a checkpoint
        written here resumes at the next batch."""
        progress = self.progress
        bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, initial=progress.step,
                   total=progress.step + len(loader), disable=not self.env.is_main)  # type: ignore[arg-type]
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
            if any_rank(stop.requested, self.env):
                progress.seconds += time.perf_counter() - t0
                self.checkpoint()
                raise Preempted(f"stopped at {desc}, step {progress.step}; {self.resume_hint}",
                                stop.signum or signal.SIGTERM)
            if timer.due():
                progress.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.checkpoint()
        bar.close()
        progress.seconds += time.perf_counter() - t0
        if progress.seen == 0:
            raise DataError(f"--data {self.data}: no readable video in {desc} ({len(progress.skipped)} skipped)")
