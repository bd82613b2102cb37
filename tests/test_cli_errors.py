"""Every bad input of the CLI ends in one line naming the problem and the fix, exit code 2, no traceback."""

import json
import os
import shutil

import pytest
import torch

from pvnas.cli import main
from pvnas.space.genotype import Genotype

TINY = ["--preset", "tiny", "--channels", "4", "--batch-size", "4"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = root / "good.json"
    Genotype.random(0, min_conv=4).save(good)
    malformed = root / "malformed.json"
    malformed.write_text('{"format": "pvnas-genotype/1", "cells": ')
    invalid = root / "invalid.json"
    data = json.loads(good.read_text())
    data["cells"]["T-NC"]["edges"][3] = ["zero", 1]
    invalid.write_text(json.dumps(data))
    return {"root": root, "good": str(good), "malformed": str(malformed), "invalid": str(invalid)}


CASES = [
    # nonexistent paths
    (["train", "--genotype", "{root}/nope.json", "--data", "synthetic", "--out", "{root}/r"], "nope.json: genotype file not found"),
    (["flops", "--genotype", "{root}/nope.json"], "nope.json: genotype file not found"),
    (["eval", "--checkpoint", "{root}/nope/model.pt", "--data", "synthetic"], "model.pt: file not found"),
    (["predict", "--checkpoint", "{root}/nope/model.pt", "{root}/x.mp4"], "model.pt: file not found"),
    (["export", "--checkpoint", "{root}/nope/model.pt", "--format", "torchscript", "-o", "{root}/m.ts"], "file not found"),
    (["search", "--data", "folder:{root}/nowhere", "--out", "{root}/r", *TINY], "nowhere is not a directory"),
    (["derive", "{root}/norun"], "not a search run directory"),
    (["plot", "{root}/norun"], "no such run directory"),
    # malformed or invalid genotype
    (["train", "--genotype", "{malformed}", "--data", "synthetic", "--out", "{root}/r"], "malformed.json: not valid JSON"),
    (["flops", "--genotype", "{invalid}"], "invalid.json: cell T-NC, edge 3 (node 3): op 'zero' is not allowed"),
    # unknown preset or dataset spec
    (["search", "--data", "synthetic", "--preset", "XL", "--out", "{root}/r"], "unknown preset 'XL'; expected one of: search, tiny, demo"),
    (["train", "--genotype", "{good}", "--data", "synthetic", "--preset", "XXL", "--out", "{root}/r"], "unknown preset 'XXL'; expected one of: L, M, tiny"),
    (["search", "--data", "imagenet:/data", "--out", "{root}/r", *TINY], "unknown dataset spec 'imagenet:/data'; expected one of: demo"),
    (["search", "--data", "ucf101:{root}?split=4", "--out", "{root}/r", *TINY], "split must be 1, 2 or 3"),
    (["search", "--data", "synthetic:many", "--out", "{root}/r", *TINY], "synthetic:N needs an integer N"),
    # impossible configs
    (["search", "--data", "synthetic", "--out", "{root}/r", *TINY, "--crop", "64"], "crop (--crop) 64 is larger than the smallest scale 32"),
    (["train", "--genotype", "{good}", "--data", "synthetic", "--out", "{root}/r", *TINY, "--crop", "48", "--scale", "40,56"], "use --crop <= 40"),
    (["search", "--data", "synthetic", "--out", "{root}/r", *TINY, "--frames", "0"], "frames (--frames) must be >= 1"),
    (["train", "--genotype", "{good}", "--data", "synthetic", "--out", "{root}/r", *TINY, "--frames", "0"], "frames (--frames) must be >= 1"),
    (["search", "--data", "synthetic", "--out", "{root}/r", *TINY, "--scale", "big"], "--scale must be MIN,MAX"),
    (["search", "--data", "synthetic:16", "--out", "{root}/r", "--preset", "tiny", "--batch-size", "64"], "--batch-size 64 x 1 processes exceeds the 16 training videos"),
    (["search", "--data", "synthetic", "--out", "{root}/r", *TINY, "--epochs", "0"], "epochs (--epochs) must be >= 1"),
    (["train", "--genotype", "{good}", "--data", "synthetic", "--out", "{root}/r", "--preset", "tiny", "--channels", "0"], "channels (--channels) must be >= 1"),
    (["demo", "--out", "{root}"], "is not empty; choose another --out"),
    (["random", "--min-conv", "9"], "min_conv must be in 0..8"),
    (["search", "--data", "synthetic", "--out", "{root}/r", *TINY, "--resume"], "--resume: no checkpoint at"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_one_line_exit_2(args, message, files, capsys):
    argv = [a.format(**files) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and message in err[0], err[0]


def test_resume_with_different_config_cli(files, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["search", "--data", "synthetic:8", "--out", run, "--epochs", "1", *TINY, "--impl", "reference"]) == 0
    capsys.readouterr()
    assert main(["search", "--data", "synthetic:8", "--out", run, "--epochs", "2", "--preset", "tiny", "--channels", "8",
                 "--batch-size", "4", "--impl", "reference", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "written with search.channels = 4, this run has 8" in err[0]
    assert "resume with the same options or start a new --out" in err[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files):
    """A finished 1-epoch search and train run, and broken copies of the files the CLI reads."""
    root = tmp_path_factory.mktemp("runs")
    search = root / "search"
    assert main(["search", "--data", "synthetic:8", "--out", str(search), "--epochs", "1", *TINY, "--impl", "reference"]) == 0
    train = root / "train"
    assert main(["train", "--genotype", files["good"], "--data", "synthetic:8", "--out", str(train), *TINY,
                 "--epochs", "1"]) == 0
    broken = {
        "corrupt": b"PK\x03\x04 not really a zip",
        "empty": b"",
    }
    paths = {"search": str(search), "train": str(train), "model": str(train / "model.pt")}
    for name, content in broken.items():
        run = root / name
        (run / "alphas").mkdir(parents=True)
        (run / "alphas" / "epoch_001.pt").write_bytes(content)
        paths[name] = str(run)
    listed = root / "listed"
    (listed / "alphas").mkdir(parents=True)
    torch.save([torch.zeros(14, 6)], listed / "alphas" / "epoch_001.pt")
    stray = root / "stray"
    (stray / "alphas").mkdir(parents=True)
    torch.save({}, stray / "alphas" / "epoch_abc.pt")
    badyaml = root / "badyaml"
    shutil.copytree(search, badyaml)
    (badyaml / "config.yaml").write_text("search: [unclosed\n")
    badcap = root / "badcap"
    shutil.copytree(search, badcap)
    (badcap / "config.yaml").write_text("data: synthetic:8\nsearch:\n  max_param_free: lots\n")
    badmetrics = root / "badmetrics"
    shutil.copytree(search, badmetrics, ignore=shutil.ignore_patterns("alphas"))  # no alpha figures drawn first
    with open(badmetrics / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "loss": \n')
    csv = root / "latin1.csv"
    csv.write_bytes("clip.mp4,caf\xe9\n".encode("latin-1"))
    paths.update(listed=str(listed), stray=str(stray), badyaml=str(badyaml), badcap=str(badcap), badmetrics=str(badmetrics), csv=str(csv),
                 file=files["good"])
    return paths


RUN_CASES = [
    # negative or zero numbers, each refused by the config that defines it, before anything is written
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--workers", "-1"], "workers (--workers) must be >= 0"),
    (["train", "--genotype", "{file}", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--workers", "-1"],
     "workers (--workers) must be >= 0"),
    (["eval", "--checkpoint", "{model}", "--data", "synthetic:8", "--workers", "-1"], "workers (--workers) must be >= 0"),
    (["data", "synthetic", "--workers", "-1"], "--workers (probing threads) must be >= 1"),
    (["train", "--genotype", "{file}", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--lr", "-1"], "lr (--lr) must be > 0"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--seed", "-1"], "seed (--seed) must be a non-negative"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--alpha-lr", "0"], "a_lr (--alpha-lr) must be > 0"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--alpha-warmup", "1"], "a_warmup (--alpha-warmup) must be in [0, 1)"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--alpha-lr", "0.1", "--alpha-lr-budget", "5"],
     "give --alpha-lr or --alpha-lr-budget, not both"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--alpha-lr-budget", "-1"], "a_lr_budget (--alpha-lr-budget) must be > 0"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--op-dropout", "1"], "op_dropout (--op-dropout) must be in [0, 1)"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--max-param-free", "9"],
     "max_param_free (--max-param-free) must be in 0..8 (8: no cap) or None"),
    (["eval", "--checkpoint", "{model}", "--data", "synthetic:8", "--batch-size", "0"], "batch_size (--batch-size) must be >= 1"),
    (["eval", "--checkpoint", "{model}", "--data", "synthetic:8", "--views", "0x3"], "views (--views) must be CLIPSxCROPS"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--checkpoint-every", "-5"],
     "checkpoint_every (--checkpoint-every) must be > 0 minutes"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--edge-norm", "--impl", "reference"],
     "--edge-norm need the fast supernet"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--partial-channels", "3"],
     "partial_channels (--partial-channels) must be >= 1 and divide channels (4)"),
    (["search", "--data", "synthetic:8", "--out", "{tmp}/r", *TINY, "--resume", "--overwrite"], "--resume and --overwrite exclude"),
    # runs that exist: never overwritten, never resumed as the wrong kind
    (["search", "--data", "synthetic:8", "--out", "{search}", *TINY], "already holds a run (checkpoint.pt, config.yaml"),
    (["train", "--genotype", "{file}", "--data", "synthetic:8", "--out", "{train}", *TINY], "already holds a run"),
    (["search", "--data", "synthetic:8", "--out", "{train}", *TINY, "--resume"],
     "checkpoint.pt is a `pvnas train` run, not a `pvnas search` one"),
    # files that are not what they claim
    (["derive", "{corrupt}"], "epoch_001.pt: cannot read it as an alpha snapshot"),
    (["derive", "{empty}"], "epoch_001.pt: cannot read it as an alpha snapshot"),
    (["derive", "{listed}"], "epoch_001.pt: expected a dict of cell kind -> tensor, got list"),
    (["derive", "{stray}"], "no epoch_NNN.pt files yet"),
    (["derive", "{badyaml}"], "config.yaml: cannot read it as YAML"),
    (["derive", "{badcap}"], "config.yaml: search.remedies.max_param_free (--max-param-free) must be in 0..8 (8: no cap) or None, got 'lots'"),
    (["plot", "{corrupt}"], "epoch_001.pt: cannot read it as an alpha snapshot"),
    (["plot", "{badmetrics}"], "metrics.jsonl:2: not a JSON record"),
    (["search", "--data", "csv:{csv}", "--out", "{tmp}/r", *TINY], "latin1.csv: not UTF-8 text (byte 12"),
    (["eval", "--checkpoint", "{search}/checkpoint.pt", "--data", "synthetic:8"], "format must be 'pvnas-model/1'"),
    # outputs that cannot be written
    (["derive", "{search}", "-o", "{file}/g.json"], "g.json: cannot write the genotype"),
    (["random", "-o", "{file}/g.json"], "g.json: cannot write the genotype"),
    (["report", "{train}", "-o", "{file}/r.html"], "r.html: cannot write it"),  # (a train run's report draws little)
    (["export", "--checkpoint", "{model}", "--format", "torchscript", "-o", "{file}/m.ts"], "cannot create its folder"),
]


@pytest.mark.parametrize("args,message", RUN_CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(RUN_CASES)])
def test_bad_input_on_runs_and_files_one_line_exit_2(args, message, runs, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, **runs) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and message in err[0], err[0]
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_hostile_model_file_is_refused_without_running_its_code(tmp_path, capsys):
    """A pickle whose unpickling runs a shell command: loaded as data it is one error line, and nothing runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    model = tmp_path / "model.pt"
    torch.save({"format": "pvnas-model/1", "payload": Payload()}, model)
    for args in (["eval", "--checkpoint", str(model), "--data", "synthetic:8"],
                 ["predict", "--checkpoint", str(model), str(model)],
                 ["export", "--checkpoint", str(model), "--format", "torchscript", "-o", str(tmp_path / "m.ts")]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot read it as a model file" in err[0], err
    run = tmp_path / "run"
    (run / "alphas").mkdir(parents=True)
    torch.save({"S-NC": Payload()}, run / "alphas" / "epoch_001.pt")
    shutil.copy(model, run / "checkpoint.pt")
    for args in (["derive", str(run)], ["plot", str(run)],
                 ["search", "--data", "synthetic:8", "--out", str(run), *TINY, "--resume"]):
        assert main(args) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_run_stopped_in_epoch_1_is_kept_and_overwrite_replaces_it(tmp_path, capsys):
    """The checkpoint and config of a run that never finished an epoch protect it; --overwrite starts afresh."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("command: search\n")
    (run / "checkpoint.pt").write_bytes(b"stopped in epoch 1")
    assert main(["search", "--data", "synthetic:16", "--out", str(run), *TINY, "--epochs", "1"]) == 2
    assert "already holds a run (checkpoint.pt, config.yaml)" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == b"stopped in epoch 1"
    assert main(["search", "--data", "synthetic:16", "--out", str(run), *TINY, "--epochs", "1", "--overwrite"]) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=True)["progress"]["epoch"] == 1
