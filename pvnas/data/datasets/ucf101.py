"""``ucf101:ROOT[?split=N]``: UCF-101 with its official train/test lists (splits 1, 2, 3; ``val`` is the test list).

Layouts, tried in this order:

* the official archive as unpacked: ``UCF101.rar`` gives ``UCF-101/<Class>/v_*.avi``,
  ``UCF101TrainTestSplits-RecognitionTask.zip`` gives ``ucfTrainTestlist/`` (``classInd.txt``: ``1 ApplyEyeMakeup``,
  1-based; ``trainlist0N.txt``: ``Class/v_....avi 1``; ``testlist0N.txt``: ``Class/v_....avi``); ROOT may hold both
  folders, or be ``UCF-101/`` itself with the lists inside or beside its class folders;
* MMAction2's ``data/ucf101``: the same lists in ``annotations/``, videos in ``videos/<Class>/``;
* MMAction2's list files alone: ``ucf101_{train,val}_split_N_videos.txt`` (``Class/v_....avi 0``, 0-based).

PyTorchVideo's ``Ucf101`` reads a list file or class folders made by hand: ``list:FILE`` or ``folder:ROOT``.
Videos are found at their listed path under ``UCF-101/``, ``videos/`` or ROOT, else by file name anywhere under
ROOT (per class or flat). Class indices follow ``classInd.txt`` in every layout.
"""

from __future__ import annotations

from pathlib import Path

from pvnas.data.datasets._files import Layout, Listing, VideoFinder, first_file, index_list_samples
from pvnas.errors import DataError

VIDEO_DIRS = ("UCF-101", "videos", "UCF101", "")


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    with open(path, encoding="utf-8-sig") as f:
        return [(n, line.split()) for n, line in enumerate(f, start=1) if line.strip()]


def class_index(path: Path) -> list[str]:
    """Class names by 0-based index from a ``classInd.txt`` (``<1-based index> <ClassName>`` lines)."""
    by_index: dict[int, str] = {}
    for n, parts in _lines(path):
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{n}: expected '<index> <ClassName>', got {' '.join(parts)!r}")
        by_index[int(parts[0])] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DataError(f"{path}: class indices must be 1..{len(by_index)}, each once")
    return [by_index[i] for i in range(1, len(by_index) + 1)]


def class_index_listing(root: Path, class_file: Path, split: str, options: dict[str, str],
                        video_dirs: tuple[str, ...] = VIDEO_DIRS) -> Listing:
    """The videos of ``trainlist0N.txt`` / ``testlist0N.txt`` beside ``class_file`` (the format of UCF-101's
    lists, which MMAction2 also writes for HMDB-51), found under ``root``'s ``video_dirs``."""
    finder = VideoFinder(root, video_dirs)
    fold = int(options.get("split", "1"))
    classes = class_index(class_file)
    index = {name: i for i, name in enumerate(classes)}
    name = f"{'trainlist' if split == 'train' else 'testlist'}{fold:02d}.txt"
    manifest = first_file(class_file.parent, (name,), f"list {name} of split {fold}")
    samples = []
    for n, parts in _lines(manifest):
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0]
        if "/" not in rel or folder not in index:
            raise DataError(f"{manifest}:{n}: class {folder!r} of {rel} is not in {class_file}")
        label = index[folder]
        if len(parts) > 1 and parts[1] != str(label + 1):
            raise DataError(f"{manifest}:{n}: {rel} has label {parts[1]}, but {class_file} numbers {folder} {label + 1}")
        samples.append((finder.find([rel, rel.rsplit("/", 1)[1]]), label))
    return Listing(samples, classes, str(manifest), finder.describe())


def _list_files(root: Path, train_list: Path, split: str, options: dict[str, str]) -> Listing:
    fold = int(options.get("split", "1"))
    path = train_list if split == "train" else first_file(root, (f"ucf101_val_split_{fold}_videos.txt",), "UCF-101 list")
    class_file = root / "annotations" / "classInd.txt"
    names = class_index(class_file) if class_file.is_file() else None
    finder = VideoFinder(root, VIDEO_DIRS)
    samples, classes = index_list_samples(train_list, path, finder, names)
    return Listing(samples, classes, str(path), finder.describe())


LAYOUTS = (
    Layout("official archive", ("ucfTrainTestlist/classInd.txt", "classInd.txt", "UCF-101/ucfTrainTestlist/classInd.txt"),
           class_index_listing),
    Layout("MMAction2", ("annotations/classInd.txt",), class_index_listing),
    Layout("MMAction2 list files", ("ucf101_train_split_{split}_videos.txt",), _list_files),
)
