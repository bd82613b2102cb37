"""Dataset specs: each native layout built in a tiny tree gives exactly the expected (path, label) pairs."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from pvnas.config import ClipConfig
from pvnas.data import build_dataset, parse_spec
from pvnas.data.datasets.video import VideoDataset
from pvnas.data.loader import Skipped
from pvnas.errors import ConfigError, DataError

CLIP = ClipConfig(frames=4, window_seconds=0.32, crop=32, scale=(32, 40), test_clips=2, test_crops=3)


def _place(src: Path, dst: Path) -> str:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return str(dst)


def _pairs(ds) -> list[tuple[str, int]]:
    return list(ds.samples)


@pytest.fixture()
def videos(real_clips, generated_videos) -> dict[str, Path]:
    return {**real_clips, **generated_videos}


def test_kinetics(tmp_path, videos, caplog):
    root = tmp_path / "k400"
    root.mkdir()
    (root / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "cleaning pool,abc,14,24,train\n"
        "air drumming,xyz_-1,0,10,train\n"
        "air drumming,gone,5.0,15.0,train\n"  # never downloaded
    )
    (root / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\ncleaning pool,val1,100,110,val\n")
    a = _place(videos["cleaning_pool_32f.mp4"], root / "train" / "cleaning pool" / "abc_000014_000024.mp4")
    b = _place(videos["h264_bframes.mp4"], root / "train" / "air_drumming" / "xyz_-1_000000_000010.mp4")
    c = _place(videos["h264.mkv"], root / "val" / "cleaning pool" / "val1_000100_000110.mp4")
    with pytest.raises(DataError, match=r"1 of 3 listed videos do not exist \(.*gone_000005_000015.mp4\); .*\?missing=skip"):
        build_dataset(f"kinetics:{root}", "train", CLIP)
    train = build_dataset(f"kinetics:{root}?missing=skip", "train", CLIP)
    assert train.classes == ["air drumming", "cleaning pool"]
    assert _pairs(train) == [(a, 1), (b, 0)]
    assert train.missing == [str(root / "train" / "air_drumming" / "gone_000005_000015.mp4")]
    assert "1 of 3 listed videos are missing" in caplog.text
    assert _pairs(build_dataset(f"kinetics:{root}", "val", CLIP)) == [(c, 1)]

    (root / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\nbaking,v,0,10,val\n")
    with pytest.raises(DataError, match=r"validate.csv:2: label 'baking' is not a class of .*train.csv"):
        build_dataset(f"kinetics:{root}", "val", CLIP)
    (root / "train.csv").write_text("label,id\nx,y\n")
    with pytest.raises(DataError, match="missing column.*youtube_id"):
        build_dataset(f"kinetics:{root}", "train", CLIP)


def test_ssv2(tmp_path, videos):
    root = tmp_path / "ssv2"
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "labels.json").write_text(
        json.dumps({"Pushing something from left to right": "1", "Holding something": "0"})
    )
    entries = [
        {"id": "7", "label": "pushing a cup from left to right", "placeholders": ["a cup"],
         "template": "Pushing [something] from left to right"},
        {"id": "12", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]},
    ]  # fmt: skip
    (root / "labels" / "train.json").write_text(json.dumps(entries))
    (root / "labels" / "validation.json").write_text(json.dumps(entries[1:]))
    a = _place(videos["vp9.webm"], root / "videos" / "7.webm")
    b = _place(videos["cleaning_pool_32f.mp4"], root / "videos" / "12.webm")  # content, not extension, decides
    train = build_dataset(f"ssv2:{root}", "train", CLIP)
    assert train.classes == ["Holding something", "Pushing something from left to right"]
    assert _pairs(train) == [(a, 1), (b, 0)]
    assert train.flip is False  # "left to right" must stay left to right
    assert build_dataset(f"ssv2:{root}?flip=1", "train", CLIP).flip is True
    assert _pairs(build_dataset(f"ssv2:{root}", "val", CLIP)) == [(b, 0)]
    (root / "labels" / "validation.json").write_text(json.dumps([{"id": "9", "template": "Dropping [something]"}]))
    with pytest.raises(DataError, match=r"video 9: class 'Dropping something' is not in .*labels.json"):
        build_dataset(f"ssv2:{root}", "val", CLIP)


def test_ucf101(tmp_path, videos):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi 2\n"
    )
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    (lists / "trainlist02.txt").write_text("Archery/v_Archery_g01_c01.avi 2\n")
    (lists / "testlist02.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\n")
    a = _place(videos["apply_eye_makeup.avi"], root / "videos" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    b = _place(videos["mpeg4_bframes.avi"], root / "videos" / "Archery" / "v_Archery_g08_c01.avi")
    c = _place(videos["mpeg4.avi"], root / "videos" / "Archery" / "v_Archery_g01_c01.avi")
    assert _pairs(build_dataset(f"ucf101:{root}", "train", CLIP)) == [(a, 0), (b, 1)]
    assert _pairs(build_dataset(f"ucf101:{root}", "val", CLIP)) == [(c, 1)]
    assert _pairs(build_dataset(f"ucf101:{root}?split=2", "train", CLIP)) == [(c, 1)]
    assert _pairs(build_dataset(f"ucf101:{root}?split=2", "val", CLIP)) == [(a, 0)]
    with pytest.raises(ConfigError, match="split must be 1, 2 or 3"):
        build_dataset(f"ucf101:{root}?split=4", "train", CLIP)
    with pytest.raises(DataError, match="trainlist03.txt of split 3 not found"):
        build_dataset(f"ucf101:{root}?split=3", "train", CLIP)
    (lists / "testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\n")
    with pytest.raises(DataError, match=r"testlist01.txt:1: class 'Bowling' .* not in .*classInd.txt"):
        build_dataset(f"ucf101:{root}", "val", CLIP)
    (lists / "trainlist01.txt").write_text("Archery/v_Archery_g08_c01.avi 1\n")
    with pytest.raises(DataError, match="has label 1, but .* numbers Archery 2"):
        build_dataset(f"ucf101:{root}", "train", CLIP)


def test_folder(tmp_path, videos):
    root = tmp_path / "clips"
    a = _place(videos["h264.mkv"], root / "train" / "jump" / "a.mkv")
    b = _place(videos["h264_bframes.mp4"], root / "train" / "jump" / "b.mp4")
    c = _place(videos["mpeg4.avi"], root / "train" / "run" / "c.avi")
    (root / "train" / "run" / "notes.txt").write_text("not a video")
    (root / "train" / "run" / ".hidden.mp4").write_bytes(b"")
    (root / "train" / "walk").mkdir()  # a class with no videos still gets its index
    d = _place(videos["vp9.webm"], root / "validation" / "run" / "d.webm")
    train = build_dataset(f"folder:{root}", "train", CLIP)
    assert train.classes == ["jump", "run", "walk"]
    assert _pairs(train) == [(a, 0), (b, 0), (c, 1)]
    assert _pairs(build_dataset(f"folder:{root}", "val", CLIP)) == [(d, 1)]
    _place(videos["vp9.webm"], root / "validation" / "swim" / "e.webm")
    with pytest.raises(DataError, match=r"class 'swim' has no folder in the training split"):
        build_dataset(f"folder:{root}", "val", CLIP)
    with pytest.raises(ConfigError, match=r"\?val and \?seed draw a validation split, but .* has one \(validation/\)"):
        build_dataset(f"folder:{root}?val=0.3", "val", CLIP)
    only_train = tmp_path / "only_train"
    _place(videos["h264.mkv"], only_train / "train" / "jump" / "a.mkv")  # one video: it stays in training
    with pytest.raises(DataError, match=r"only_train/train \(val split\): lists no videos"):
        build_dataset(f"folder:{only_train}", "val", CLIP)


def test_csv(tmp_path, videos):
    a = _place(videos["h264.mkv"], tmp_path / "v" / "a.mkv")
    b = _place(videos["mpeg4.avi"], tmp_path / "v" / "b.avi")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\nv/a.mkv,swim\nv/b.avi,run\n")
    ds = build_dataset(f"csv:{manifest}", "train", CLIP)
    assert ds.classes == ["run", "swim"] and _pairs(ds) == [(a, 1), (b, 0)]
    assert _pairs(build_dataset(f"csv:{manifest}", "val", CLIP)) == [(a, 1), (b, 0)]  # no split column
    manifest.write_text("v/a.mkv,3,train\nv/b.avi,0,val\n")  # integer labels, split column, no header
    train = build_dataset(f"csv:{manifest}", "train", CLIP)
    assert train.classes == ["0", "1", "2", "3"] and _pairs(train) == [(a, 3)]
    assert _pairs(build_dataset(f"csv:{manifest}", "val", CLIP)) == [(b, 0)]
    manifest.write_text("v/a.mkv,3,holdout\n")
    with pytest.raises(DataError, match=r"list.csv:1: split must be one of"):
        build_dataset(f"csv:{manifest}", "train", CLIP)
    manifest.write_text("v/gone.mp4,x\n")
    with pytest.raises(DataError, match="none of the 1 listed videos exist"):
        build_dataset(f"csv:{manifest}", "train", CLIP)


def test_zero_readable_videos_is_an_error(tmp_path, bad_videos):
    root = tmp_path / "bad"
    for name, path in bad_videos.items():
        _place(path, root / "train" / "x" / name)
        _place(path, root / "val" / "x" / name)
    with pytest.raises(DataError, match=r"none of the 5 videos is readable \(e.g. .*audio_only.mp4: no video stream"):
        build_dataset(f"folder:{root}", "train", CLIP)


def test_views_shapes_and_determinism(tmp_path, videos):
    samples = [(str(videos["flipping_pancake.mkv"]), 0), (str(videos["three_frames_rotated.mov"]), 1)]
    train = VideoDataset(samples, ["a", "b"], CLIP, views="train")
    clip, label, index = train[(0, 123)]
    assert clip.shape == (3, 4, 32, 32) and clip.dtype == torch.float32 and (label, index) == (0, 0)
    assert torch.equal(train[(0, 123)][0], clip) and not torch.equal(train[(0, 124)][0], clip)
    assert train[(1, 5)][0].shape == (3, 4, 32, 32)  # 3-frame video, window 8: indices clamp
    single = VideoDataset(samples, ["a", "b"], CLIP, views="single")
    assert single[0][0].shape == (3, 4, 32, 32) and torch.equal(single[(0, 1)][0], single[(0, 2)][0])
    multi = VideoDataset(samples, ["a", "b"], CLIP, views="multi")
    views = multi[0][0]
    assert views.shape == (6, 3, 4, 32, 32)  # 2 clips x 3 crops, clip-major
    one_clip = dataclasses.replace(CLIP, test_clips=1)
    assert torch.equal(VideoDataset(samples, ["a", "b"], one_clip, views="multi")[0][0][1], single[0][0])
    with pytest.raises(ConfigError, match="views must be one of"):
        build_dataset("synthetic:8", "train", CLIP, views="all")


def test_bad_video_comes_back_as_skipped(tmp_path, videos, bad_videos):
    samples = [(str(videos["h264.mkv"]), 0), (str(bad_videos["text.mp4"]), 1)]
    ds = VideoDataset(samples, ["a", "b"], CLIP)
    item = ds[(1, 0)]
    assert isinstance(item, Skipped) and item.path == samples[1][0] and "not a readable video" in item.reason
    assert ds[0][1] == 0


def test_spec_parsing():
    assert parse_spec("ucf101:/d/ucf?split=2&flip=0") == ("ucf101", "/d/ucf", {"split": "2", "flip": "0"})
    assert parse_spec("demo") == ("demo", "", {})
    with pytest.raises(ConfigError, match="unknown dataset spec 'imagenet:/x'"):
        parse_spec("imagenet:/x")
    with pytest.raises(ConfigError, match="unknown option.*speed; folder accepts: decoder, flip"):
        parse_spec("folder:/x?speed=2")
    with pytest.raises(ConfigError, match="kinetics needs a path"):
        parse_spec("kinetics")
    with pytest.raises(DataError, match="is not a directory"):
        build_dataset("folder:/definitely/not/here", "train", CLIP)


def test_synthetic_views():
    train = build_dataset("synthetic:8", "train", CLIP)
    assert train[(0, 3)][0].shape == (3, 4, 32, 32)
    assert build_dataset("synthetic:8", "val", CLIP, views="multi")[0][0].shape == (6, 3, 4, 32, 32)
    one_clip = dataclasses.replace(CLIP, test_clips=1)
    single = build_dataset("synthetic:8", "val", one_clip)[0][0]
    assert torch.equal(build_dataset("synthetic:8", "val", one_clip, views="multi")[0][0][1], single)
