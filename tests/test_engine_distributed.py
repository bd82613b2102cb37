"""torchrun on CPU (gloo): 2 processes search in lockstep, alphas identical on both ranks."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).parent / "scripts"


def torchrun(*args: str) -> subprocess.CompletedProcess:
    torchrun_bin = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun_bin, "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_ddp_search_keeps_alphas_and_convergence_decisions_identical_on_every_rank(tmp_path):
    run, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    proc = torchrun(str(SCRIPTS / "ddp_search.py"), str(run), str(dump))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(dump / "rank0.pt"), torch.load(dump / "rank1.pt")
    for kind in r0["alphas"]:
        assert torch.equal(r0["alphas"][kind], r1["alphas"][kind]), kind
    saved = torch.load(run / "alphas/epoch_002.pt")
    for kind in saved:
        assert torch.equal(saved[kind], r0["alphas"][kind])
    # `converge` decides on every rank alike: 2 steps per epoch and rank, a look every step, 3 decays
    assert r0["decisions"] == r1["decisions"] and sum(d for _, d in r0["decisions"]) == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 0.1 x 2 ranks; the last step ran after 2 decays (the 3rd is decided after it)
    assert records[-1]["decays"] == 3 and records[-1]["lr"] == pytest.approx(0.2 * 0.01)
    assert (run / "genotype.json").exists()


def test_ddp_search_cli(tmp_path):
    run = tmp_path / "R"
    proc = torchrun("-m", "pvnas", "search", "--data", "synthetic:16", "--preset", "tiny", "--epochs", "1",
                    "--channels", "4", "--batch-size", "4", "--out", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("genotype:") == 1  # only rank 0 prints
    assert (run / "genotype.json").exists() and (run / "alphas/epoch_001.pt").exists()


def test_ddp_train_keeps_weights_identical_on_every_rank(tmp_path):
    run, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    proc = torchrun(str(SCRIPTS / "ddp_train.py"), str(run), str(dump))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(dump / "rank0.pt"), torch.load(dump / "rank1.pt")
    assert r0.keys() == r1.keys() and len(r0) > 10
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    saved = torch.load(run / "model.pt", weights_only=False)["state_dict"]
    for name in r0:
        assert torch.equal(saved[name], r0[name]), name


def test_ddp_train_cli(tmp_path):
    genotype = tmp_path / "g.json"
    from pvnas.space.genotype import Genotype

    Genotype.random(2, min_conv=4).save(genotype)
    proc = torchrun("-m", "pvnas", "train", "--genotype", str(genotype), "--data", "synthetic:16", "--preset", "tiny",
                    "--epochs", "1", "--channels", "4", "--batch-size", "4", "--out", str(tmp_path / "R"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "R" / "model.pt").exists()
