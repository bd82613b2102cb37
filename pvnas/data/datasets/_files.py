"""What the file kinds share: which layout a dataset ROOT holds, where its listed videos are, ``path label`` list
files, and a deterministic stratified split for data that comes without one.

A native kind (``ucf101:``, ``hmdb51:``, ``kinetics:``, ``ssv2:``) names its layouts (the official archive as
unpacked, MMAction2's, list files, ...), each recognised by a marker file; the first whose marker exists is read,
and when none fits, one error names every layout tried and the first file looked for. The videos a manifest lists
are then looked for at their listed relative path under the layout's video folders, else by file name anywhere
under ROOT, so per-class and flat copies (and moved or re-encoded ones) read the same.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pvnas.data.decode import is_video_file
from pvnas.errors import ConfigError, DataError

Sample = tuple[str, int]  # (video path, class index)
DEFAULT_VAL, DEFAULT_SEED = 0.2, 0  # the drawn validation share and its seed (``?val=0.2&seed=0``)
FRAME_DIRS = ("rawframes", "frames")  # extracted frames (MMAction2 keeps millions of JPEGs there): never walked


class Listing(NamedTuple):
    """One split of a dataset as listed: ``(path, label)`` pairs, class names, the manifest or folder read, and
    the layout that was found, in words (``pvnas data`` prints it)."""

    samples: list[Sample]
    classes: list[str]
    source: str
    layout: str


# -- layouts -----------------------------------------------------------------------------------------------


Reader = Callable[[Path, Path, str, dict[str, str]], Listing]  # (ROOT, marker found, split, options) -> Listing
# (a reader's ``layout`` says where the videos were found; the layout's name is put before it)


@dataclass(frozen=True)
class Layout:
    """One way a dataset lies on disk, recognised by the first of ``markers`` that exists (paths relative to ROOT;
    ``{split}`` is the ``?split=`` fold, a ``*`` matches any name) and that ``accepts`` (where two layouts share a
    file name, e.g. Kinetics' official ``train.csv`` and PySlowFast's)."""

    name: str
    markers: tuple[str, ...]
    read: Reader
    accepts: Callable[[Path], bool] | None = None


def _marker_hits(root: Path, pattern: str) -> list[Path]:
    if any(c in pattern for c in "*?["):
        return sorted(p for p in root.glob(pattern) if not any(part.startswith(".") for part in p.relative_to(root).parts))
    return [root / pattern] if (root / pattern).exists() else []


def read_layout(root: Path, layouts: Sequence[Layout], split: str, options: dict[str, str], spec: str) -> Listing:
    """Read ``split`` through the first layout whose marker exists under ``root``; one DataError naming every
    layout tried and the first file looked for when none does."""
    require_dir(root, spec)
    fold = options.get("split", "1")
    tried = []
    for layout in layouts:
        markers = [m.format(split=fold) for m in layout.markers]
        for marker in markers:
            hits = [h for h in _marker_hits(root, marker) if layout.accepts is None or layout.accepts(h)]
            if hits:
                listing = layout.read(root, hits[0], split, options)
                return listing._replace(layout=f"{layout.name}; {listing.layout}")
        tried.append(f"{layout.name} (looked for {', '.join(markers)})")
    first = root / layouts[0].markers[0].format(split=fold)
    raise DataError(f"--data {spec}: no known layout in {root}; tried {'; '.join(tried)}; the first file looked for "
                    f"was {first}")


def require_dir(root: Path, spec: str) -> Path:
    """``root`` must be an existing directory (the ROOT of a ``kind:ROOT`` spec)."""
    if not root.is_dir():
        raise DataError(f"--data {spec}: {root} is not a directory")
    return root


def first_file(folder: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` (``*`` globs allowed) that is a file in ``folder``; DataError listing them."""
    for name in names:
        hits = [p for p in _marker_hits(folder, name) if p.is_file()]
        if hits:
            return hits[0]
    raise DataError(f"{what} not found; looked for {', '.join(str(folder / n) for n in names)}")


# -- finding the listed videos -----------------------------------------------------------------------------


class VideoFinder:
    """Finds the videos a manifest lists under ROOT.

    Each video comes with candidate relative paths (most specific first, e.g. ``label/name.mp4`` then
    ``name.mp4``); they are tried under each of ``dirs`` (the layout's video folders, ``""`` is ROOT itself),
    the combination that worked last first, so a complete copy costs one ``stat`` per video. After a first miss
    ROOT is walked once and every lookup is in memory. A video found nowhere there is looked up by file name, then by name without extension, anywhere under ROOT (one walk, on
    first need): flat copies, per-class copies, replacements in another folder and re-encoded files all read.
    Folders of extracted frames (``rawframes*``, ``frames*``) are not walked. A video found nowhere is named
    where the last video found was (and reported missing). :meth:`describe` says where the
    videos were found.
    """

    def __init__(self, root: Path, dirs: Sequence[str]) -> None:
        self.root = root
        self.dirs = list(dict.fromkeys(dirs))
        self._best: tuple[int, int] | None = None  # (dir index, candidate index) that found the last video
        self._files: set[str] | None = None  # every video file under ROOT, relative, once walked
        self._names: dict[str, list[str]] = defaultdict(list)
        self.where: Counter[str] = Counter()

    def find(self, candidates: Sequence[str]) -> str:
        """The path of one listed video, given its candidate relative paths."""
        combos = [(d, c) for d in range(len(self.dirs)) for c in range(len(candidates))]
        if self._best is not None and self._best[1] < len(candidates):
            combos.remove(self._best)
            combos.insert(0, self._best)
        if self._files is None:  # not walked yet: stat the last combination that worked (before a first hit, all)
            for d, c in combos[:1] if self._best is not None else combos:
                if os.path.isfile(self.root / self.dirs[d] / candidates[c]):
                    return self._found(d, c, candidates)
        files = self._walk()
        for d, c in combos:
            rel = posixpath.normpath(posixpath.join(self.dirs[d], candidates[c]))
            if rel in files or (not is_video_file(rel) and os.path.isfile(self.root / rel)):  # (the walk keeps videos)
                return self._found(d, c, candidates)
        by_name = self._by_name(candidates)
        if by_name is not None:
            self.where["found by file name elsewhere under ROOT"] += 1
            return str(self.root / by_name)
        self.where["missing"] += 1  # (named where the last video found was)
        d, c = self._best if self._best is not None and self._best[1] < len(candidates) else (0, 0)
        return str(self.root / self.dirs[d] / candidates[c])

    def _found(self, d: int, c: int, candidates: Sequence[str]) -> str:
        self._best = (d, c)
        folder = f"{self.dirs[d]}/" if self.dirs[d] else "ROOT/"
        self.where[f"per class in {folder}" if "/" in candidates[c] else f"flat in {folder}"] += 1
        return str(self.root / self.dirs[d] / candidates[c])

    def _walk(self) -> set[str]:
        if self._files is None:
            self._files = set()
            seen: set[str] = set()
            for folder, subdirs, files in os.walk(self.root, followlinks=True):
                real = os.path.realpath(folder)
                if real in seen:  # a symlink loop
                    subdirs[:] = []
                    continue
                seen.add(real)
                subdirs[:] = sorted(s for s in subdirs if not s.startswith(".") and not s.startswith(FRAME_DIRS))
                rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
                for name in sorted(files):
                    if name.startswith(".") or not is_video_file(name):
                        continue
                    path = name if rel == "." else f"{rel}/{name}"
                    self._files.add(path)
                    stem = os.path.splitext(name)[0]
                    for key in dict.fromkeys((name, stem, name.lower(), stem.lower())):
                        self._names[key].append(path)
        return self._files

    def _by_name(self, candidates: Sequence[str]) -> str | None:
        """The file named like the listed video (exact name, then without extension, then ignoring case); where
        several are, the one whose path ends like a candidate, else the first in sorted order."""
        name = posixpath.basename(candidates[0])
        stem = os.path.splitext(name)[0]
        for key in (name, stem, name.lower(), stem.lower()):
            hits = self._names.get(key)
            if hits:
                return next((h for h in hits for c in candidates if h.endswith("/" + c) or h == c), hits[0])
        return None

    def describe(self) -> str:
        """Where the videos were found, e.g. ``videos per class in UCF-101/``."""
        if not self.where:
            return "no videos listed"
        parts = [f"{where} ({n})" if len(self.where) > 1 else where for where, n in self.where.most_common()]
        return "videos " + ", ".join(parts)


# -- list files --------------------------------------------------------------------------------------------


def label_lines(path: Path) -> list[tuple[int, str, str]]:
    """``(line number, path, label)`` of a ``path label`` file (MMAction2's and PyTorchVideo's lists): one video a
    line, separated by spaces or a tab, the label last (so a path may hold spaces); blank and ``#`` lines skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().rsplit(None, 1)
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected '<path> <label>' (space or tab between), got {line.strip()!r}")
        rows.append((n, parts[0], parts[1]))
    if not rows:
        raise DataError(f"{path}: lists no videos; expected lines '<path> <label>'")
    return rows


def int_labels(path: Path, rows: Sequence[tuple[int, str, str]]) -> list[int]:
    """The labels of ``rows`` as class indices (>= 0); DataError naming the first line that is not one."""
    out = []
    for n, _, label in rows:
        if not label.isdigit():
            raise DataError(f"{path}:{n}: label must be a class index (0, 1, ...), got {label!r}")
        out.append(int(label))
    return out


def names_of_indices(pairs: Sequence[tuple[str, int]], names: Sequence[str] | None = None) -> list[str]:
    """Class names for integer labels 0..max: ``names`` when it has exactly that many; else the folder each
    label's listed paths share (``class_x/video.mp4 3``), where every label has one and they differ; else the
    indices themselves (``"0"``, ``"1"``, ...)."""
    count = max((label for _, label in pairs), default=-1) + 1
    if names is not None and len(names) == count:
        return list(names)
    folders: dict[int, set[str]] = defaultdict(set)
    for path, label in pairs:
        folders[label].add(posixpath.basename(posixpath.dirname(path.replace("\\", "/"))))
    named = [next(iter(folders[i])) if len(folders[i]) == 1 else "" for i in range(count)]
    if all(named) and len(set(named)) == count:
        return named
    return [str(i) for i in range(count)]


# -- a split for data without one --------------------------------------------------------------------------


def split_options(options: dict[str, str], spec: str) -> tuple[float, int]:
    """``?val=`` (the share of each class drawn for validation, default 0.2) and ``?seed=`` (default 0)."""
    try:
        val = float(options.get("val", DEFAULT_VAL))
        seed = int(options.get("seed", DEFAULT_SEED))
    except ValueError:
        raise ConfigError(f"--data {spec}: val must be a number in (0, 1) and seed an integer >= 0, got "
                          f"val={options.get('val')!r}, seed={options.get('seed')!r}") from None
    if not 0 < val < 1 or seed < 0:
        raise ConfigError(f"--data {spec}: val must be in (0, 1) and seed >= 0, got val={val:g}, seed={seed}")
    return val, seed


def stratified_split(samples: Sequence[Sample], split: str, val: float, seed: int, base: str | Path) -> list[Sample]:
    """The ``split`` part of ``samples`` drawn per class: each class's videos are ordered by a SHA-256 of the seed
    and their path relative to ``base`` (not by listing order or Python's salted ``hash``), and the first
    ``round(val * n)`` go to validation (at least one where a class has two videos or more, never all).
    The same files land in the same split on every machine and run; adding a video moves no other."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, label in samples:
        by_class[label].append(path)
    chosen = []
    for label, paths in by_class.items():
        rel = {p: os.path.relpath(p, base).replace(os.sep, "/") for p in paths}
        order = sorted(paths, key=lambda p: (hashlib.sha256(f"{seed}\0{rel[p]}".encode()).digest(), rel[p]))
        n_val = min(len(paths) - 1, max(1 if len(paths) >= 2 else 0, int(val * len(paths) + 0.5)))
        part = order[:n_val] if split == "val" else order[n_val:]
        chosen += [(p, label) for p in part]
    return sorted(chosen)


def drawn(val: float, seed: int) -> str:
    """How a drawn validation split is described in a layout."""
    return f"validation drawn per class (val={val:g}, seed={seed}; by hashed relative path)"


def index_list_samples(
    train_list: Path, path: Path, finder: VideoFinder, names: Sequence[str] | None = None
) -> tuple[list[Sample], list[str]]:
    """The videos of the ``path index`` list ``path`` (MMAction2's ``*_list_videos.txt``) and the classes of the
    training list ``train_list`` (both splits share them), named as :func:`names_of_indices` gives them."""
    def pairs(list_path: Path) -> list[tuple[str, int]]:
        rows = label_lines(list_path)
        return list(zip((rel for _, rel, _ in rows), int_labels(list_path, rows)))

    classes = names_of_indices(pairs(train_list), names)
    return [(finder.find([rel, posixpath.basename(rel)]), label) for rel, label in pairs(path)], classes
