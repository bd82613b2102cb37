"""The videos and classes of a ``--data`` spec for ``pvnas estimate``: manifests and listings are read, no
video is decoded, and a downloaded dataset that is not on this machine gives its official split sizes."""

from __future__ import annotations

from pvnas.config import ClipConfig
from pvnas.errors import ConfigError, DataError

DEFAULT_DATASET_SIZE = 1000


def dataset_of(data: str | None, split: str = "train") -> tuple[int, str, int | None]:
    """(videos of ``split``, where that number comes from, number of classes or None) of a ``--data`` spec.

    File datasets are counted from their manifests and listings, without decoding. A kinetics, ssv2 or
    ucf101 ROOT that is not on this machine gives the official split size, so that a run can be costed
    before the download; a missing folder or CSV is an error. Without a spec: 1000 (train), 1000 // 10 (val).
    """
    from pvnas.data import build_dataset, list_samples, parse_spec
    from pvnas.data.datasets import KINDS

    if not data:
        size = DEFAULT_DATASET_SIZE if split == "train" else DEFAULT_DATASET_SIZE // 10
        return size, "default (pass --data or --dataset-size)", None
    kind, arg, options = parse_spec(data)
    entry = KINDS[kind]
    official = entry.train_size if split == "train" else entry.val_size
    if entry.build is not None:  # rendered on demand: building it costs nothing
        dataset = build_dataset(data, split, ClipConfig())
        return len(dataset), f"{data} ({split} split)", len(dataset.classes)
    if entry.known is not None:  # a generated file kind (listing it would first write it)
        train, val, classes = entry.known(arg)
        return train if split == "train" else val, f"{data} ({split} split)", classes
    try:
        samples, classes, source, _, _ = list_samples(kind, arg, options, split)
    except DataError as err:
        if official is None:
            raise
        return official, f"official {split} split of {kind} (not readable here: {err})", None
    return len(samples), f"videos listed in {source}", len(classes)


def resolve_inputs(
    data: str | None, dataset_size: int | None, num_classes: int | None, **positive: int | None
) -> tuple[int, str, int]:
    """The checked command-line numbers of an estimate (each of ``positive`` that is set must be >= 1) and the
    training videos (with where that number comes from) and classes: the ones given, else ``data``'s
    (:func:`dataset_of`), else 1000 videos and 400 classes (Kinetics-400)."""
    for name, value in {**positive, "dataset_size": dataset_size, "num_classes": num_classes}.items():
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    source = "--dataset-size"
    if dataset_size is None or num_classes is None:
        listed, listed_source, listed_classes = dataset_of(data)
        if dataset_size is None:
            dataset_size, source = listed, listed_source
        num_classes = num_classes or listed_classes or 400
    return dataset_size, source, num_classes
