"""``ucf101:ROOT[?split=N]``: UCF-101 with its official train/test lists (splits 1, 2, 3).

``classInd.txt`` (``1 ApplyEyeMakeup``, 1-based), ``trainlist0N.txt`` (``Class/v_....avi 1``)
and ``testlist0N.txt`` (``Class/v_....avi``), in ``ROOT`` or ``ROOT/ucfTrainTestlist/``; videos
``ROOT/videos/<Class>/<name>.avi``. The ``val`` split is the test list.
"""

from __future__ import annotations

from pathlib import Path

from pvnas.data.datasets._files import Sample, find_file
from pvnas.errors import DataError

_LISTS = ("", "ucfTrainTestlist")


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    with open(path) as f:
        return [(n, line.split()) for n, line in enumerate(f, start=1) if line.strip()]


def ucf101_classes(root: Path) -> tuple[list[str], Path]:
    """Class names by 0-based index from ``classInd.txt``."""
    path = find_file(root, ("classInd.txt",), _LISTS, "UCF-101 classInd.txt")
    by_index: dict[int, str] = {}
    for n, parts in _lines(path):
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{n}: expected '<index> <ClassName>', got {' '.join(parts)!r}")
        by_index[int(parts[0])] = parts[1]
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DataError(f"{path}: class indices must be 1..{len(by_index)}, each once")
    return [by_index[i] for i in range(1, len(by_index) + 1)], path


def ucf101_samples(root: Path, split: str, fold: int = 1) -> tuple[list[Sample], list[str], str]:
    """``(path, label)`` pairs of one split of fold ``fold``, the class names, and the list path."""
    classes, class_file = ucf101_classes(root)
    index = {name: i for i, name in enumerate(classes)}
    name = f"{'trainlist' if split == 'train' else 'testlist'}{fold:02d}.txt"
    manifest = find_file(root, (name,), _LISTS, f"UCF-101 {name}")
    samples = []
    for n, parts in _lines(manifest):
        rel = parts[0]
        folder = rel.split("/")[0]
        if folder not in index:
            raise DataError(f"{manifest}:{n}: class {folder!r} of {rel} is not in {class_file}")
        label = index[folder]
        if len(parts) > 1 and parts[1] != str(label + 1):
            raise DataError(
                f"{manifest}:{n}: {rel} has label {parts[1]}, but {class_file} numbers {folder} {label + 1}"
            )
        samples.append((str(root / "videos" / rel), label))
    return samples, classes, str(manifest)
