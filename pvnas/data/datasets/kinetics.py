"""``kinetics:ROOT``: Kinetics-400/600/700 as released (CSV manifests) and downloaded by the usual crawlers.

``ROOT/train.csv`` and ``ROOT/validate.csv`` (or ``val.csv``; also under ``ROOT/annotations/``)
with columns ``label,youtube_id,time_start,time_end,split``; videos at
``ROOT/{train,val}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (label folders may use
underscores for spaces). Class index = position in the sorted label names of ``train.csv``.
Rows whose video is absent (Kinetics loses videos to YouTube deletions) are left out with one
warning by :class:`~pvnas.data.datasets.video.VideoDataset`.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pvnas.data.datasets._files import Sample, find_dir, find_file
from pvnas.errors import DataError

COLUMNS = ("label", "youtube_id", "time_start", "time_end")
_CSV = {"train": ("train.csv",), "val": ("validate.csv", "val.csv")}
_VIDEO_DIRS = {"train": ("train",), "val": ("val", "validate")}


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected header {','.join(COLUMNS)},split"
            )
        return [(line, row) for line, row in enumerate(reader, start=2)]


def _seconds(path: Path, line: int, value: str, column: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DataError(f"{path}:{line}: {column} must be a number of seconds, got {value!r}") from None


def kinetics_samples(root: Path, split: str) -> tuple[list[Sample], list[str], str]:
    """``(path, label)`` pairs of one split, the class names, and the manifest path."""
    train_csv = find_file(root, _CSV["train"], ("", "annotations"), "Kinetics train.csv")
    classes = sorted({row["label"] for _, row in _rows(train_csv)})
    manifest = (
        train_csv if split == "train" else find_file(root, _CSV["val"], ("", "annotations"), "Kinetics validate.csv")
    )
    index = {name: i for i, name in enumerate(classes)}
    video_root = find_dir(root, _VIDEO_DIRS[split], f"Kinetics {split} videos")
    label_dirs: dict[str, Path] = {}
    samples = []
    for line, row in _rows(manifest):
        label = row["label"]
        if label not in index:
            raise DataError(f"{manifest}:{line}: label {label!r} is not a class of {train_csv}")
        if label not in label_dirs:
            candidates = [video_root / label, video_root / label.replace(" ", "_")]
            label_dirs[label] = next((d for d in candidates if d.is_dir()), candidates[0])
        start = _seconds(manifest, line, row["time_start"], "time_start")
        end = _seconds(manifest, line, row["time_end"], "time_end")
        name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        samples.append((str(label_dirs[label] / name), index[label]))
    return samples, classes, str(manifest)
