"""Finding manifests and folders of the native dataset layouts, with errors that say where we looked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pvnas.errors import DataError

Sample = tuple[str, int]  # (video path, class index)


def find_file(root: Path, names: Sequence[str], subdirs: Sequence[str], what: str) -> Path:
    """The first existing ``root/<subdir>/<name>``; DataError listing every place tried."""
    tried = [root / sub / name for sub in subdirs for name in names]
    for path in tried:
        if path.is_file():
            return path
    raise DataError(f"{what} not found; looked for: {', '.join(str(p) for p in tried)}")


def find_dir(root: Path, names: Sequence[str], what: str) -> Path:
    """The first existing ``root/<name>`` directory; DataError listing the candidates."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{what} not found in {root}; expected a directory named {' or '.join(names)}")


def require_dir(root: Path, spec: str) -> Path:
    """``root`` must be an existing directory (the ROOT of a ``kind:ROOT`` spec)."""
    if not root.is_dir():
        raise DataError(f"--data {spec}: {root} is not a directory")
    return root
