"""Dataset specs (DESIGN §5) -> map-style datasets, and the loader that batches them."""

from __future__ import annotations

from torch.utils.data import Dataset

from pvnas.config import ClipConfig
from pvnas.errors import ConfigError

SPLITS = ("train", "val")


def build_dataset(spec: str, split: str, clip: ClipConfig, *, seed: int = 0) -> Dataset:
    """Parse a ``--data`` spec and build the ``split`` ("train" or "val") dataset.

    Every dataset has ``classes`` (list of names, index = label) and yields
    ``(clip, label, index)`` or a :class:`pvnas.data.loader.Skipped`.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from pvnas.data.datasets.synthetic import SyntheticDataset

        try:
            size = int(arg) if arg else 64
        except ValueError:
            raise ConfigError(f"--data synthetic:N needs an integer N, got {arg!r}") from None
        if size < 1:
            raise ConfigError(f"--data synthetic:N needs N >= 1, got {size}")
        return SyntheticDataset(size if split == "train" else max(8, size // 4), clip, train=split == "train", seed=seed)
    raise ConfigError(
        f"unknown dataset spec {spec!r}; expected one of: demo, synthetic[:N], kinetics:ROOT, "
        "ssv2:ROOT, ucf101:ROOT[?split=1], folder:ROOT, csv:FILE"
    )
