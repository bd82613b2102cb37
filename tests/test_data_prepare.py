"""`pvnas prepare`: re-encoded trees keep layout, manifests, frame counts; become cheap to seek."""

from __future__ import annotations

import shutil

import av

from pvnas.config import ClipConfig
from pvnas.data import build_dataset
from pvnas.data.decode import PyAVDecoder
from pvnas.data.prepare import prepare_dataset


def test_prepare_ucf_style_tree(tmp_path, real_clips, generated_videos, bad_videos):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "videos" / "ApplyEyeMakeup").mkdir(parents=True)
    (src / "videos" / "Rotated").mkdir(parents=True)
    shutil.copyfile(real_clips["apply_eye_makeup.avi"], src / "videos" / "ApplyEyeMakeup" / "v_a.avi")
    shutil.copyfile(generated_videos["rotated_90.mp4"], src / "videos" / "Rotated" / "v_r.mp4")
    shutil.copyfile(bad_videos["text.mp4"], src / "videos" / "Rotated" / "v_bad.mp4")
    (src / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Rotated\n")
    (src / "trainlist01.txt").write_text("ApplyEyeMakeup/v_a.avi 1\nRotated/v_r.mp4 2\n")
    (src / "testlist01.txt").write_text("Rotated/v_r.mp4\n")

    summary = prepare_dataset(src, dst, short_side=64, keyint=8, workers=1)
    assert (summary["converted"], summary["copied"], summary["already_done"]) == (2, 3, 0)
    assert [f["path"].split("/")[-1] for f in summary["failed"]] == ["v_bad.mp4"]
    assert not any(p.name.startswith(".") for p in dst.rglob("*"))  # no temporary files left

    decoder = PyAVDecoder()
    before, after = (
        decoder.info(src / "videos" / "ApplyEyeMakeup" / "v_a.avi"),
        decoder.info(dst / "videos" / "ApplyEyeMakeup" / "v_a.avi"),
    )
    assert after.num_frames == before.num_frames and (after.width, after.height) == (86, 64)
    assert after.fps == before.fps
    index = decoder._index(str(dst / "videos" / "ApplyEyeMakeup" / "v_a.avi"))
    assert index.mode == "count" and len(index.keys) >= before.num_frames // 8  # XviD with B-frames -> seekable
    rotated = decoder.info(dst / "videos" / "Rotated" / "v_r.mp4")
    assert (rotated.width, rotated.height, rotated.rotation) == (64, 96, 0)  # upright, already 64 short side
    with av.open(str(dst / "videos" / "Rotated" / "v_r.mp4")) as c:
        assert not c.streams.audio

    ds = build_dataset(f"ucf101:{dst}", "train", ClipConfig(frames=4, window_seconds=0.32, crop=32, scale=(32, 40)))
    assert [label for _, label in ds.samples] == [0, 1]
    assert prepare_dataset(src, dst, short_side=64, keyint=8, workers=1)["already_done"] == 2  # resumable
