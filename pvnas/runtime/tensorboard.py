"""Optional TensorBoard mirror of ``metrics.jsonl`` (``--tensorboard``; needs the ``tensorboard`` extra)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

log = logging.getLogger(__name__)


class TensorBoard:
    """Scalars from metric records and alpha histograms; a no-op when disabled or not installed."""

    def __init__(self, run: Path, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("--tensorboard: the tensorboard package is not installed (pip install 'pvnas[tensorboard]'); "
                        "metrics.jsonl is still written")
            return
        self.writer = SummaryWriter(log_dir=str(Path(run) / "tensorboard"))

    def scalars(self, record: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
            elif isinstance(value, Mapping):
                for sub, v in value.items():
                    if isinstance(v, (int, float)):
                        self.writer.add_scalar(f"{key}/{sub}", v, step)
        self.writer.flush()

    def alphas(self, alphas: Mapping[str, torch.Tensor], step: int) -> None:
        if self.writer is None:
            return
        for kind, a in alphas.items():
            self.writer.add_histogram(f"alpha_softmax/{kind}", torch.softmax(a.float(), -1), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
