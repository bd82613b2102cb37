"""``pvnas estimate``: the search-time projection, the dataset size of ``--data``, and the CLI report."""

import json

import pytest
import torch

from pvnas.estimate.datasets import dataset_of
from pvnas.errors import ConfigError, DataError
from pvnas.estimate.project import project_search


_COUNTED: dict[tuple, tuple[float, float]] = {}


@pytest.fixture(autouse=True)
def quick_estimates(monkeypatch):
    """The command's answers, not its precision: 3 timed steps instead of a 30 s budget's worth, and the activations
    of the tiny supernet counted once for this file (~3 s a count on fake tensors; later calls with other class
    counts get the first count, a few logits off). The count's own tests: test_estimate_step.py."""
    import pvnas.estimate.search as search
    import pvnas.estimate.step as step

    real = search.counted_activations_mb

    def counted_once(build, clip, device, amp_dtype=None):
        key = (tuple(clip), str(device), amp_dtype)
        if key not in _COUNTED:
            _COUNTED[key] = real(build, clip, device, amp_dtype)
        return _COUNTED[key]

    monkeypatch.setattr(step, "MAX_TIMED_STEPS", 3)
    monkeypatch.setattr(search, "counted_activations_mb", counted_once)


def test_estimate_projection_arithmetic():
    out = project_search(step_seconds=2.0, dataset_size=1000, batch=32, epochs=80)
    assert out["steps_per_epoch"] == 31  # the loader drops the last partial batch
    assert out["epoch_seconds"] == 62.0
    assert out["search_seconds"] == 31 * 80 * 2.0
    assert out["search_hours"] == pytest.approx(31 * 80 * 2.0 / 3600)
    assert project_search(1.0, 5, 8, 2)["steps_per_epoch"] == 1


def test_estimate_counts_the_training_videos_and_classes_of_data(tmp_path):
    for name, count in (("a", 3), ("b", 2)):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(count):
            (tmp_path / "train" / name / f"{i}.mp4").write_bytes(b"")
    (tmp_path / "train" / "b" / "notes.txt").write_text("not a video")
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "0.mp4").write_bytes(b"")
    size, source, classes = dataset_of(f"folder:{tmp_path}")
    assert (size, classes) == (5, 2) and str(tmp_path / "train") in source
    assert dataset_of("demo") == (320, "demo (train split)", 8)
    assert dataset_of("synthetic:12")[::2] == (12, 8)
    size, source, classes = dataset_of(f"kinetics:{tmp_path / 'absent'}")  # costed before the download
    assert (size, classes) == (225946, None) and "official" in source
    assert dataset_of(None)[::2] == (1000, None)
    with pytest.raises(DataError, match="absent"):
        dataset_of(f"folder:{tmp_path / 'absent'}")
    with pytest.raises(ConfigError):
        dataset_of("nope:x")


def test_cli_estimate_prints_json(capsys):
    from pvnas.cli import main

    code = main(["estimate", "--preset", "tiny", "--batch", "2", "--dataset-size", "100", "--epochs", "3",
                 "--steps", "1", "--num-classes", "5"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("params", "macs_per_clip", "activation_memory_mb", "peak_step_memory_mb", "step_seconds",
                "steps_per_epoch", "search_seconds", "search_hours"):
        assert key in out, key
    assert out["params"] > 0 and out["macs_per_clip"] > 0 and out["activation_memory_mb"] > 0
    assert out["steps_per_epoch"] == 50 and out["epochs"] == 3
    assert out["search_seconds"] == pytest.approx(150 * out["step_seconds"])
    assert main(["estimate", "--preset", "tiny", "--batch", "0"]) == 2


def test_cli_estimate_takes_size_and_classes_from_data(capsys):
    from pvnas.cli import main

    assert main(["estimate", "--preset", "tiny", "--batch", "2", "--epochs", "1", "--steps", "1",
                 "--data", "synthetic:10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["dataset_size"], out["num_classes"], out["steps_per_epoch"]) == (10, 8, 5)
    assert main(["estimate", "--preset", "tiny", "--data", "folder:/absent/videos"]) == 2


def test_the_estimate_times_the_step_on_the_runs_threads(monkeypatch, capsys):
    """`pvnas search --preset tiny` runs on the preset's one torch thread: the estimate times its step so, and on
    `--threads N` where given (on a 2-core box timing on both cores projected 2.5x the real step)."""
    from pvnas.cli import main
    from pvnas.estimate import search as search_estimate

    seen = []
    monkeypatch.setattr(search_estimate, "search_step", lambda *a, **kw: seen.append(torch.get_num_threads()))
    assert main(["estimate", "--preset", "tiny", "--dataset-size", "16", "--epochs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(seen) == {1} and (out["threads"], out["workers"], out["dtype"]) == (1, 0, "float32")
    seen.clear()
    assert main(["estimate", "--preset", "tiny", "--dataset-size", "16", "--epochs", "1", "--threads", "2"]) == 0
    assert set(seen) == {2} and json.loads(capsys.readouterr().out)["device"] == "cpu x2 threads"


def test_an_out_of_memory_in_the_estimate_is_an_answer_not_a_traceback(monkeypatch, capsys):
    from pvnas.cli import main
    from pvnas.estimate import search as search_estimate

    def step(state, clips, labels, **kw):
        if len(clips) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(search_estimate, "search_step", step)
    assert main(["estimate", "--preset", "tiny", "--dataset-size", "16", "--epochs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step_seconds"] is None and out["step_seconds_source"] == "not measured: out of memory at batch 2"
    assert out["max_batch"] == 1 and not out["fits_in_memory"] and "search_seconds" not in out
