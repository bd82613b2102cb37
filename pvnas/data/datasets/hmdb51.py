"""``hmdb51:ROOT[?split=N]``: HMDB-51 with its official splits (1, 2, 3; ``val`` is the test part).

The official release: ``hmdb51_org.rar`` holds one ``.rar`` per class, which unpack to ``<class>/<name>.avi``;
``test_train_splits.rar`` unpacks to ``testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt`` with lines
``<name>.avi 1|2|0`` (1 train, 2 test, 0 unused: 70 / 30 / the rest of each class). Layouts, tried in this order:

* the official archive as unpacked: split files in ``testTrainMulti_7030_splits/`` (or ROOT itself), videos in
  ``<class>/`` under ROOT, ``hmdb51_org/`` or ``videos/``;
* MMAction2's ``data/hmdb51``: the split files in ``annotations/`` (what its download script unpacks there;
  PyTorchVideo's ``Hmdb51`` reads the same files), videos in ``videos/<class>/``;
* MMAction2's generated lists: ``annotations/classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``;
* MMAction2's list files alone: ``hmdb51_{train,val}_split_N_videos.txt`` (``<class>/<name>.avi 0``, 0-based).

Classes are the sorted class names (51), as MMAction2, PyTorchVideo and torchvision number them. Videos are
found under their class folder, else by file name anywhere under ROOT.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pvnas.data.datasets._files import Layout, Listing, VideoFinder, first_file, index_list_samples
from pvnas.data.datasets.ucf101 import class_index_listing
from pvnas.errors import DataError

VIDEO_DIRS = ("", "hmdb51_org", "videos", "HMDB51")
PART = {"train": "1", "val": "2"}  # a split file's code for each split (0: unused by the protocol)


def _split_files(folder: Path, fold: int) -> dict[str, Path]:
    suffix = f"_test_split{fold}.txt"
    found = {p.name[: -len(suffix)]: p for p in folder.glob(f"*{suffix}") if not p.name.startswith(".")}
    return dict(sorted(found.items()))


def _official(root: Path, marker: Path, split: str, options: dict[str, str]) -> Listing:
    fold = int(options.get("split", "1"))
    files = _split_files(marker.parent, fold)
    classes = list(files)
    finder = VideoFinder(root, VIDEO_DIRS)
    samples = []
    for label, (name, path) in enumerate(files.items()):
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{path}:{n}: expected '<video>.avi 0|1|2' (unused, train, test), got {line.strip()!r}")
            if parts[1] == PART[split]:
                samples.append((finder.find([f"{name}/{parts[0]}", parts[0]]), label))
    return Listing(samples, classes, str(marker.parent / f"*_test_split{fold}.txt"), finder.describe())


def _list_files(root: Path, train_list: Path, split: str, options: dict[str, str]) -> Listing:
    fold = int(options.get("split", "1"))
    path = train_list if split == "train" else first_file(root, (f"hmdb51_val_split_{fold}_videos.txt",), "HMDB-51 list")
    names = list(_split_files(root / "annotations", fold)) or None  # (MMAction2 keeps the split files there)
    finder = VideoFinder(root, VIDEO_DIRS)
    samples, classes = index_list_samples(train_list, path, finder, names)
    return Listing(samples, classes, str(path), finder.describe())


LAYOUTS = (
    Layout("official archive",
           ("testTrainMulti_7030_splits/*_test_split{split}.txt", "*_test_split{split}.txt"), _official),
    Layout("MMAction2", ("annotations/*_test_split{split}.txt",), _official),
    Layout("MMAction2 generated lists", ("annotations/classInd.txt",),
           functools.partial(class_index_listing, video_dirs=VIDEO_DIRS)),
    Layout("MMAction2 list files", ("hmdb51_train_split_{split}_videos.txt",), _list_files),
)
