"""Progress of long loops: a redrawn bar on a terminal, whole log lines everywhere else.

A bar redraws itself with carriage returns, which a terminal shows as one line but a SLURM job log, a
``2> log`` file or a CI console keeps as one ever-growing line. So when stderr is not a terminal, progress is
a log line every N steps (N: a tenth of the loop, at most 50 steps, as MMEngine's logger hook) and at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

log = logging.getLogger("pvnas.progress")

MAX_EVERY = 50  # steps between two progress lines at most


def log_every(total: int | None) -> int:
    """Steps between two progress lines of a loop of ``total`` steps (unknown: every :data:`MAX_EVERY`)."""
    return MAX_EVERY if not total else min(MAX_EVERY, max(1, total // 10))


class Lines:
    """The non-terminal stand-in of a tqdm bar (the methods the loops use): iterate, ``set_postfix``, ``close``."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None, initial: int, quiet: bool = False) -> None:
        self.iterable, self.desc, self.total, self.n = iterable, desc, total, initial
        self.every = 0 if quiet else log_every(total)
        self.postfix: dict[str, Any] = {}
        self.start, self.first = time.perf_counter(), initial

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
            if self.every and (self.n % self.every == 0 or self.n == self.total):
                self._line()

    def set_postfix(self, **postfix: Any) -> None:
        self.postfix = postfix

    def close(self) -> None:
        pass

    def _line(self) -> None:
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        rate = (self.n - self.first) / max(time.perf_counter() - self.start, 1e-9)
        extra = "".join(f" {key} {value}" for key, value in self.postfix.items())
        log.info("%s: step %s%s (%.2f steps/s)", self.desc, done, extra, rate)


def progress(iterable: Iterable, desc: str, *, total: int | None = None, initial: int = 0,
             disable: bool = False) -> Any:
    """``iterable`` with progress on stderr: a tqdm bar on a terminal, :class:`Lines` otherwise, nothing if
    ``disable`` (ranks other than 0)."""
    if total is None and hasattr(iterable, "__len__"):
        total = initial + len(iterable)  # type: ignore[arg-type]
    if disable or not sys.stderr.isatty():
        return Lines(iterable, desc, total, initial, quiet=disable)
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, initial=initial, total=total)
