"""``folder:ROOT``: ``ROOT/<split>/<class>/<video>``, the layout of ImageFolder-style datasets.

``train`` is the training split; the validation split is the first of ``val``, ``validation``,
``test`` that exists. Classes are the sorted sub-directories of ``train``; videos are the files
with a video extension directly inside a class directory (hidden files are ignored).
"""

from __future__ import annotations

from pathlib import Path

from pvnas.data.datasets._files import Sample, find_dir
from pvnas.data.decode import is_video_file
from pvnas.errors import DataError

SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "test")}


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_samples(root: Path, split: str) -> tuple[list[Sample], list[str], str]:
    """``(path, label)`` pairs of one split, the class names, and the split directory."""
    train_dir = find_dir(root, SPLIT_DIRS["train"], "training split")
    classes = [d.name for d in _class_dirs(train_dir)]
    if not classes:
        raise DataError(f"{train_dir}: no class directories; expected {train_dir}/<class>/<video>")
    split_dir = train_dir if split == "train" else find_dir(root, SPLIT_DIRS["val"], "validation split")
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for class_dir in _class_dirs(split_dir):
        if class_dir.name not in index:
            raise DataError(f"{class_dir}: class {class_dir.name!r} has no directory in {train_dir}")
        for video in sorted(class_dir.iterdir()):
            if video.is_file() and not video.name.startswith(".") and is_video_file(video):
                samples.append((str(video), index[class_dir.name]))
    return samples, classes, str(split_dir)
