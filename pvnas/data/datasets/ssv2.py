"""``ssv2:ROOT``: Something-Something-V2 as released.

``labels.json`` (``{"Putting something on something": "103", ...}``), ``train.json`` and
``validation.json`` (lists of ``{"id", "label", "template", "placeholders"}``), in ``ROOT`` or
``ROOT/labels/``; videos ``ROOT/videos/<id>.webm``. The class of an entry is its ``template``
with the brackets removed (the official convention: ``label`` has the objects filled in).
Horizontal flips are off by default: many classes say "left" or "right".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pvnas.data.datasets._files import Sample, find_file
from pvnas.errors import DataError

_MANIFEST = {"train": "train.json", "val": "validation.json"}
FLIP = False


def _load_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def ssv2_classes(root: Path) -> tuple[list[str], Path]:
    """Class names by index from ``labels.json``, which must number them 0..N-1."""
    path = find_file(root, ("labels.json",), ("", "labels"), "Something-Something-V2 labels.json")
    raw = _load_json(path)
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{path}: expected an object {{class name: "index"}}')
    try:
        by_index = {int(v): k for k, v in raw.items()}
    except (TypeError, ValueError):
        raise DataError(f'{path}: class indices must be integers (as strings), e.g. "0"') from None
    if sorted(by_index) != list(range(len(raw))):
        raise DataError(f"{path}: class indices must be 0..{len(raw) - 1}, each once")
    return [by_index[i] for i in range(len(raw))], path


def ssv2_samples(root: Path, split: str) -> tuple[list[Sample], list[str], str]:
    """``(path, label)`` pairs of one split, the class names, and the manifest path."""
    classes, labels_path = ssv2_classes(root)
    index = {name: i for i, name in enumerate(classes)}
    manifest = find_file(root, (_MANIFEST[split],), ("", "labels"), f"Something-Something-V2 {_MANIFEST[split]}")
    entries = _load_json(manifest)
    if not isinstance(entries, list):
        raise DataError(f"{manifest}: expected a list of {{id, label, template, placeholders}} objects")
    samples = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise DataError(f"{manifest}: entry {n} needs fields 'id' and 'template', got {entry!r:.80}")
        name = entry["template"].replace("[", "").replace("]", "")
        if name not in index:
            raise DataError(f"{manifest}: video {entry['id']}: class {name!r} is not in {labels_path}")
        samples.append((str(root / "videos" / f"{entry['id']}.webm"), index[name]))
    return samples, classes, str(manifest)
