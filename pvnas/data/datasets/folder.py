"""``folder:ROOT[?val=0.2&seed=0]``: videos in one folder per class, the layout of ImageFolder-style datasets.

* split folders: ``ROOT/train/<class>/...`` and the first of ``ROOT/val``, ``validation``, ``test`` (same classes);
  with ``train/`` alone, validation is drawn from it as below;
* class folders: ``ROOT/<class>/...`` without split folders (what a download or a phone gives): each class's
  videos are split deterministically, ``val`` of them (default 0.2) to validation, ordered by a hash of
  ``seed`` and the path relative to ROOT, so every machine and run puts the same files in the same split.

Classes are the sorted class folders (of ``train/`` where there is one); a class's videos are the files with a
video extension anywhere inside its folder (hidden files and folders are ignored), as PyTorchVideo and
torchvision find them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pvnas.data.datasets._files import Listing, Sample, drawn, require_dir, split_options, stratified_split
from pvnas.data.decode import is_video_file
from pvnas.errors import ConfigError, DataError

SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "test")}


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _videos(class_dir: Path) -> list[str]:
    found = []
    for folder, subdirs, files in os.walk(class_dir, followlinks=True):
        subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
        found += [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".") and is_video_file(f)]
    return found


def _tree(folder: Path, classes: list[str] | None = None) -> tuple[list[Sample], list[str]]:
    """The videos of ``folder/<class>/...`` and the classes (``classes`` where given: another split's)."""
    dirs = _class_dirs(folder)
    names = classes if classes is not None else [d.name for d in dirs]
    index = {name: i for i, name in enumerate(names)}
    samples = []
    for class_dir in dirs:
        if class_dir.name not in index:
            raise DataError(f"{class_dir}: class {class_dir.name!r} has no folder in the training split")
        samples += [(path, index[class_dir.name]) for path in _videos(class_dir)]
    return samples, names


def folder_samples(root: Path, split: str, options: dict[str, str] | None = None, spec: str = "") -> Listing:
    """One split of a folder tree, with or without split folders (see the module docstring)."""
    options = options or {}
    spec = spec or f"folder:{root}"
    val, seed = split_options(options, spec)  # (checked first: a bad value is named whatever the tree holds)
    require_dir(root, spec)
    train_dir = root / "train"
    val_dir = next((root / n for n in SPLIT_DIRS["val"] if (root / n).is_dir()), None)
    if train_dir.is_dir() and val_dir is not None:
        if "val" in options or "seed" in options:
            raise ConfigError(f"--data {spec}: ?val and ?seed draw a validation split, but {root} has one "
                              f"({val_dir.name}/); leave them out")
        train, classes = _tree(train_dir)
        if not classes:
            raise DataError(f"{train_dir}: no class folders; expected {train_dir}/<class>/<video>")
        samples = train if split == "train" else _tree(val_dir, classes)[0]
        return Listing(samples, classes, str(train_dir if split == "train" else val_dir),
                       f"split folders (train/ + {val_dir.name}/)")
    if val_dir is not None:
        raise DataError(f"--data {spec}: {root} has {val_dir.name}/ but no train/; expected {root}/train/<class>/<video>")
    base = train_dir if train_dir.is_dir() else root
    everything, classes = _tree(base)
    if not everything:
        raise DataError(f"--data {spec}: no videos in class folders; expected {root}/train/<class>/<video> and "
                        f"{root}/val/<class>/<video>, or {root}/<class>/<video>")
    what = "train/ without a validation folder" if base == train_dir else "class folders without split folders"
    return Listing(stratified_split(everything, split, val, seed, base), classes, str(base), f"{what}; {drawn(val, seed)}")

