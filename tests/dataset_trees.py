"""Miniature copies of the real datasets in each of their common layouts, for the layout tests.

A catalog says which videos a dataset has (class, file name, split per fold); a writer lays it out the way the
official archive, MMAction2, PyTorchVideo/PySlowFast or a flat copy does, with the manifests in their real
formats (UCF-101's CRLF lists, HMDB-51's per-class split files, Kinetics' CSV header, SSv2's JSON). ``place(path)``
makes each video: a hardlink of a tiny real clip (decodable) or an empty placeholder (listing only, for the trees
with the official counts).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Place = Callable[[Path], None]


@dataclass
class Video:
    cls: str
    name: str
    folds: dict[int, str] = field(default_factory=dict)  # fold -> "train" | "val" | "unused"


@dataclass
class Catalog:
    classes: list[str]  # in the dataset's own index order
    videos: list[Video]

    def expected(self, split: str, fold: int = 1) -> list[tuple[str, int]]:
        """Sorted (file name, label) of one split: what every layout must list."""
        index = {c: i for i, c in enumerate(self.classes)}
        return sorted((v.name, index[v.cls]) for v in self.videos if v.folds.get(fold) == split)


def placeholder(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def hardlink(source: Path) -> Place:
    def place(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, path)
    return place


def _write(path: Path, lines: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())


# -- UCF-101 ----------------------------------------------------------------------------------------------


def ucf101_catalog(classes: list[str], train: list[int], test: list[int]) -> Catalog:
    """Videos ``v_<Class>_gGG_cCC.avi``: class i has ``test[i]`` clips in groups 1-7 (the test part of split 1;
    groups 8-14 and 15-21 are split 2's and 3's) and ``train[i]`` in groups 8-25, as the official split."""
    videos = []
    for c, n_test, n_train in zip(classes, test, train):
        for groups, n in ((range(1, 8), n_test), (range(8, 26), n_train)):
            for k in range(n):
                g = list(groups)[k % len(groups)]
                v = Video(c, f"v_{c}_g{g:02d}_c{k // len(groups) + 1:02d}.avi")
                v.folds = {f: "val" if (f - 1) * 7 < g <= f * 7 else "train" for f in (1, 2, 3)}
                videos.append(v)
    return Catalog(classes, videos)


def _ucf_lists(folder: Path, cat: Catalog, newline: str = "\r\n", folds=(1, 2, 3)) -> None:
    _write(folder / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(cat.classes)], newline)
    index = {c: i for i, c in enumerate(cat.classes)}
    for f in folds:
        _write(folder / f"trainlist{f:02d}.txt",
               [f"{v.cls}/{v.name} {index[v.cls] + 1}" for v in cat.videos if v.folds[f] == "train"], newline)
        _write(folder / f"testlist{f:02d}.txt", [f"{v.cls}/{v.name}" for v in cat.videos if v.folds[f] == "val"], newline)


def _mmaction_lists(root: Path, prefix: str, cat: Catalog, folds=(1, 2, 3), flat: bool = False) -> None:
    index = {c: i for i, c in enumerate(cat.classes)}
    for f in folds:
        for split in ("train", "val"):
            _write(root / f"{prefix}_{split}_split_{f}_videos.txt",
                   [f"{v.name if flat else v.cls + '/' + v.name} {index[v.cls]}" for v in cat.videos if v.folds[f] == split])


def ucf101_tree(root: Path, cat: Catalog, layout: str, place: Place) -> Path:
    """``official`` (UCF-101/ + ucfTrainTestlist/), ``official_inside`` (ROOT is UCF-101/, lists inside),
    ``mmaction2`` (annotations/ + videos/ + list files), ``mmaction2_lists`` (list files + videos/ only),
    ``flat`` (the official lists, every video in one folder)."""
    video_dir = {"official": "UCF-101", "official_inside": "", "flat": "all_videos"}.get(layout, "videos")
    for v in cat.videos:
        place(root / video_dir / ("" if layout == "flat" else v.cls) / v.name)
    if layout in ("official", "official_inside", "flat"):
        _ucf_lists(root / "ucfTrainTestlist", cat)
    if layout == "mmaction2":
        _ucf_lists(root / "annotations", cat, newline="\n")
    if layout in ("mmaction2", "mmaction2_lists"):
        _mmaction_lists(root, "ucf101", cat)
    return root


# -- HMDB-51 ----------------------------------------------------------------------------------------------


def hmdb51_catalog(classes: list[str], train: int, test: int, unused: list[int]) -> Catalog:
    """Per class ``train`` + ``test`` + ``unused[i]`` videos; each fold rotates which are which."""
    videos = []
    for c, n_unused in zip(classes, unused):
        n = train + test + n_unused
        for k in range(n):
            v = Video(c, f"clip_{k:03d}_{c}_f_cm_np1_fr_med_{k % 3}.avi")
            for f in (1, 2, 3):
                r = (k + (f - 1) * test) % n
                v.folds[f] = "train" if r < train else "val" if r < train + test else "unused"
            videos.append(v)
    return Catalog(sorted(classes), videos)


def _hmdb_split_files(folder: Path, cat: Catalog) -> None:
    code = {"train": "1", "val": "2", "unused": "0"}
    for c in cat.classes:
        for f in (1, 2, 3):
            _write(folder / f"{c}_test_split{f}.txt", [f"{v.name} {code[v.folds[f]]} " for v in cat.videos if v.cls == c])


def hmdb51_tree(root: Path, cat: Catalog, layout: str, place: Place) -> Path:
    """``official`` (<class>/ + testTrainMulti_7030_splits/), ``mmaction2`` (annotations/<class>_test_splitN.txt +
    videos/ + list files), ``mmaction2_generated`` (annotations/classInd.txt + trainlist/testlist + videos/),
    ``mmaction2_lists`` (list files + videos/), ``flat`` (split files, every video in one folder)."""
    video_dir = {"official": "", "flat": "all"}.get(layout, "videos")
    for v in cat.videos:
        place(root / video_dir / ("" if layout == "flat" else v.cls) / v.name)
    if layout in ("official", "flat"):
        _hmdb_split_files(root / "testTrainMulti_7030_splits", cat)
    if layout == "mmaction2":
        _hmdb_split_files(root / "annotations", cat)
    if layout == "mmaction2_generated":
        _ucf_lists(root / "annotations", cat, newline="\n")
    if layout in ("mmaction2", "mmaction2_lists"):
        _mmaction_lists(root, "hmdb51", cat)
    return root


# -- Kinetics ---------------------------------------------------------------------------------------------


def kinetics_catalog(classes: list[str], train: int, val: int) -> Catalog:
    videos = []
    for i, c in enumerate(sorted(classes)):
        for k in range(train + val):
            v = Video(c, f"yt{i:02d}-{k:03d}_{k * 10:06d}_{k * 10 + 10:06d}.mp4")
            v.folds = {1: "train" if k < train else "val"}
            videos.append(v)
    return Catalog(sorted(classes), videos)


def _kinetics_csv(path: Path, cat: Catalog, split: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
        for v in cat.videos:
            if v.folds[1] == split:
                yid, start, end = v.name[:-4].rsplit("_", 2)
                w.writerow([v.cls, yid, int(start), int(end), "train" if split == "train" else "val", 0])


def kinetics_tree(root: Path, cat: Catalog, layout: str, place: Place) -> Path:
    """``cvdf`` (annotations/{train,val}.csv, flat train/ and val/), ``crawler`` (train.csv, validate.csv,
    train/<label>/, val/<label>/), ``mmaction2`` (annotations/kinetics_{train,val}.csv, videos_{train,val}/<label_>/,
    kinetics400_{train,val}_list_videos.txt), ``mmaction2_lists`` (list files + videos_*/ only), ``mmaction2_csv``
    (annotations/kinetics_*.csv + videos_*/, no list files), ``pyslowfast``
    (train.csv / val.csv of ``path label`` lines, videos per class), ``pytorchvideo_dirs`` (class folders, no CSV)."""
    dirs = {"train": "train", "val": "val"} if layout in ("cvdf", "crawler", "pyslowfast", "pytorchvideo_dirs") else \
        {"train": "videos_train", "val": "videos_val"}
    index = {c: i for i, c in enumerate(cat.classes)}
    lists: dict[str, list[str]] = {"train": [], "val": []}
    for v in cat.videos:
        split = v.folds[1]
        folder = "" if layout == "cvdf" else v.cls if layout in ("crawler", "pyslowfast", "pytorchvideo_dirs") \
            else v.cls.replace(" ", "_")
        place(root / dirs[split] / folder / v.name)
        rel = f"{folder}/{v.name}" if folder else v.name
        lists[split].append(f"{dirs[split]}/{rel} {index[v.cls]}" if layout == "pyslowfast" else f"{rel} {index[v.cls]}")
    if layout == "cvdf":
        _kinetics_csv(root / "annotations" / "train.csv", cat, "train")
        _kinetics_csv(root / "annotations" / "val.csv", cat, "val")
    if layout == "crawler":
        _kinetics_csv(root / "train.csv", cat, "train")
        _kinetics_csv(root / "validate.csv", cat, "val")
    if layout in ("mmaction2", "mmaction2_csv"):
        _kinetics_csv(root / "annotations" / "kinetics_train.csv", cat, "train")
        _kinetics_csv(root / "annotations" / "kinetics_val.csv", cat, "val")
    if layout in ("mmaction2", "mmaction2_lists"):
        for split in lists:
            _write(root / f"kinetics400_{split}_list_videos.txt", lists[split])
    if layout == "pyslowfast":
        _write(root / "train.csv", lists["train"])
        _write(root / "val.csv", lists["val"])
    return root


# -- Something-Something V2 -------------------------------------------------------------------------------


def ssv2_catalog(templates: list[str], train: int, val: int) -> Catalog:
    """Classes are templates without brackets ("Pushing something from left to right"); ids are numbers."""
    classes = [t.replace("[", "").replace("]", "") for t in templates]
    videos = []
    for i, c in enumerate(classes):
        for k in range(train + val):
            v = Video(c, f"{1000 * (i + 1) + k}.webm", {1: "train" if k < train else "val"})
            videos.append(v)
    cat = Catalog(classes, videos)
    cat.templates = dict(zip(classes, templates))  # type: ignore[attr-defined]
    return cat


def ssv2_tree(root: Path, cat: Catalog, layout: str, place: Place) -> Path:
    """``official`` (labels/{labels,train,validation}.json + 20bn-something-something-v2/), ``official_long``
    (something-something-v2-*.json in ROOT), ``mmaction2`` (annotations/something-something-v2-*.json + videos/ +
    sthv2_*_list_videos.txt), ``mmaction2_lists`` (list files + videos/ + annotations/ labels JSON only)."""
    video_dir = "20bn-something-something-v2" if layout.startswith("official") else "videos"
    for v in cat.videos:
        place(root / video_dir / v.name)
    index = {c: i for i, c in enumerate(cat.classes)}
    labels = {c: str(i) for i, c in enumerate(cat.classes)}
    entries = {s: [{"id": v.name[:-5], "label": cat.templates[v.cls].replace("[something]", "a cup"),  # type: ignore[attr-defined]
                    "template": cat.templates[v.cls], "placeholders": ["a cup"]}  # type: ignore[attr-defined]
                   for v in cat.videos if v.folds[1] == s] for s in ("train", "val")}
    folder, long = {"official": ("labels", False), "official_long": ("", True)}.get(layout, ("annotations", True))
    names = {k: (f"something-something-v2-{k}.json" if long else f"{k}.json") for k in ("labels", "train", "validation")}
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / folder / names["labels"]).write_text(json.dumps(labels))
    if layout != "mmaction2_lists":
        (root / folder / names["train"]).write_text(json.dumps(entries["train"]))
        (root / folder / names["validation"]).write_text(json.dumps(entries["val"]))
    if layout in ("mmaction2", "mmaction2_lists"):
        for s in ("train", "val"):
            _write(root / f"sthv2_{s}_list_videos.txt", [f"{v.name} {index[v.cls]}" for v in cat.videos if v.folds[1] == s])
    return root
