"""Files of a run directory: atomic writes, and reads that treat every file as data, never as code.

Writes are atomic (temp file, fsync, rename) so a crash or preemption never leaves a torn file: a process
killed mid-write (SIGKILL, out of memory) leaves the previous file whole and a ``.NAME.tmpPID`` file, which
:func:`remove_stale_temps` clears.
Every torch file pvnas reads (checkpoints, ``model.pt``, alphas) is loaded with ``weights_only=True``:
tensors and plain containers only, so a hostile file cannot run code; the RNG states are stored as
tensors and numbers for that reason. A file that cannot be read is one :class:`ConfigError` naming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
import torch
import yaml

from pvnas.errors import ConfigError


TEMP = re.compile(r"\..+\.tmp(\d+)")  # the temp file of an atomic write: .NAME.tmpPID


def atomic_write_bytes(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temp files under ``directory`` left by atomic writes killed midway: those of processes that
    are gone, and this process's own (a restarted container reuses pids), so call it before this process writes
    there. Another live process's are kept. Returns the deleted paths."""
    removed = []
    for path in sorted(Path(directory).rglob(".*.tmp*")):
        match = TEMP.fullmatch(path.name)
        if match and path.is_file() and (int(match[1]) == os.getpid() or not _alive(int(match[1]))):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def save_torch(obj: Any, path: Path) -> None:
    atomic_write_bytes(Path(path), lambda f: torch.save(obj, f))


def load_torch(path: Path, what: str) -> Any:
    """A torch file as data (``weights_only=True``, CPU tensors); ``what`` names the file's role in errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (expected {what})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn, empty, foreign, or a pickle that wants to run code
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: cannot read it as {what} ({type(exc).__name__}: {reason[:200]})") from None


def save_yaml(data: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(yaml.safe_dump(data, sort_keys=False).encode()))


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping (``config.yaml``); anything else is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path}: cannot read it as YAML ({reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of config fields, got {type(data).__name__}")
    return data


class MetricsLog:
    """Append-only ``metrics.jsonl``: one JSON object per line, flushed per record."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every record; a line that is not a JSON object is a :class:`ConfigError` naming file and line."""
        if not self.path.exists():
            return []
        records = []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: cannot read it ({exc})") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.path}:{n}: not a JSON record ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{self.path}:{n}: expected a JSON object per line, got {type(record).__name__}")
            records.append(record)
        return records

    def truncate_after(self, key: str, value: int) -> None:
        """Drop records with ``record[key] > value`` (a resumed run rewrites those epochs)."""
        kept = [r for r in self.read() if r.get(key, 0) <= value]
        atomic_write_bytes(self.path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA); loader workers derive theirs from the sampler."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
