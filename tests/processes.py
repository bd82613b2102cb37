"""Process trees for the preemption tests: start a command as its own process group, SIGTERM the group the way
SLURM, Kubernetes and `timeout` stop a job once it is ready, and leave nothing of it running (Linux)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import torch


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def environment(pid: int) -> dict[str, str]:
    """The environment ``pid`` started with (empty once it is gone: a child listed a moment ago may have exited)."""
    try:
        pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return {}
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


_SEEN: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


def checkpoint_progress(run: Path) -> dict[str, Any] | None:
    """The ``progress`` of ``run``'s checkpoint.pt (None while there is none), read again only when the file changed.

    A tiny run's checkpoint takes ~0.1 s of CPU to load: a wait that polls every 20 ms and loads each time took a
    whole core from the run it waited for. Checkpoints are replaced by a rename, so a new file has a new stat."""
    path = run / "checkpoint.pt"
    try:
        st = path.stat()
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if path not in _SEEN or _SEEN[path][0] != key:
            _SEEN[path] = key, torch.load(path, weights_only=True)["progress"]
    except (OSError, RuntimeError, EOFError):
        return None
    return _SEEN[path][1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def sigterm_group_when(
    cmd: list[str], log: Path, ready: Callable[[int], bool], env: dict[str, str] | None = None,
    target: Callable[[int], int] = lambda pid: pid,
) -> tuple[int, str]:
    """Run ``cmd`` as its own process group and, once ``ready(pid)``, SIGTERM the process group ``target(pid)``
    (default: that one); returns the exit code and stderr once no process is left of that group nor of the
    groups of its children then (torchrun's ranks)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True, env=env)
    groups = {proc.pid}
    try:
        deadline = time.time() + 600
        while proc.poll() is None and not ready(proc.pid) and time.time() < deadline:
            time.sleep(0.02)
        for child in children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(child))
        if proc.poll() is None:
            os.killpg(target(proc.pid), signal.SIGTERM)
        proc.wait(timeout=600)
        while any(map(group_alive, groups)) and time.time() < deadline:  # loader workers, ranks: shut down by the run
            time.sleep(0.05)
        assert not any(map(group_alive, groups)), "a process of the run outlived it"
    finally:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        proc.wait()
    return proc.returncode, log.read_text()
