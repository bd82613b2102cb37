"""The dataset kinds of ``--data KIND[:ARG][?key=value&...]`` (docs/design.md §5): one :class:`DatasetKind` each.

Each layout's module turns its manifests into ``(path, label)`` pairs and class names; :data:`KINDS`
says what else parsing a spec, building its datasets and costing a run (``pvnas estimate``) need to
know of it, so that they look a kind up instead of testing its name. A new kind is a module and one
entry in :data:`KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from pvnas.config import ClipConfig
from pvnas.data.datasets import csv_list, demo, folder, hmdb51, kinetics, list_file, ssv2, tasks, ucf101
from pvnas.data.datasets._files import Layout, Listing, read_layout
from pvnas.data.datasets.synthetic import SyntheticDataset
from pvnas.data.loader import ClipDataset
from pvnas.data.generators.moving_patterns import CLASSES
from pvnas.data.generators.task_suite import get_task
from pvnas.errors import ConfigError

Lister = Callable[[str, str, dict[str, str]], Listing]  # (ARG, split, options) -> Listing
Builder = Callable[[str, str, ClipConfig, int, str], ClipDataset]  # (ARG, split, clip, seed, views) -> dataset

FILE_OPTIONS = frozenset({"flip", "decoder", "missing"})  # what every file kind's VideoDataset takes
DRAWN = frozenset({"val", "seed"})  # a validation split drawn from data without one (``?val=0.2&seed=0``)


@dataclass(frozen=True)
class DatasetKind:
    """One kind of ``--data`` spec: a file kind has a ``lister`` (manifests and listings only, no decoding;
    its videos go through the one :class:`~pvnas.data.datasets.video.VideoDataset`), an in-memory kind a
    ``build`` instead."""

    spec: str  # its form in help and errors, e.g. "ucf101:ROOT[?split=1]"
    lister: Lister | None = None
    build: Builder | None = None
    needs_path: bool = False  # ARG is a path that must be given
    options: frozenset[str] = FILE_OPTIONS  # the ``?key=value`` names it accepts
    flip: bool | None = None  # default horizontal flip (False where labels say left/right); None: the clip's
    generated: bool = False  # made by pvnas (demo, task, synthetic): nothing to download, and listing may write it
    train_size: int | None = None  # official size of the training split (a downloaded dataset not on this machine)
    val_size: int | None = None  # the same of the validation (test) split
    known: Callable[[str], tuple[int, int, int]] | None = None  # a generated file kind's (train, val, classes) of ARG

    def __post_init__(self) -> None:
        """Refuse an entry that the builder or ``pvnas estimate`` could not use, at import."""
        if (self.lister is None) == (self.build is None):
            raise ValueError(f"dataset kind {self.spec}: give exactly one of lister and build")
        if self.generated and self.lister is not None and self.known is None:
            raise ValueError(f"dataset kind {self.spec}: a generated file kind needs `known` (sizes without writing it)")


def _native(kind: str, layouts: tuple[Layout, ...]) -> Lister:
    """The lister of a native kind: the first of its layouts found under ROOT."""
    def lister(arg: str, split: str, options: dict[str, str]) -> Listing:
        return read_layout(Path(arg), layouts, split, options, f"{kind}:{arg}")
    return lister


def _folder(arg: str, split: str, options: dict[str, str]) -> Listing:
    return folder.folder_samples(Path(arg), split, options, f"folder:{arg}")


def _list(arg: str, split: str, options: dict[str, str]) -> Listing:
    return list_file.list_samples(Path(arg), split, options, f"list:{arg}")


def _csv(arg: str, split: str, options: dict[str, str]) -> Listing:
    return csv_list.csv_samples(Path(arg), split)


def _demo(arg: str, split: str, options: dict[str, str]) -> Listing:
    return folder.folder_samples(demo.ensure_demo(), split)


def _task(arg: str, split: str, options: dict[str, str]) -> Listing:
    return folder.folder_samples(tasks.ensure_task(arg, **tasks.parse_options(options)), split)


def _task_sizes(arg: str) -> tuple[int, int, int]:
    task = get_task(arg)
    return task.train_size, task.val_size, len(task.classes)


def _synthetic(arg: str, split: str, clip: ClipConfig, seed: int, views: str) -> ClipDataset:
    """``synthetic[:N]``: N training clips (default 64), N/4 but at least 8 validation clips."""
    try:
        size = int(arg) if arg else 64
    except ValueError:
        raise ConfigError(f"--data synthetic:N needs an integer N, got {arg!r}") from None
    if size < 1:
        raise ConfigError(f"--data synthetic:N needs N >= 1, got {size}")
    train = split == "train"
    return SyntheticDataset(size if train else max(8, size // 4), clip, train=train, seed=seed, views=views)


KINDS: dict[str, DatasetKind] = {  # in the order of the help text
    "demo": DatasetKind("demo", lister=_demo, flip=demo.FLIP, generated=True,
                        known=lambda arg: (len(CLASSES) * demo.TRAIN_PER_CLASS, len(CLASSES) * demo.VAL_PER_CLASS, len(CLASSES))),
    "task": DatasetKind("task:NAME[?seed=S&train=N]", lister=_task, needs_path=True, options=FILE_OPTIONS | {"seed", "train"},
                        flip=False, generated=True, known=_task_sizes),
    "synthetic": DatasetKind("synthetic[:N]", build=_synthetic, options=frozenset(), generated=True),
    "kinetics": DatasetKind("kinetics:ROOT", lister=_native("kinetics", kinetics.LAYOUTS), needs_path=True,
                            train_size=225946, val_size=18584),
    "ssv2": DatasetKind("ssv2:ROOT", lister=_native("ssv2", ssv2.LAYOUTS), needs_path=True, flip=ssv2.FLIP,
                        train_size=168913, val_size=24777),
    "ucf101": DatasetKind("ucf101:ROOT[?split=1]", lister=_native("ucf101", ucf101.LAYOUTS), needs_path=True,
                          options=FILE_OPTIONS | {"split"}, train_size=9537, val_size=3783),  # split 1
    "hmdb51": DatasetKind("hmdb51:ROOT[?split=1]", lister=_native("hmdb51", hmdb51.LAYOUTS), needs_path=True,
                          options=FILE_OPTIONS | {"split"}, train_size=3570, val_size=1530),  # every split
    "folder": DatasetKind("folder:ROOT[?val=0.2&seed=0]", lister=_folder, needs_path=True, options=FILE_OPTIONS | DRAWN),
    "list": DatasetKind("list:FILE[?root=DIR&val=VAL|0.2&seed=0]", lister=_list, needs_path=True,
                        options=FILE_OPTIONS | DRAWN | {"root"}),
    "csv": DatasetKind("csv:FILE", lister=_csv, needs_path=True),
}  # fmt: skip
