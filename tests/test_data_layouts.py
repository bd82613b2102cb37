"""The native kinds find every common layout of their dataset by themselves, list the same videos with the same
labels in each, keep the official class and split counts, and name what they tried when nothing fits."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter

import pytest

import dataset_trees as T
from pvnas.cli import main
from pvnas.data import list_samples, parse_spec
from pvnas.data.doctor import check_dataset
from pvnas.errors import DataError

UCF = T.ucf101_catalog(["ApplyEyeMakeup", "Archery", "HandstandPushups"], train=[8, 9, 8], test=[2, 2, 1])
HMDB = T.hmdb51_catalog(["brush_hair", "wave", "fall_floor"], train=3, test=2, unused=[1, 2, 0])
K400 = T.kinetics_catalog(["air drumming", "abseiling", "passing American football (in game)"], train=3, val=1)
SSV2 = T.ssv2_catalog(["Pushing [something] from left to right", "Holding [something]", "Dropping [something]"], 3, 1)

# dataset -> (catalog, tree writer, layout -> the name `pvnas data` must print for it, folds to check)
DATASETS = {
    "ucf101": (UCF, T.ucf101_tree, {"official": "official archive; videos per class in UCF-101/",
                                    "official_inside": "official archive; videos per class in ROOT/",
                                    "mmaction2": "MMAction2; videos per class in videos/",
                                    "mmaction2_lists": "MMAction2 list files; videos per class in videos/",
                                    "flat": "official archive; videos found by file name elsewhere"}, (1, 2, 3)),
    "hmdb51": (HMDB, T.hmdb51_tree, {"official": "official archive; videos per class in ROOT/",
                                     "mmaction2": "MMAction2; videos per class in videos/",
                                     "mmaction2_generated": "MMAction2 generated lists; videos per class in videos/",
                                     "mmaction2_lists": "MMAction2 list files; videos per class in videos/",
                                     "flat": "official archive; videos found by file name elsewhere"}, (1, 2, 3)),
    "kinetics": (K400, T.kinetics_tree, {"cvdf": "official CSVs (CVDF archive, ActivityNet crawler); videos flat in",
                                         "crawler": "official CSVs (CVDF archive, ActivityNet crawler); videos per class",
                                         "mmaction2": "MMAction2 list files; videos per class in videos_",
                                         "mmaction2_lists": "MMAction2 list files; videos per class in videos_",
                                         "mmaction2_csv": "MMAction2 annotations; videos per class in videos_",
                                         "pyslowfast": "PySlowFast/PyTorchVideo lists; videos per class",
                                         "pytorchvideo_dirs": "class folders, no CSV (PyTorchVideo's directory form); "
                                                              "split folders (train/ + val/)"}, (1,)),
    "ssv2": (SSV2, T.ssv2_tree, {"official": "official download; videos flat in 20bn-something-something-v2/",
                                 "official_long": "official download; videos flat in 20bn-something-something-v2/",
                                 "mmaction2": "MMAction2; videos flat in videos/",
                                 "mmaction2_lists": "MMAction2 list files; videos flat in videos/"}, (1,)),
}
CASES = [(kind, layout) for kind, (_, _, layouts, _) in DATASETS.items() for layout in layouts]


def _listed(spec: str, split: str):
    kind, arg, options = parse_spec(spec)
    return list_samples(kind, arg, options, split)


def _names(samples) -> list[tuple[str, int]]:
    return sorted((os.path.basename(p), label) for p, label in samples)


@pytest.mark.parametrize("kind,layout", CASES, ids=[f"{k}-{lay}" for k, lay in CASES])
def test_each_layout_is_found_and_lists_the_same_labelled_videos(kind, layout, tmp_path):
    catalog, write, layouts, folds = DATASETS[kind]
    root = write(tmp_path / kind, catalog, layout, T.placeholder)
    for fold in folds:
        spec = f"{kind}:{root}" + (f"?split={fold}" if len(folds) > 1 else "")
        for split in ("train", "val"):
            listing = _listed(spec, split)
            assert listing.layout.startswith(layouts[layout]), listing.layout
            assert _names(listing.samples) == catalog.expected(split, fold), (fold, split)
            assert all(os.path.isfile(p) for p, _ in listing.samples)
            if (kind, layout) == ("kinetics", "mmaction2_lists"):  # no CSV beside: names from the label folders
                assert listing.classes == [c.replace(" ", "_") for c in catalog.classes]
            else:
                assert listing.classes == catalog.classes


@contextlib.contextmanager
def folder_reads(monkeypatch):
    """How often each folder is read while inside (os.walk, glob and pathlib read folders through these two)."""
    reads: Counter = Counter()

    def counted(real):
        def read(path=".", *args, **kwargs):
            reads[str(path)] += 1
            return real(path, *args, **kwargs)
        return read

    with monkeypatch.context() as m:
        for name in ("scandir", "listdir"):
            m.setattr(os, name, counted(getattr(os, name)))
        yield reads


def test_official_class_and_split_counts(tmp_path, monkeypatch):
    """UCF-101: 101 classes, 9,537 / 3,783 videos in split 1; HMDB-51: 51 classes, 3,570 / 1,530 in every split
    (70 / 30 per class, the rest unused) -- listed without decoding, from empty placeholder files, reading each
    folder a few times at most (not once per video or class: a lookup that walks the tree)."""
    ucf = T.ucf101_catalog([f"Action{i:03d}" for i in range(101)],
                           train=[95] * 43 + [94] * 58, test=[38] * 46 + [37] * 55)
    for layout in ("official", "mmaction2_lists"):
        root = T.ucf101_tree(tmp_path / f"ucf_{layout}", ucf, layout, T.placeholder)
        with folder_reads(monkeypatch) as reads:
            train, val = _listed(f"ucf101:{root}?split=1", "train"), _listed(f"ucf101:{root}?split=1", "val")
        assert (len(train.classes), len(train.samples), len(val.samples)) == (101, 9537, 3783), layout
        assert max(reads.values(), default=0) <= 6, (layout, reads.most_common(3))
    hmdb = T.hmdb51_catalog([f"action_{i:02d}" for i in range(51)], train=70, test=30, unused=[33] * 34 + [32] * 17)
    root = T.hmdb51_tree(tmp_path / "hmdb", hmdb, "official", T.placeholder)
    assert len(list(root.rglob("*.avi"))) == 6766
    for fold in (1, 2, 3):
        with folder_reads(monkeypatch) as reads:
            train, val = _listed(f"hmdb51:{root}?split={fold}", "train"), _listed(f"hmdb51:{root}?split={fold}", "val")
        assert (len(train.classes), len(train.samples), len(val.samples)) == (51, 3570, 1530), fold
        assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
        assert max(reads.values(), default=0) <= 6, (fold, reads.most_common(3))


@pytest.mark.parametrize("kind", DATASETS)
def test_nothing_fits_one_error_naming_the_layouts_and_the_first_file(kind, tmp_path):
    catalog, write, _, _ = DATASETS[kind]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        _listed(f"{kind}:{empty}", "train")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"--data {kind}:{empty}: no known layout in {empty}; tried ")
    assert "the first file looked for was " + str(empty) in message
    layouts = {"ucf101": ["official archive", "MMAction2", "MMAction2 list files"],
               "hmdb51": ["official archive", "MMAction2", "MMAction2 generated lists", "MMAction2 list files"],
               "kinetics": ["official CSVs", "MMAction2 list files", "MMAction2 annotations", "PySlowFast/PyTorchVideo lists",
                             "class folders, no CSV"],
               "ssv2": ["official download", "MMAction2", "MMAction2 list files"]}[kind]
    assert all(f"{name} " in message for name in layouts), message


BROKEN = {  # a layout with one part gone -> what the one error line must name
    ("ucf101", "official"): ("ucfTrainTestlist/testlist01.txt", "testlist01.txt of split 1 not found"),
    ("ucf101", "mmaction2_lists"): ("ucf101_val_split_1_videos.txt", "ucf101_val_split_1_videos.txt"),
    ("hmdb51", "mmaction2_generated"): ("annotations/testlist01.txt", "testlist01.txt of split 1 not found"),
    ("hmdb51", "mmaction2_lists"): ("hmdb51_val_split_1_videos.txt", "hmdb51_val_split_1_videos.txt"),
    ("kinetics", "cvdf"): ("annotations/val.csv", "Kinetics validation CSV not found"),
    ("kinetics", "mmaction2"): ("kinetics400_val_list_videos.txt", "kinetics400_val_list_videos.txt"),
    ("kinetics", "pyslowfast"): ("val.csv", "Kinetics validation list not found"),
    ("ssv2", "official"): ("labels/validation.json", "validation.json not found"),
    ("ssv2", "mmaction2"): ("annotations/something-something-v2-labels.json", "labels.json not found"),
    ("ssv2", "mmaction2_lists"): ("sthv2_val_list_videos.txt", "sthv2_val_list_videos.txt"),
}


@pytest.mark.parametrize("kind,layout", BROKEN, ids=[f"{k}-{lay}" for k, lay in BROKEN])
def test_a_broken_layout_is_named_in_one_line(kind, layout, tmp_path, capsys):
    catalog, write, _, _ = DATASETS[kind]
    root = write(tmp_path / kind, catalog, layout, T.placeholder)
    gone, named = BROKEN[kind, layout]
    (root / gone).unlink()
    assert main(["data", f"{kind}:{root}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0], err


@pytest.mark.parametrize("kind", DATASETS)
def test_videos_gone_are_named_with_where_they_were_looked_for(kind, tmp_path, capsys):
    """Manifests without their videos (a wrong ROOT, an unfinished download): `pvnas data` says how many and
    which, exit 1, and a run refuses with the same line."""
    catalog, write, layouts, _ = DATASETS[kind]
    layout = next(iter(layouts))
    root = write(tmp_path / kind, catalog, layout, T.placeholder)
    victim = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".avi", ".mp4", ".webm"))[0]
    victim.unlink()
    assert main(["data", f"{kind}:{root}", "--json"]) == 1
    out = capsys.readouterr().out
    assert victim.name in out and "do not exist" in out and "runs refuse this split" in out


def test_pvnas_data_decodes_and_prints_the_layout(tmp_path, generated_videos, capsys):
    """On trees of real tiny clips, every layout is usable and `pvnas data` says which layout it found."""
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(generated_videos["h264.mkv"], clip)
    for kind, (catalog, write, layouts, _) in DATASETS.items():
        layout = list(layouts)[-1]
        root = write(tmp_path / f"{kind}-{layout}", catalog, layout, T.hardlink(clip))
        assert main(["data", f"{kind}:{root}"]) == 0
        out = capsys.readouterr().out
        assert f"layout: {layouts[layout]}" in out and "usable" in out.splitlines()[0], out
        report = check_dataset(f"{kind}:{root}")
        assert report["usable"] and report["splits"]["train"]["readable"] == len(catalog.expected("train"))

