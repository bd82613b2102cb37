"""``list:FILE[?root=DIR&val=VAL|SHARE&seed=S]``: ``path label`` list files, the format most video repositories
exchange (MMAction2's ``*_list_videos.txt``, PyTorchVideo's and PySlowFast's ``train.csv``).

One video a line, the label last, separated by spaces or a tab (so a path may hold spaces); blank lines and
``#`` comments are skipped. Paths are relative to ``?root=`` (default: the list's own folder) unless absolute.
Labels are class indices (0, 1, ...; classes named after the folder each index's videos share, else ``"0"``,
``"1"``, ...) or class names (index = position in their sorted set). Both splits share the classes.

The validation split: ``?val=FILE`` names its list (relative to the training list's folder or the working
directory); without it, a list beside FILE named like it with ``train`` replaced by ``val``, ``validation`` or
``test`` (``kinetics400_train_list_videos.txt`` -> ``kinetics400_val_list_videos.txt``); without one, it is drawn
per class from FILE, ``?val=`` of it (default 0.2) with ``?seed=`` (default 0), the same on every machine.
"""

from __future__ import annotations

from pathlib import Path

from pvnas.data.datasets._files import (
    Listing, drawn, int_labels, label_lines, names_of_indices, require_dir, split_options, stratified_split,
)
from pvnas.errors import ConfigError, DataError

VAL_WORDS = ("val", "validation", "test")


def _val_list(path: Path, options: dict[str, str], spec: str) -> Path | None:
    """The validation list: ``?val=FILE``, else a sibling named like ``path``, else None (draw one)."""
    given = options.get("val")
    if given is not None:
        try:
            float(given)
            return None
        except ValueError:
            pass
        for candidate in (path.parent / given, Path(given)):
            if candidate.is_file():
                return candidate
        raise DataError(f"--data {spec}: validation list {given} not found (looked in {path.parent} and the working "
                        "directory)")
    if "train" in path.name:
        for word in VAL_WORDS:
            sibling = path.with_name(path.name.replace("train", word))
            if sibling.is_file():
                return sibling
    return None


def list_samples(path: Path, split: str, options: dict[str, str], spec: str) -> Listing:
    """One split of a ``list:`` spec (see the module docstring)."""
    if not path.is_file():
        raise DataError(f"--data {spec}: {path} is not a file")
    root = require_dir(Path(options["root"]), spec) if "root" in options else path.parent
    val_list = _val_list(path, options, spec)
    if val_list is not None and "seed" in options:
        raise ConfigError(f"--data {spec}: ?seed draws a validation split, but {val_list} is given; leave it out")
    rows = {"train": label_lines(path), "val": label_lines(val_list) if val_list is not None else []}
    everything = rows["train"] + rows["val"]
    if all(label.isdigit() for _, _, label in everything):
        indices = {s: int_labels(path if s == "train" else val_list, r) for s, r in rows.items()}  # type: ignore[arg-type]
        classes = names_of_indices([(rel, i) for s in rows for (_, rel, _), i in zip(rows[s], indices[s])])
    else:
        classes = sorted({label for _, _, label in everything})
        index = {name: i for i, name in enumerate(classes)}
        indices = {s: [index[label] for _, _, label in r] for s, r in rows.items()}
    pairs = {s: [(str(root / rel), i) for (_, rel, _), i in zip(rows[s], indices[s])] for s in rows}
    where = f"paths under {root}"
    if val_list is not None:
        source = path if split == "train" else val_list
        return Listing(pairs[split], classes, f"{source} ({where})", f"list files {path.name} + {val_list.name}")
    val, seed = split_options(options, spec)
    return Listing(stratified_split(pairs["train"], split, val, seed, root), classes, f"{path} ({where})",
                   f"one list file, {drawn(val, seed)}")
