"""The one run lifecycle of search and retrain: run directory, config record, resume, checkpoints, signals, epochs.

:class:`Run` owns what both commands must get right the same way:

* the run directory is claimed before anything is written: a directory that holds any part of a run
  (checkpoint, config, metrics, model) is never overwritten without ``--resume`` or ``--overwrite``;
* ``--resume auto`` makes one command line survive requeues and restarts (SLURM ``--requeue``, torchrun
  ``--max-restarts``): it starts when the directory holds no run, continues from the checkpoint of the same
  command and config, refuses another command's or config's run, and for a finished run raises
  :class:`RunFinished` before writing anything. A run stopped before its first checkpoint (only
  ``config.yaml``/``metrics.jsonl``) starts afresh under ``--resume auto`` and ``--resume`` alike;
* ``config.yaml`` records the resolved config and, under ``restarts``, every restart (time, where it resumed
  from); a resume is refused if anything but the fields the caller declares mutable (e.g. ``--epochs``,
  ``--workers``) differs, or if the run is another command's;
* ``metrics.jsonl`` holds each epoch once: a resume drops the records of the epochs it redoes;
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
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch

from pvnas.config import ClipConfig, RunOptions
from pvnas.data import build_dataset
from pvnas.data.loader import ClipDataset, VideoLoader, build_loader
from pvnas.runtime.device import torch_threads
from pvnas.runtime.distributed import DistEnv, any_rank, init_distributed
from pvnas.runtime.progress import progress as progress_bar
from pvnas.runtime.rundir import (
    MetricsLog, load_torch, load_yaml, remove_stale_temps, rng_state, save_torch, save_yaml, seed_everything,
    set_rng_state,
)
from pvnas.runtime.steps import READ_EVERY
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
# the file each command writes last: with every epoch checkpointed and this file there, the run is finished
FINAL_OUTPUT = {"search": "genotype.json", "train": "model.pt"}
TRAIN_CACHE_BYTES = 2 << 30  # whole decoded training videos kept in memory (uint8; a small dataset fits)


class Preempted(PvnasError):
    """Raised after a SIGTERM/SIGINT once the current step finished and a checkpoint was written."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class RunFinished(PvnasError):
    """``--resume auto`` found the run finished (same command and config): nothing to do, nothing written."""

    exit_code = 0


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
    """The training split of ``data`` and its loader; a batch larger than this rank's share is an error. Up to
    :data:`TRAIN_CACHE_BYTES` of whole decoded videos stay in memory (shared out over the loader workers)."""
    dataset = build_dataset(data, "train", clip, seed=seed, views="train",
                            cache_bytes=TRAIN_CACHE_BYTES // max(workers, 1))
    if len(dataset) == 0:
        raise DataError(f"--data {data}: the training split has no videos")
    if batch_size * env.world > len(dataset):
        raise ConfigError(f"--batch-size {batch_size} x {env.world} processes exceeds the {len(dataset)} training "
                          f"videos of {data}; lower --batch-size")
    loader = build_loader(dataset, batch_size, shuffle=True, seed=seed, workers=workers, drop_last=True,
                          rank=env.rank, world=env.world)
    return TrainingSet(dataset, loader, -(-len(dataset) // env.world) // batch_size)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """Tuples as lists, as config.yaml holds them, so that a record compares equal to its YAML."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _flatten(record: dict[str, Any], renamed: Mapping[str, str] | None = None, prefix: str = "") -> dict[str, Any]:
    """Dotted keys (``search.epochs``) of a config record, old keys by their ``renamed`` names."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and key != "genotype":  # a genotype is compared whole
            out.update(_flatten(value, None, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = _plain(value)
    return {renamed.get(k, k): v for k, v in out.items()} if renamed else out


class Run:
    """A run directory through its life; see the module docstring. Only rank 0 writes.

    Construct it before any output is written (and before the first collective: every rank reads the directory
    here, before rank 0 may change it): it checks (and with ``--overwrite`` clears) the directory.
    """

    def __init__(self, out: str | Path, command: str, options: RunOptions, env: DistEnv = DistEnv(), *,
                 data: str = "", preset: str = "custom") -> None:
        self.out, self.command, self.options, self.env = Path(out), command, options, env
        self.data, self.preset = data, preset
        self.threads = 0  # torch threads of the epoch loop (0: every core)
        self.epochs = 0  # the epochs loop() runs to, saved in checkpoints (a run with all of them is finished)
        self.board = TensorBoard(self.out, False)  # (a real one once start() knows the run may write)
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        self.progress = Progress()
        self.state: dict[str, Stateful] = {}
        self.record: dict[str, Any] = {}
        self.last_record: dict[str, Any] = {}  # the metrics of the last epoch this process ran
        self.data_files: dict[str, str] = {}  # split -> hash of its (file, label) list (see note_files)
        self.saved: dict[str, Any] | None = None  # the checkpoint a resume continues from
        self.previous: dict[str, Any] | None = None  # config.yaml of a run stopped before its first checkpoint
        self.restarts: list[dict[str, Any]] = []  # config.yaml's record of the earlier restarts
        held = [name for name in RUN_FILES if (self.out / name).exists()]
        flag = "--resume auto" if options.resume == "auto" else "--resume"
        if options.overwrite:
            if held and env.is_main:
                log.warning("--overwrite: replacing the run in %s", self.out)
                self._clear()
        elif not options.resume:
            if held:
                raise ConfigError(
                    f"{self.out} already holds a run ({', '.join(held)}); use --resume to continue it, --overwrite to "
                    "replace it, or choose another --out (--resume auto: continue it, or start when there is none)"
                )
        elif self.checkpoint_path.is_file():
            self.saved = self._load_checkpoint(flag)
            self.restarts = self._read_config().get("restarts") or []
        elif held:  # stopped before its first checkpoint: restarted afresh once start() knows it is this run
            if not (self.out / "config.yaml").is_file():
                raise ConfigError(f"{flag}: {self.out} holds {', '.join(held)} but neither checkpoint.pt nor "
                                  "config.yaml, so not a run to continue; choose another --out or use --overwrite")
            final = FINAL_OUTPUT.get(command, "")
            if final and (self.out / final).exists():  # a finished run whose checkpoint was removed: keep it
                raise ConfigError(f"{flag}: {self.out} holds {final} but no checkpoint.pt (a finished run whose "
                                  "checkpoint was removed?); nothing to continue: use --overwrite to run it again")
            self.previous = self._read_config()
            self.restarts = self.previous.pop("restarts", None) or []
        elif options.resume is True:
            raise ConfigError(f"--resume: no checkpoint at {self.checkpoint_path}; start without --resume "
                              "(--resume auto starts a run that is not there yet)")
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
        train = training_set(data, clip, batch_size, workers, seed, env)
        run.note_files("train", train.dataset)
        return run, train

    def note_files(self, split: str, dataset: Any) -> None:
        """Record in config.yaml (``data_files``) the hash of the files ``split`` reads and their labels: two
        machines or runs with the same hash used the same files in the same split."""
        if getattr(dataset, "fingerprint", None):
            self.data_files[split] = dataset.fingerprint

    @property
    def resume_hint(self) -> str:
        return f"checkpoint written to {self.checkpoint_path}. Resume with the same command plus --resume"

    def start(self, record: dict[str, Any], state: dict[str, Stateful], classes: list[str],
              mutable: Iterable[str] = (), renamed: Mapping[str, str] | None = None) -> Progress:
        """Register the config ``record`` (command, version, preset, data, world size and ``classes`` are added) and
        the objects a checkpoint holds; resume them, restart a run stopped before its first checkpoint, or record
        a fresh start. Raises :class:`RunFinished` (``--resume auto``, finished run) before writing anything.

        ``mutable``: dotted config keys (``search.epochs``) a resume may change; ``renamed``: old dotted keys of
        checkpoints written by earlier releases -> their names now.
        """
        self.record = {"command": self.command, "version": __version__, "preset": self.preset, "data": self.data,
                       **({"data_files": self.data_files} if self.data_files else {}),
                       "world_size": self.env.world, "classes": classes, **record}
        self.state = state
        flag = "--resume auto" if self.options.resume == "auto" else "--resume"
        restart: dict[str, Any] | None = None
        if self.saved is not None:
            self._same_run(self.saved["config"], set(mutable) | ALWAYS_MUTABLE, flag, self.checkpoint_path, renamed)
            if self.options.resume == "auto" and self._finished(self.saved, renamed or {}):
                done = self.saved["progress"]["epoch"]
                raise RunFinished(f"{self.out} holds a finished `pvnas {self.command}` run of this config "
                                  f"({done} epoch{'s' * (done != 1)} done); nothing to do, nothing written "
                                  "(--overwrite replaces it; more --epochs with --resume continue it)")
            self._restore(self.saved)
            self.saved = None  # (its tensors are in the model and optimizers now)
            restart = {"time": _now(), "from": "checkpoint", "epoch": self.progress.epoch, "step": self.progress.step}
            if self.env.is_main:
                self.metrics.truncate_after("epoch", self.progress.epoch)
        elif self.previous is not None:
            self._same_run(self.previous, set(mutable) | ALWAYS_MUTABLE, flag, self.out / "config.yaml", renamed)
            log.warning("%s: %s holds no checkpoint (the run stopped before its first one): starting it afresh",
                        flag, self.out)
            if self.env.is_main:
                self._clear()
            restart = {"time": _now(), "from": "scratch", "epoch": 0, "step": 0}
        self.board = TensorBoard(self.out, self.options.tensorboard and self.env.is_main)
        if self.env.is_main:
            restarts = self.restarts + ([restart] if restart else [])
            save_yaml({**self.record, **({"restarts": restarts} if restarts else {})}, self.out / "config.yaml")
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
                "epochs": self.epochs,
                "progress": asdict(self.progress),
                "state": {name: obj.state_dict() for name, obj in self.state.items()},
                "rng": rng_state(),
            },
            self.checkpoint_path,
        )

    def _clear(self) -> None:
        for name in RUN_FILES + OUTPUTS:
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _read_config(self) -> dict[str, Any]:
        path = self.out / "config.yaml"
        return load_yaml(path) if path.is_file() else {}

    def _load_checkpoint(self, flag: str) -> dict[str, Any]:
        path = self.checkpoint_path
        ckpt = load_torch(path, f"a `pvnas {self.command}` checkpoint")
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("config"), dict):
            raise ConfigError(f"{flag}: {path} is not a pvnas checkpoint (format {CHECKPOINT_FORMAT!r}); "
                              "start a new --out")
        return ckpt

    def _same_run(self, then_record: dict[str, Any], mutable: set[str], flag: str, path: Path,
                  renamed: Mapping[str, str] | None) -> None:
        """Refuse (one line) a run of another command, or one whose config differs outside ``mutable`` (keys of
        earlier releases read by their ``renamed`` names)."""
        command = then_record.get("command")
        if command != self.command:
            raise ConfigError(f"{flag}: {path} is a `pvnas {command}` run, not a `pvnas {self.command}` one; "
                              f"continue it with `pvnas {command} ... {flag}` or choose another --out")
        then, now = _flatten(then_record, renamed), _flatten(self.record)
        for key in sorted(set(then) | set(now)):
            if key not in then:  # a setting added by a later release: the checkpoint ran without it
                continue
            if key not in mutable and then.get(key) != now.get(key):
                raise ConfigError(
                    f"{flag}: {path} was written with {key} = {then.get(key)!r}, this run has {now.get(key)!r}; "
                    "resume with the same options or start a new --out"
                )

    def _finished(self, ckpt: dict[str, Any], renamed: Mapping[str, str]) -> bool:
        """Every epoch done and the final output written, by this very config (more --epochs continue it)."""
        done = ckpt["progress"].get("epoch", 0) >= ckpt.get("epochs", math.inf) and not ckpt["progress"].get("step")
        then, now = _flatten(ckpt["config"], renamed), _flatten(self.record)
        same = all(then.get(key) == now.get(key) for key in set(then) | set(now) if key not in ALWAYS_MUTABLE)
        return done and same and (self.out / FINAL_OUTPUT.get(self.command, "checkpoint.pt")).exists()

    def _restore(self, ckpt: dict[str, Any]) -> None:
        try:
            for name, obj in self.state.items():
                obj.load_state_dict(ckpt["state"][name])
            self.progress = Progress(**ckpt["progress"])
            set_rng_state(ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"--resume: {self.checkpoint_path} is incomplete or inconsistent "
                              f"({type(exc).__name__}: {exc})") from None

    def loop(
        self,
        epochs: int,
        loader: Any,
        step: Callable[[Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        end_epoch: Callable[[int], dict[str, Any]],
        *,
        begin_epoch: Callable[[int], None] = lambda epoch: None,
        lr: Callable[[], float],
    ) -> None:
        """Run epochs ``self.progress.epoch .. epochs - 1``: ``begin_epoch(epoch)``, the batch loop with ``step``,
        then ``end_epoch(epoch)`` returns the epoch's metrics record (rank 0 appends it), then a checkpoint."""
        self.epochs = epochs
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
        self, loader: Iterable, step: Callable[[Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], desc: str,
        lr: Callable[[], float], guard: NonFiniteGuard, stop: StopSignal, timer: CheckpointTimer,
    ) -> None:
        """One pass over ``loader``; ``progress.step`` counts the batch before ``step`` runs, so a checkpoint
        written here resumes at the next batch. ``step`` returns (loss, accuracy, finite) on the device: they are
        read :data:`~pvnas.runtime.steps.READ_EVERY` steps at a time (and before every checkpoint), each step then
        accounted for as it ran (the guard sees the steps in order)."""
        progress = self.progress
        bar = progress_bar(loader, desc, initial=progress.step, total=progress.step + len(loader),  # type: ignore[arg-type]
                           disable=not self.env.is_main)
        pending: list[tuple[int, int, torch.Tensor]] = []  # (step, clips, [loss, acc, finite]) not read yet

        def read() -> None:
            if not pending:
                return
            for (at, n, _), (loss, acc, finite) in zip(pending, torch.stack([r for *_, r in pending]).tolist()):
                if guard.check(loss if finite else math.nan, f"{desc} step {at}"):
                    progress.seen += n
                    progress.loss_sum += loss * n
                    progress.acc_sum += acc * n
            pending.clear()
            if progress.seen:
                bar.set_postfix(loss=f"{progress.loss_sum / progress.seen:.3f}",
                                acc=f"{progress.acc_sum / progress.seen:.3f}", lr=f"{lr():.2g}")

        t0 = time.perf_counter()
        for batch in bar:
            progress.skipped.extend(s.path for s in batch.skipped if s.path not in progress.skipped)
            progress.step += 1
            if batch.labels.numel() > 0:
                loss, acc, finite = step(batch)
                pending.append((progress.step, batch.labels.numel(), torch.stack([loss.float(), acc.float(),
                                                                                   finite.float()])))
            due = progress.step % READ_EVERY == 0
            if due:
                read()
            # a stop is agreed on by every rank at each read, and at every step where agreeing costs no device sync
            # (alone; gloo on CPUs): a SIGTERM then stops after the step it came in, as in a one-process run
            if (due or not self.env.enabled or self.env.device.type != "cuda") and any_rank(stop.requested, self.env):
                read()
                progress.seconds += time.perf_counter() - t0
                self.checkpoint()
                raise Preempted(f"stopped at {desc}, step {progress.step}; {self.resume_hint}",
                                stop.signum or signal.SIGTERM)
            if timer.due():
                read()
                progress.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.checkpoint()
        read()
        bar.close()
        progress.seconds += time.perf_counter() - t0
        if progress.seen == 0:
            raise DataError(f"--data {self.data}: no readable video in {desc} ({len(progress.skipped)} skipped)")
