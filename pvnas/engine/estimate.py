"""What a run will cost, measured before it is started: the parts every estimate needs (DESIGN §6).

The training videos and classes of a ``--data`` spec, the memory autograd keeps for a forward, and
the process's peak resident memory. The search estimate (``pvnas estimate``) is
:mod:`pvnas.search.estimate`, beside the search step it times.
"""

from __future__ import annotations

import resource

import torch

from pvnas.config import ClipConfig
from pvnas.errors import DataError

DEFAULT_DATASET_SIZE = 1000


def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MiB, or None where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Start a new peak-RSS window (Linux: VmHWM := VmRSS) and return the current RSS in MiB.

    Elsewhere the peak is the process's lifetime ``ru_maxrss``, which a forked child inherits from its parent.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    current = _status_mb("VmRSS")
    return current if current is not None else peak_rss()


def peak_rss() -> float:
    """Peak resident memory of this process in MiB since :func:`reset_peak_rss` (where supported)."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset_of(data: str | None) -> tuple[int, str, int | None]:
    """(training videos, where that number comes from, number of classes or None) of a ``--data`` spec.

    File datasets are counted from their manifests and listings, without decoding. A kinetics, ssv2 or
    ucf101 ROOT that is not on this machine gives the official training-split size, so that a search can be
    costed before the download; a missing folder or CSV is an error. Without a spec: 1000.
    """
    from pvnas.data import build_dataset, list_samples, parse_spec
    from pvnas.data.datasets import KINDS

    if not data:
        return DEFAULT_DATASET_SIZE, "default (pass --data or --dataset-size)", None
    kind, arg, options = parse_spec(data)
    entry = KINDS[kind]
    if entry.build is not None:  # rendered on demand: building it costs nothing
        train = build_dataset(data, "train", ClipConfig())
        return len(train), f"{data} (train split)", len(train.classes)  # type: ignore[arg-type, attr-defined]
    if entry.generated and entry.train_size is not None:  # (listing it would first write it)
        return entry.train_size, f"{kind} (train split)", entry.num_classes
    try:
        samples, classes, source, _ = list_samples(kind, arg, options, "train")
    except DataError as err:
        if entry.train_size is None:
            raise
        return entry.train_size, f"official train split of {kind} (not readable here: {err})", None
    return len(samples), f"videos listed in {source}", len(classes)


def activation_bytes(model: torch.nn.Module, clips: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter tensors autograd saves in one training forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(clips)
    return sum(seen.values())
