"""`pvnas train --init model.pt`: a retrain that starts from a trained model (name/shape matching, a new classifier
for other classes, refusals in one line, --freeze then fine-tune, resume, torchrun; the file read as data)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import pvnas.retrain.train as train_module
from pvnas.cli import main
from pvnas.config import NETWORK_PRESETS, RunOptions, override
from pvnas.errors import ConfigError
from pvnas.retrain.train import run_train
from pvnas.space.genotype import Genotype

TINY = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, val_videos=4, epochs=1)
GENOTYPE = Genotype.random(5, min_conv=4)
HEAD = ("classifier.weight", "classifier.bias")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A model trained one epoch on the 8 moving-pattern classes."""
    run = tmp_path_factory.mktemp("source") / "run"
    run_train(GENOTYPE, TINY, "synthetic:16", run, preset="tiny")
    return run / "model.pt"


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory, generated_videos) -> str:
    """A `folder:` dataset with 2 other classes (4 training and 2 validation videos each)."""
    root = tmp_path_factory.mktemp("target")
    names = ["h264.mkv", "vp9.webm", "mpeg4.avi", "h264_bframes.mp4", "mjpeg.avi", "odd_97x71.mp4"]
    for split, picks in (("train", names[:4]), ("val", names[4:])):
        for cls in ("catch", "throw"):
            for name in picks:
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(generated_videos[name], root / split / cls / name)
    return f"folder:{root}"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _epoch_states(monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The model.pt state written at the end of each epoch of the runs that follow."""
    states: list[dict[str, torch.Tensor]] = []
    real = train_module.save_model

    def save(path, record):
        states.append({k: v.clone() for k, v in record["state_dict"].items()})
        real(path, record)

    monkeypatch.setattr(train_module, "save_model", save)
    return states


def test_tensors_matching_by_name_and_shape_load_and_a_new_classifier_learns_other_classes(source, two_classes,
                                                                                           tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="pvnas")
    run = tmp_path / "run"
    assert main(["train", "--init", str(source), "--data", two_classes, "--preset", "tiny", "--channels", "4",
                 "--epochs", "1", "--batch-size", "4", "--freeze", "1", "--out", str(run)]) == 0  # genotype: the model's
    before, after = _weights(source), _weights(run / "model.pt")
    init = yaml.safe_load((run / "config.yaml").read_text())["init"]
    assert sorted(init["reinitialised"]) == sorted(HEAD) and sorted(init["skipped"]) == sorted(HEAD)
    assert set(init["loaded"]) == set(before) - set(HEAD) and init["classes"].startswith("8 in the model, 2 here")
    assert after["classifier.weight"].shape == (2, before["classifier.weight"].shape[1])
    for name in init["loaded"]:  # --freeze 1: a linear probe, every feature tensor (BN statistics too) as loaded
        assert torch.equal(after[name], before[name]), name
    assert Genotype.load(run / "genotype.json") == GENOTYPE
    assert f"loaded {len(init['loaded'])} tensors; re-initialised classifier.weight, classifier.bias" in caplog.text


def test_same_classes_load_the_classifier_too(source, tmp_path, monkeypatch):
    started = []
    real = train_module.init_from_model

    def init_and_keep(model, *args):
        report = real(model, *args)
        started.append({k: v.clone() for k, v in model.state_dict().items()})
        return report

    monkeypatch.setattr(train_module, "init_from_model", init_and_keep)
    run = tmp_path / "run"
    run_train(GENOTYPE, TINY, "synthetic:16", run, preset="tiny", init=source)
    init = yaml.safe_load((run / "config.yaml").read_text())["init"]
    assert init["reinitialised"] == [] and init["skipped"] == [] and init["classes"] == "kept"
    assert all(torch.equal(started[0][k], v) for k, v in _weights(source).items())  # the classifier too


def test_a_model_that_does_not_fit_is_refused_in_one_line(source, tmp_path, capsys):
    other = tmp_path / "other.json"
    Genotype.random(6, min_conv=4).save(other)
    common = ["--data", "synthetic:16", "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "r")]
    cases = [
        (["--init", str(source), "--genotype", str(other), "--preset", "tiny", "--channels", "4"],
         "trained with another genotype than --genotype"),
        (["--init", str(source), "--preset", "tiny"], "trained with channels 4 (preset tiny), this run builds 8; "
                                                      "start it with --channels 4"),
        (["--init", str(source), "--preset", "L", "--channels", "4"], "start it with --preset tiny"),
        (["--init", str(tmp_path / "nope.pt"), "--preset", "tiny"], "--init " + str(tmp_path / "nope.pt")),
        (["--preset", "tiny", "--channels", "4"], "give --genotype FILE (or --init MODEL.pt"),
        (["--genotype", str(other), "--preset", "tiny", "--channels", "4", "--freeze", "0.5"], "it needs --init"),
        (["--init", str(source), "--preset", "tiny", "--channels", "4", "--freeze", "1.5"], "--freeze must be"),
    ]
    for args, message in cases:
        assert main(["train", *args, *common]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
    assert not (tmp_path / "r").exists()
    record = torch.load(source, weights_only=True)
    del record["state_dict"]["cells.0.pre0.op.1.weight"]
    torch.save(record, tmp_path / "cut.pt")
    with pytest.raises(ConfigError, match=r"does not fit this network: cells.0.pre0.op.1.weight needs shape .* the file "
                                          "holds nothing"):
        run_train(GENOTYPE, TINY, "synthetic:16", tmp_path / "r2", preset="tiny", init=tmp_path / "cut.pt")


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_freeze_keeps_stem_and_cells_fixed_then_fine_tunes(impl, source, two_classes, tmp_path, monkeypatch):
    states = _epoch_states(monkeypatch)
    run_train(GENOTYPE, override(TINY, epochs=2, impl=impl), two_classes, tmp_path / "run", preset="tiny",
              init=source, freeze=0.5)
    before = _weights(source)
    features = [k for k in before if not k.startswith("classifier.")]
    assert all(torch.equal(states[0][k], before[k]) for k in features)  # epoch 1: a linear probe
    assert not torch.equal(states[1]["classifier.weight"], states[0]["classifier.weight"])
    changed = [k for k in features if k.endswith("weight") and not torch.equal(states[1][k], before[k])]
    assert len(changed) > len(features) // 4  # epoch 2: everything fine-tunes
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["freeze_epochs"] == 1


def test_resume_inside_the_frozen_epochs_equals_the_uninterrupted_run(source, two_classes, tmp_path, monkeypatch):
    cfg = override(TINY, epochs=3)
    states = _epoch_states(monkeypatch)
    run_train(GENOTYPE, cfg, two_classes, tmp_path / "straight", preset="tiny", init=source, freeze=0.67)
    straight = list(states)
    states.clear()
    real = train_module.save_model
    calls = []

    def crash_in_epoch_2(path, record):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(path, record)

    monkeypatch.setattr(train_module, "save_model", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_train(GENOTYPE, cfg, two_classes, tmp_path / "resumed", preset="tiny", init=source, freeze=0.67)
    states = _epoch_states(monkeypatch)  # (the real save again, recording)
    run_train(GENOTYPE, cfg, two_classes, tmp_path / "resumed", RunOptions(resume=True), preset="tiny", init=source,
              freeze=0.67)
    assert len(states) == 2  # epochs 2 (still frozen) and 3 (fine-tuned)
    for mine, ref in zip(states, straight[1:]):
        assert all(torch.equal(mine[k], ref[k]) for k in ref)
    with pytest.raises(ConfigError, match="freeze_epochs"):
        run_train(GENOTYPE, cfg, two_classes, tmp_path / "resumed", RunOptions(resume=True), preset="tiny",
                  init=source, freeze=0.0)


def test_a_hostile_init_file_is_refused_without_running_its_code(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    hostile = tmp_path / "model.pt"
    torch.save({"format": "pvnas-model/1", "genotype": Payload(), "state_dict": {}}, hostile)
    assert main(["train", "--init", str(hostile), "--data", "synthetic:16", "--preset", "tiny",
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read it as a model file" in err[0], err
    assert not marker.exists() and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_init_and_freeze_under_torchrun(source, tmp_path):
    """`pvnas train --init --freeze` under torchrun, 2 processes: the same init on every rank, the frozen epoch
    (features exactly the model's on both ranks: no gradient or weight decay reaches them) and the fine-tuned one
    (every weight trained, as in a retrain from scratch) in lockstep; the saved model is the ranks' one."""
    torchrun = [shutil.which("torchrun", path=os.path.dirname(sys.executable)), "--standalone", "--nproc_per_node", "2"]
    dump = tmp_path / "dump"
    dump.mkdir()
    proc = subprocess.run([*torchrun, str(Path(__file__).parent / "scripts" / "ddp_transfer.py"), str(source),
                           str(tmp_path / "R"), str(dump)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(dump / "rank0.pt"), torch.load(dump / "rank1.pt")
    before = _weights(source)
    features = [k for k in before if not k.startswith("classifier.")]
    for epoch in (0, 1):
        assert all(torch.equal(r0[epoch][k], r1[epoch][k]) for k in before if "running" not in k), epoch
    assert all(torch.equal(r0[0][k], before[k]) for k in features)
    assert not all(torch.equal(r0[1][k], before[k]) for k in features)
    saved = _weights(tmp_path / "R" / "model.pt")  # rank 0 writes the model every rank holds
    assert saved.keys() == r0[1].keys() and all(torch.equal(saved[k], r0[1][k]) for k in saved)
    config = yaml.safe_load((tmp_path / "R" / "config.yaml").read_text())
    assert config["world_size"] == 2 and config["freeze_epochs"] == 1 and config["init"]["classes"] == "kept"
