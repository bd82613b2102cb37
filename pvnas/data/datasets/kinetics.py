"""``kinetics:ROOT``: Kinetics-400/600/700 as released and as the usual tools keep it.

Layouts, tried in this order:

* the official CSVs (``label,youtube_id,time_start,time_end,split``) of the CVDF archives (``annotations/train.csv``,
  ``val.csv``; videos flat in ``train/``, ``val/``) and of the ActivityNet crawler (``train.csv``, ``validate.csv``
  in ROOT; videos in ``train/<label>/``, ``val/<label>/``);
* MMAction2's list files: ``kinetics{400,600,700}_{train,val}_list_videos.txt`` (``<label>/<id>_<start>_<end>.mp4 N``
  or flat names, 0-based), videos in ``videos_train/``, ``videos_val/``; class names from the annotation CSV beside
  them (``annotations/``), else the label folders, else the indices. They list the videos the copy holds, so they
  come before MMAction2's copy of the official CSVs (``annotations/kinetics_{train,val}.csv``), read alone;
* PySlowFast's and PyTorchVideo's lists: ``train.csv`` and ``val.csv`` of ``path label`` lines (no header), paths
  relative to ROOT or absolute;
* class folders without any CSV (PyTorchVideo's directory form): ``train/<label>/`` and ``val/<label>/``, read as
  ``folder:ROOT`` (classes: the sorted folder names).

Official rows name their video ``<youtube_id>_<start:06d>_<end:06d>.mp4``, looked for per label folder (spaces or
underscores) or flat in the split's folder (``train/``, ``videos_train/``, ...), else by file name, with any
extension, anywhere under ROOT (CVDF's ``replacement/`` folder, re-downloaded ``.mkv`` files). Class index =
position in the sorted label names of the training CSV. Rows whose video is absent (Kinetics loses videos to
YouTube deletions) are an error unless ``?missing=skip`` (see :class:`~pvnas.data.datasets.video.VideoDataset`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from pvnas.data.datasets._files import Layout, Listing, VideoFinder, first_file, index_list_samples
from pvnas.data.datasets.folder import folder_samples
from pvnas.errors import DataError

COLUMNS = ("label", "youtube_id", "time_start", "time_end")
VIDEO_DIRS = {"train": ("train", "videos_train", "train_256", ""), "val": ("val", "videos_val", "validate", "val_256", "")}
_VAL_NAMES = ("validate.csv", "val.csv", "validation.csv", "kinetics_val.csv", "kinetics*_val.csv")


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
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


def _labels_of(train_csv: Path) -> list[str]:
    return sorted({row["label"] for _, row in _rows(train_csv)})


def _csv_samples(root: Path, train_csv: Path, split: str) -> Listing:
    classes = _labels_of(train_csv)
    manifest = train_csv if split == "train" else first_file(train_csv.parent, _VAL_NAMES, "Kinetics validation CSV")
    index = {name: i for i, name in enumerate(classes)}
    finder = VideoFinder(root, VIDEO_DIRS[split])
    samples = []
    for line, row in _rows(manifest):
        label = row["label"]
        if label not in index:
            raise DataError(f"{manifest}:{line}: label {label!r} is not a class of {train_csv}")
        start = _seconds(manifest, line, row["time_start"], "time_start")
        end = _seconds(manifest, line, row["time_end"], "time_end")
        name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        samples.append((finder.find([f"{label}/{name}", f"{label.replace(' ', '_')}/{name}", name]), index[label]))
    return Listing(samples, classes, str(manifest), finder.describe())


def _path_label_samples(root: Path, train_list: Path, split: str) -> Listing:
    """PySlowFast's / PyTorchVideo's ``train.csv`` / ``val.csv``: ``path label`` lines, no header."""
    path = train_list if split == "train" else first_file(train_list.parent, ("val.csv", "validate.csv", "test.csv"),
                                                          "Kinetics validation list")
    finder = VideoFinder(root, ("",) + VIDEO_DIRS[split])
    samples, classes = index_list_samples(train_list, path, finder)
    return Listing(samples, classes, str(path), finder.describe())


def _official(root: Path, train_csv: Path, split: str, options: dict[str, str]) -> Listing:
    return _csv_samples(root, train_csv, split)


def _pyslowfast(root: Path, train_list: Path, split: str, options: dict[str, str]) -> Listing:
    return _path_label_samples(root, train_list, split)


def _is_official(path: Path) -> bool:
    """A CSV with named columns (the official header), not PySlowFast's ``path label`` lines."""
    header = _header(path)
    return "youtube_id" in header or "label" in header


def _list_files(root: Path, train_list: Path, split: str, options: dict[str, str]) -> Listing:
    path = train_list if split == "train" else first_file(
        root, (train_list.name.replace("_train_", "_val_"),), "MMAction2 Kinetics validation list")
    names = None
    for folder in (root / "annotations", root):
        csvs = [p for p in (*folder.glob("kinetics*_train.csv"), folder / "train.csv") if p.is_file()]
        if csvs and "youtube_id" in _header(csvs[0]):
            names = _labels_of(csvs[0])
            break
    finder = VideoFinder(root, VIDEO_DIRS[split])
    samples, classes = index_list_samples(train_list, path, finder, names)
    return Listing(samples, classes, str(path), finder.describe())


def _class_folders(root: Path, marker: Path, split: str, options: dict[str, str]) -> Listing:
    return folder_samples(root, split, {}, f"kinetics:{root}")


def _has_class_folders(train_dir: Path) -> bool:
    return train_dir.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in train_dir.iterdir())


LAYOUTS = (
    Layout("official CSVs (CVDF archive, ActivityNet crawler)", ("annotations/train.csv", "train.csv", "kinetics*_train.csv"),
           _official, accepts=_is_official),
    Layout("MMAction2 list files", ("kinetics*_train_list_videos.txt",), _list_files),
    Layout("MMAction2 annotations", ("annotations/kinetics*_train.csv",), _official, accepts=_is_official),
    Layout("PySlowFast/PyTorchVideo lists", ("train.csv",), _pyslowfast, accepts=lambda path: not _is_official(path)),
    Layout("class folders, no CSV (PyTorchVideo's directory form)", ("train",), _class_folders,
           accepts=_has_class_folders),
)
