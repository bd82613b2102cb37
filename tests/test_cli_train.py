"""End to end through the CLI: random -> train -> eval -> predict -> export (tiny, 1 epoch)."""

import json

import pytest
import torch

from pvnas.cli import main
from pvnas.data.datasets.video import VideoDataset
from pvnas.retrain.export import export_model
from pvnas.retrain.modelfile import load_model


def run_cli(capsys, *args):
    rc = main([str(a) for a in args])
    out = capsys.readouterr().out
    return rc, out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`pvnas random --seed 1 -o g.json && pvnas train --genotype g.json --data synthetic:16 --preset tiny ...`."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["random", "--seed", "1", "-o", str(root / "g.json")]) == 0
    assert main(["train", "--genotype", str(root / "g.json"), "--data", "synthetic:16", "--preset", "tiny",
                 "--channels", "4", "--batch-size", "4", "--epochs", "1", "--out", str(root / "R")]) == 0
    return root / "R" / "model.pt"


def test_eval_prints_one_json_object_with_every_view_protocol(trained, capsys):
    rc, out = run_cli(capsys, "eval", "--checkpoint", trained, "--data", "synthetic:16", "--views", "2x3")
    assert rc == 0
    result = json.loads(out)  # nothing else on stdout
    assert result["views"] == "2x3" and result["videos"] == 8 and result["skipped"] == 0
    assert set(result["by_views"]) == {"1x1", "2x1", "2x3"}
    assert (result["top1"], result["top5"]) == (result["by_views"]["2x3"]["top1"], result["by_views"]["2x3"]["top5"])
    assert all(0.0 <= v[k] <= 1.0 for v in result["by_views"].values() for k in ("top1", "top5"))
    assert json.loads((trained.parent / "eval_synthetic_16.json").read_text()) == result
    # per class: the confusion matrix (true x predicted) of the 2x3 scores, its diagonal over its rows
    classes, confusion = result["classes"], result["confusion"]
    assert len(confusion) == len(classes) and all(len(row) == len(classes) for row in confusion)
    assert sum(map(sum, confusion)) == 8 and sum(confusion[i][i] for i in range(len(classes))) == round(8 * result["top1"])
    assert list(result["per_class"]) == classes
    for i, name in enumerate(classes):
        videos = sum(confusion[i])
        assert result["per_class"][name] == {"videos": videos, "top1": confusion[i][i] / videos if videos else None}


def test_eval_user_errors_are_one_line_exit_2(trained, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.pt"), "--data", "synthetic"]) == 2
    assert "file not found" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(trained), "--data", "synthetic", "--views", "3"]) == 2
    assert "--views" in capsys.readouterr().err


def test_predict_answers_good_videos_and_reports_broken_ones(trained, real_clips, bad_videos, capsys):
    good = [real_clips["cleaning_pool_32f.mp4"], real_clips["three_frames_rotated.mov"]]
    rc, out = run_cli(capsys, "predict", "--checkpoint", trained, good[0], bad_videos["empty.mp4"],
                      bad_videos["text.mp4"], good[1])
    assert rc == 0
    results = json.loads(out)
    assert [r["video"] for r in results] == [str(good[0]), str(bad_videos["empty.mp4"]), str(bad_videos["text.mp4"]), str(good[1])]
    assert "error" in results[1] and "error" in results[2]
    for r in (results[0], results[3]):
        probs = [p["prob"] for p in r["predictions"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    rc, out = run_cli(capsys, "predict", "--checkpoint", trained, bad_videos["empty.mp4"])
    assert rc == 2 and "error" in json.loads(out)[0]


def real_clip(model_file, path):
    """A normalised centre clip of a real video, exactly as eval feeds the model."""
    trained = load_model(model_file)
    dataset = VideoDataset([(str(path), 0)], trained.classes, trained.config.clip, views="single")
    return dataset[0][0].unsqueeze(0)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_eager_on_a_real_clip(trained, real_clips, tmp_path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    clip = real_clip(trained, real_clips["flipping_pancake.mkv"])
    result = export_model(trained, fmt, tmp_path / f"model.{fmt}", example=clip)
    assert result["max_abs_diff"] < 1e-4
    eager = load_model(trained).model
    with torch.no_grad():
        expected = eager(torch.cat([clip, clip.flip(-1)]))
    if fmt == "torchscript":  # the file alone, batch 2 (not the traced batch size)
        loaded = torch.jit.load(str(tmp_path / "model.torchscript"))
        got = loaded(torch.cat([clip, clip.flip(-1)]))
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"clips": torch.cat([clip, clip.flip(-1)]).numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    rc, out = run_cli(capsys, "export", "--checkpoint", trained, "--format", fmt, "-o", tmp_path / "cli.out")
    assert rc == 0 and json.loads(out)["format"] == fmt and (tmp_path / "cli.out").stat().st_size > 0


def test_train_from_a_runs_config_reproduces_its_weights(trained, tmp_path, capsys):
    """`pvnas train --config RUN/config.yaml --out RUN2`: genotype, data and settings from the file."""
    assert main(["train", "--config", str(trained.parent / "config.yaml"), "--out", str(tmp_path / "R2")]) == 0
    ours, theirs = (torch.load(p, weights_only=True)["state_dict"] for p in (tmp_path / "R2" / "model.pt", trained))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert main(["train", "--config", str(trained.parent / "config.yaml"), "--out", str(tmp_path / "R3"),
                 "--channels", "8"]) == 0  # a flag overrides the file
    assert load_model(tmp_path / "R3" / "model.pt").config.channels == 8


def test_flops_follows_the_preset_or_the_trained_model(trained, tmp_path, capsys):
    from pvnas.config import NETWORK_PRESETS
    from pvnas.metrics.flops import count_flops

    model = load_model(trained)
    clip = model.config.clip
    rc, out = run_cli(capsys, "flops", "--checkpoint", trained)
    result = json.loads(out)
    expected = count_flops(model.model, (3, clip.frames, clip.crop, clip.crop))
    assert rc == 0 and result["params"] == expected["params"] and result["gmacs"] == expected["gmacs"]
    assert result["input"] == [3, clip.frames, clip.crop, clip.crop] and result["num_classes"] == len(model.classes)
    model.genotype.save(tmp_path / "g.json")
    by_genotype = ["flops", "--genotype", tmp_path / "g.json", "--preset", "tiny", "--channels", "4",
                   "--num-classes", len(model.classes)]
    rc, out = run_cli(capsys, *by_genotype)  # the same network built from its genotype: the preset's clip
    tiny = NETWORK_PRESETS["tiny"].clip
    assert rc == 0 and json.loads(out) == {**result, "input": [3, tiny.frames, tiny.crop, tiny.crop], "preset": "tiny"}
    assert run_cli(capsys, *by_genotype, "--crop", "24")[1] == run_cli(capsys, *by_genotype, "--size", "24")[1]
    assert json.loads(run_cli(capsys, *by_genotype[:-2])[1])["num_classes"] == 400  # Kinetics-400 by default
    assert main(["flops", "--checkpoint", str(trained), "--preset", "L"]) == 2
    assert "--checkpoint counts the trained network as it is; --preset goes with --genotype" in capsys.readouterr().err


def test_train_resume_auto_leaves_a_finished_run_alone_and_refuses_another_config(trained, tmp_path, capsys):
    """A requeued `pvnas train` after its end: exit 0, nothing rewritten; the same flag on another config's run:
    one line, exit 2, nothing written."""
    run = trained.parent
    args = ["train", "--genotype", run.parent / "g.json", "--data", "synthetic:16", "--preset", "tiny",
            "--channels", "4", "--batch-size", "4", "--epochs", "1", "--resume", "auto", "--out", run]
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    assert "finished" in capsys.readouterr().err
    assert main([str(a) for a in args[:-4] + ["--channels", "8", "--resume", "auto", "--out", run]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "channels = 4, this run has 8" in err, err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()} == files
