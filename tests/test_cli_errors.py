"""Every bad input of the CLI ends in one line naming the problem and the fix, exit code 2, no traceback."""

import json

import pytest

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
    (["search", "--data", "synthetic", "--out", "{root}/r", *TINY, "--epochs", "0"], "--epochs must be >= 1"),
    (["train", "--genotype", "{good}", "--data", "synthetic", "--out", "{root}/r", "--preset", "tiny", "--channels", "0"], "--channels must be >= 1"),
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
