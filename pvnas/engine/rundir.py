"""Run directories: every run holds its config, metrics (JSONL), genotype and plots.

Writes are atomic (temp file, fsync, rename) so a crash or preemption never leaves a torn file.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(fileobj)`` on a temp file next to ``path``, fsync it, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_torch(obj: Any, path: Path) -> None:
    atomic_write_bytes(Path(path), lambda f: torch.save(obj, f))


def save_yaml(data: dict[str, Any], path: Path) -> None:
    atomic_write_bytes(Path(path), lambda f: f.write(yaml.safe_dump(data, sort_keys=False).encode()))


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


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
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

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
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
