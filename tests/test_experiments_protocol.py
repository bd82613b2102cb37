"""The studies' shared steps: a stopped unit ends its pool worker."""

from __future__ import annotations

import signal

import pytest

from pvnas.runtime.run import Preempted
from test_experiments_ablation import EXPERIMENTS, load_script


def _stopped() -> None:
    raise Preempted("stopped after train epoch 3/30", signal.SIGTERM)


def test_a_stop_signal_ends_the_worker_not_just_its_unit(monkeypatch):
    """A SIGTERM to the study's group stops each unit's run at a checkpoint (Preempted). The worker must then
    exit: a worker that returned the error would take the next unit queued to it, beside the restarted study."""
    protocol = load_script(EXPERIMENTS / "protocol.py")

    def exit_(code):
        raise SystemExit(code)

    monkeypatch.setattr(protocol.os, "_exit", exit_)
    with pytest.raises(SystemExit) as stop:
        protocol._call((_stopped,))
    assert stop.value.code == 128 + signal.SIGTERM
    assert protocol._call((max, 2, 5)) == 5
