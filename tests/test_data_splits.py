"""Data without a validation split (`folder:` class folders, a single `list:` file) gets one drawn per class,
the same on every machine; `list:` reads `path label` files with spaces or tabs."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest
import yaml

from pvnas.cli import main
from pvnas.data import list_samples, parse_spec
from pvnas.data.datasets.video import file_list_hash
from pvnas.errors import ConfigError, DataError


def _listed(spec: str, split: str):
    kind, arg, options = parse_spec(spec)
    return list_samples(kind, arg, options, split)


def _rel(samples, root) -> list[tuple[str, int]]:
    return sorted((os.path.relpath(p, root), label) for p, label in samples)


def _class_tree(root, counts: dict[str, int], order=1) -> None:
    """``root/<class>/<i>.mp4`` placeholders, created in the given order (1 or -1) so listing orders differ."""
    for cls, n in list(counts.items())[::order]:
        for i in range(n)[::order]:
            (root / cls / "sub" if i % 4 == 3 else root / cls).mkdir(parents=True, exist_ok=True)
            (root / cls / ("sub" if i % 4 == 3 else "") / f"clip {i:02d}.mp4").touch()


COUNTS = {"cartwheel": 10, "dive": 7, "jump": 2, "solo": 1}


def test_class_folders_are_split_per_class_the_same_everywhere(tmp_path):
    a, b = tmp_path / "machine_a" / "clips", tmp_path / "elsewhere" / "copy"
    _class_tree(a, COUNTS)
    _class_tree(b, COUNTS, order=-1)
    train, val = _listed(f"folder:{a}", "train"), _listed(f"folder:{a}", "val")
    assert train.classes == ["cartwheel", "dive", "jump", "solo"]
    assert "class folders without split folders; validation drawn per class (val=0.2, seed=0" in train.layout
    per_class = Counter(label for _, label in val.samples)
    assert per_class == {0: 2, 1: 1, 2: 1}  # round(0.2 n), at least 1 from 2 videos up, never a class's last one
    assert len(train.samples) + len(val.samples) == sum(COUNTS.values()) and not set(train.samples) & set(val.samples)
    assert any("sub" in p for p, _ in train.samples + val.samples)  # videos in sub-folders of a class count
    for split in ("train", "val"):  # another machine, another root, files created in the other order
        assert _rel(_listed(f"folder:{b}", split).samples, b) == _rel(_listed(f"folder:{a}", split).samples, a)
    assert file_list_hash(val.samples) == file_list_hash(_listed(f"folder:{b}", "val").samples)
    # a known answer: the split is a function of the relative paths and the seed alone (SHA-256, not hash())
    assert _rel(val.samples, a) == [("cartwheel/clip 02.mp4", 0), ("cartwheel/clip 09.mp4", 0),
                                    ("dive/clip 00.mp4", 1), ("jump/clip 00.mp4", 2)]
    other = _listed(f"folder:{a}?val=0.5&seed=3", "val")
    assert Counter(label for _, label in other.samples) == {0: 5, 1: 4, 2: 1} and other.samples != val.samples
    (a / "dive" / "clip 99.mp4").touch()  # a new video moves no other
    moved = set(_rel(val.samples, a)) - set(_rel(_listed(f"folder:{a}", "val").samples, a))
    assert not moved


def test_folder_train_only_and_bad_options(tmp_path):
    _class_tree(tmp_path / "t" / "train", {"a": 5, "b": 5})
    val = _listed(f"folder:{tmp_path / 't'}", "val")
    assert "train/ without a validation folder; validation drawn" in val.layout and len(val.samples) == 2
    for bad in ("val=1.5", "val=0", "val=x", "seed=-1"):
        with pytest.raises(ConfigError, match="val must be"):
            _listed(f"folder:{tmp_path / 't'}?{bad}", "train")
    (tmp_path / "v" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has val/ but no train/"):
        _listed(f"folder:{tmp_path / 'v'}", "train")


def test_list_files_spaces_tabs_roots_and_val_lists(tmp_path):
    videos = tmp_path / "videos"
    for rel in ("jump/a b.mp4", "jump/c.mp4", "run/d.mp4", "run/e.mp4", "run/f.mp4"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).touch()
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "my_train_list.txt").write_text("# MMAction2 style\njump/a b.mp4 0\njump/c.mp4\t0\nrun/d.mp4 1\n\nrun/e.mp4 1\n")
    (lists / "my_val_list.txt").write_text("run/f.mp4 1\n")
    spec = f"list:{lists / 'my_train_list.txt'}?root={videos}"
    train, val = _listed(spec, "train"), _listed(spec, "val")
    assert train.classes == ["jump", "run"]  # index labels named after the folder each one's videos share
    assert _rel(train.samples, videos) == [("jump/a b.mp4", 0), ("jump/c.mp4", 0), ("run/d.mp4", 1), ("run/e.mp4", 1)]
    assert _rel(val.samples, videos) == [("run/f.mp4", 1)] and "my_train_list.txt + my_val_list.txt" in val.layout
    explicit = _listed(f"{spec}&val=my_train_list.txt", "val")  # ?val=FILE, relative to the list's folder
    assert len(explicit.samples) == 4
    (lists / "my_val_list.txt").unlink()
    drawn = _listed(spec, "val")  # no val list beside it: drawn per class
    assert "one list file, validation drawn per class (val=0.2, seed=0" in drawn.layout
    assert Counter(label for _, label in drawn.samples) == {0: 1, 1: 1}
    # class names as labels, paths relative to the list itself
    (videos / "names.txt").write_text("jump/a b.mp4 jumping\nrun/d.mp4\trunning\nrun/e.mp4 running\n")
    named = _listed(f"list:{videos / 'names.txt'}?val=0.5", "train")
    assert named.classes == ["jumping", "running"] and all(os.path.isfile(p) for p, _ in named.samples)
    (lists / "bad.txt").write_text("just-a-path.mp4\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected '<path> <label>'"):
        _listed(f"list:{lists / 'bad.txt'}", "train")
    with pytest.raises(DataError, match="is not a file"):
        _listed(f"list:{lists / 'nope.txt'}", "train")
    with pytest.raises(ConfigError, match="unknown option"):
        parse_spec(f"list:{lists / 'bad.txt'}?split=2")


def test_search_on_class_folders_runs_with_the_documented_split_hashed_in_config(tmp_path, generated_videos):
    """`pvnas search --data folder:ROOT` on class folders runs on the documented split and records the hash of its
    file list in config.yaml; a copy of the tree at another path (another machine) lists the same hash."""
    roots = [tmp_path / "a" / "clips", tmp_path / "b" / "clips_copy"]
    for root in roots:
        for cls, names in {"pan": ["h264.mkv", "vp9.webm", "mpeg4.avi"], "zoom": ["h264_bframes.mp4", "mjpeg.avi"]}.items():
            for name in names:
                (root / cls).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(generated_videos[name], root / cls / name)
    run = tmp_path / "run"
    assert main(["search", "--data", f"folder:{roots[0]}", "--preset", "tiny", "--epochs", "1", "--channels", "4",
                 "--batch-size", "1", "--out", str(run)]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    train, copy = _listed(f"folder:{roots[0]}", "train"), _listed(f"folder:{roots[1]}", "train")
    assert len(train.samples) == 3 and _rel(train.samples, roots[0]) == _rel(copy.samples, roots[1])
    assert config["data_files"]["train"] == file_list_hash(train.samples) == file_list_hash(copy.samples)
    assert config["data"] == f"folder:{roots[0]}"
