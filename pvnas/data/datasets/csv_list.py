"""``csv:FILE``: a plain list of videos, rows ``path,label[,split]``, paths relative to the CSV.

An optional header row starting with ``path,label`` is skipped. Labels are class names (class
index = position in their sorted set, over all rows so both splits agree) or, if every label is
an integer, class indices themselves (classes named ``"0"``, ``"1"``, ...). With a third
``split`` column (``train``; ``val``/``validation``/``test``) each split takes its rows; without
one, both splits use every row (validation then measures training fit — give a split column
for a real validation set).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from pvnas.data.datasets._files import Listing
from pvnas.errors import DataError

logger = logging.getLogger(__name__)

_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "val"}


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DataError(f"--data csv:{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [
                (n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)
            ]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if rows and [c.lower() for c in rows[0][1][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: no rows; expected lines 'path,label' or 'path,label,split'")
    width = len(rows[0][1])
    for n, row in rows:
        if len(row) != width or width not in (2, 3):
            raise DataError(f"{path}:{n}: expected 'path,label' or 'path,label,split' on every row, got {row}")
        if width == 3 and row[2].lower() not in _SPLIT_NAMES:
            raise DataError(f"{path}:{n}: split must be one of {', '.join(_SPLIT_NAMES)}, got {row[2]!r}")
    return rows


def csv_samples(path: Path, split: str) -> Listing:
    """``(path, label)`` pairs of one split, the class names, and the CSV path."""
    rows = _rows(path)
    labels = [row[1] for _, row in rows]
    if all(lbl.isdigit() for lbl in labels):
        classes = [str(i) for i in range(max(int(lbl) for lbl in labels) + 1)]
        label_of = int
    else:
        classes = sorted(set(labels))
        label_of = {name: i for i, name in enumerate(classes)}.__getitem__
    has_split = len(rows[0][1]) == 3
    if not has_split and split == "val":
        logger.info("%s has no split column: the validation split uses the training rows", path)
    samples = [
        (str(path.parent / row[0]), label_of(row[1]))
        for _, row in rows
        if not has_split or _SPLIT_NAMES[row[2].lower()] == split
    ]
    layout = "CSV rows path,label,split" if has_split else "CSV rows path,label (no split column: both splits use every row)"
    return Listing(samples, classes, str(path), layout)
