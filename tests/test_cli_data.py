"""`pvnas data` and a search on a folder tree of real clips mixed with broken files.

`pvnas data` runs in this process (its report, exit codes and the --deep workers are the same there); the
search runs as the user's own process, with its warnings on stderr.
"""

import json
import shutil
import subprocess
import sys

import pytest

from pvnas.cli import main


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory, real_clips, bad_videos):
    root = tmp_path_factory.mktemp("mixed") / "tree"
    layout = {
        "train/cleaning/a.mp4": real_clips["cleaning_pool_32f.mp4"],
        "train/cleaning/b.mkv": real_clips["flipping_pancake.mkv"],
        "train/makeup/c.avi": real_clips["apply_eye_makeup.avi"],
        "train/makeup/d.mov": real_clips["three_frames_rotated.mov"],
        "train/makeup/e.mp4": real_clips["cleaning_pool_32f.mp4"],
        "train/cleaning/broken_empty.mp4": bad_videos["empty.mp4"],
        "train/makeup/broken_text.mp4": bad_videos["text.mp4"],
        "train/cleaning/broken_truncated.mp4": bad_videos["truncated.mp4"],
        "val/cleaning/f.mp4": real_clips["cleaning_pool_32f.mp4"],
        "val/makeup/g.avi": real_clips["apply_eye_makeup.avi"],
        "val/makeup/broken_audio.mp4": bad_videos["audio_only.mp4"],
    }
    for rel, src in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    return root


def pvnas(*args):
    return subprocess.run([sys.executable, "-m", "pvnas", *args], capture_output=True, text=True, timeout=900)


def data(capfd, *args):
    """`pvnas data ARGS` in this process: (exit code, stdout, stderr), the --deep workers' output included."""
    capfd.readouterr()
    code = main(["data", *args])
    out, err = capfd.readouterr()
    return code, out, err


def test_data_doctor_names_every_broken_file_and_exits_0(mixed_tree, capfd):
    code, out, err = data(capfd, f"folder:{mixed_tree}")
    assert code == 0, out + err
    for name in ("broken_empty.mp4", "broken_text.mp4", "broken_truncated.mp4", "broken_audio.mp4"):
        assert name in out
    report = json.loads(data(capfd, f"folder:{mixed_tree}", "--json")[1])
    assert report["usable"] and report["classes"] == ["cleaning", "makeup"]
    assert report["splits"]["train"]["readable"] == 5 and len(report["splits"]["train"]["unreadable"]) == 3


@pytest.mark.slow
def test_search_on_mixed_tree_completes_and_counts_skipped(mixed_tree, tmp_path):
    run = tmp_path / "run"
    proc = pvnas("search", "--data", f"folder:{mixed_tree}", "--preset", "tiny", "--epochs", "1",
                 "--channels", "4", "--batch-size", "2", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped"] == 3
    assert sorted(p.rsplit("/", 1)[-1] for p in record["skipped_files"]) == [
        "broken_empty.mp4", "broken_text.mp4", "broken_truncated.mp4"]
    warnings = [line for line in proc.stderr.replace("\r", "\n").splitlines() if "broken_text.mp4" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]  # one warning per file


def test_data_doctor_on_unusable_and_bad_specs(tmp_path, capfd):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.mp4").write_bytes(b"")
    assert data(capfd, f"folder:{tmp_path}")[0] == 1
    code, _, err = data(capfd, "nowhere:/x")
    assert code == 2 and "unknown dataset spec" in err


def test_data_doctor_deep_exit_codes_and_json(mixed_tree, tmp_path, capfd):
    """--deep: 3 when usable but some videos would be skipped, 0 when every video reads; JSON only on stdout."""
    code, out, err = data(capfd, f"folder:{mixed_tree}", "--deep", "--json", "--workers", "2")
    assert code == 3 and "Traceback" not in err, err
    report = json.loads(out)
    assert report["deep"] and report["usable"] and not report["all_readable"]
    assert sorted(u["path"].rsplit("/", 1)[-1] for u in report["splits"]["train"]["unreadable"]) == [
        "broken_empty.mp4", "broken_text.mp4", "broken_truncated.mp4"]
    clean = tmp_path / "clean"
    for rel in ("train/cleaning/a.mp4", "train/makeup/c.avi", "val/cleaning/f.mp4"):
        (clean / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mixed_tree / rel, clean / rel)
    code, out, _ = data(capfd, f"folder:{clean}", "--deep")
    assert code == 0 and "train: 2 videos, 2 readable, 0 unreadable, 0 damaged but readable" in out
    code, _, err = data(capfd, f"folder:{clean}", "--deep", "--timeout", "0")
    assert code == 2 and err.strip().endswith("--timeout and --max-memory must be > 0, got 0 s and 2048 MB")
