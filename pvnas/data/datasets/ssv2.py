"""``ssv2:ROOT``: Something-Something-V2 as released and as MMAction2 keeps it.

The release: the video parts ``20bn-something-something-v2-??`` unpack to ``20bn-something-something-v2/<id>.webm``;
the labels download holds ``labels.json`` (``{"Putting something on something": "103", ...}``), ``train.json`` and
``validation.json`` (lists of ``{"id", "label", "template", "placeholders"}``), named
``something-something-v2-{labels,train,validation}.json`` in some copies. Layouts, tried in this order:

* the official download: the JSON files (either naming) in ROOT or ``labels/``;
* MMAction2's ``data/sthv2``: ``annotations/something-something-v2-*.json``, videos in ``videos/``;
* MMAction2's list files alone: ``sthv2_{train,val}_list_videos.txt`` (``<id>.webm N``; names from the labels JSON
  when present).

Videos are found in ``20bn-something-something-v2/``, ``videos/`` or ROOT, else by file name anywhere under ROOT.
The class of an entry is its ``template`` with the brackets removed (the official convention: ``label`` has the
objects filled in); class indices follow ``labels.json``. Horizontal flips are off by default: many classes say
"left" or "right".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pvnas.data.datasets._files import Layout, Listing, VideoFinder, first_file, index_list_samples
from pvnas.errors import DataError

FLIP = False
VIDEO_DIRS = ("20bn-something-something-v2", "videos", "")
_NAMES = {"labels": ("labels.json", "something-something-v2-labels.json"),
          "train": ("train.json", "something-something-v2-train.json"),
          "val": ("validation.json", "something-something-v2-validation.json")}


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def ssv2_classes(path: Path) -> list[str]:
    """Class names by index from a ``labels.json``, which must number them 0..N-1."""
    raw = _load_json(path)
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{path}: expected an object {{class name: "index"}}')
    try:
        by_index = {int(v): k for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f'{path}: class indices must be integers (as strings), e.g. "0"') from None
    if sorted(by_index) != list(range(len(raw))):
        raise DataError(f"{path}: class indices must be 0..{len(raw) - 1}, each once")
    return [by_index[i] for i in range(len(raw))]


def _json(root: Path, train_json: Path, split: str, options: dict[str, str]) -> Listing:
    labels_path = first_file(train_json.parent, _NAMES["labels"], "Something-Something-V2 labels.json")
    classes = ssv2_classes(labels_path)
    index = {name: i for i, name in enumerate(classes)}
    manifest = first_file(labels_path.parent, _NAMES[split], f"Something-Something-V2 {_NAMES[split][0]}")
    entries = _load_json(manifest)
    if not isinstance(entries, list):
        raise DataError(f"{manifest}: expected a list of {{id, label, template, placeholders}} objects")
    finder = VideoFinder(root, VIDEO_DIRS)
    samples = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise DataError(f"{manifest}: entry {n} needs fields 'id' and 'template', got {entry!r:.80}")
        name = entry["template"].replace("[", "").replace("]", "")
        if name not in index:
            raise DataError(f"{manifest}: video {entry['id']}: class {name!r} is not in {labels_path}")
        samples.append((finder.find([f"{entry['id']}.webm"]), index[name]))
    return Listing(samples, classes, str(manifest), finder.describe())


def _list_files(root: Path, train_list: Path, split: str, options: dict[str, str]) -> Listing:
    path = train_list if split == "train" else first_file(root, ("sthv2_val_list_videos.txt",), "SSv2 list")
    labels = [root / d / n for d in ("annotations", "labels", "") for n in _NAMES["labels"] if (root / d / n).is_file()]
    finder = VideoFinder(root, VIDEO_DIRS)
    samples, classes = index_list_samples(train_list, path, finder, ssv2_classes(labels[0]) if labels else None)
    return Listing(samples, classes, str(path), finder.describe())


LAYOUTS = (
    Layout("official download",
           tuple(f"{d}{n}" for d in ("", "labels/") for n in _NAMES["train"]), _json),
    Layout("MMAction2", tuple(f"annotations/{n}" for n in _NAMES["train"]), _json),
    Layout("MMAction2 list files", ("sthv2_train_list_videos.txt",), _list_files),
)
