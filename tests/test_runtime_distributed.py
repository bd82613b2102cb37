"""torchrun on CPU (gloo): 2 processes search in lockstep, alphas identical on both ranks; a SIGTERM stops both."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import children, environment, sigterm_group_when

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).parent / "scripts"


TORCHRUN = [shutil.which("torchrun", path=os.path.dirname(sys.executable)), "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # and the same thread count in every run a test compares


def torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=900, env=ENV)


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


SEARCH = ["-m", "pvnas", "search", "--data", "synthetic:48", "--preset", "tiny", "--epochs", "1", "--channels", "4",
          "--batch-size", "4", "--workers", "1"]  # 6 steps per rank


@pytest.fixture(scope="module")
def ddp_search_cli(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    run = tmp_path_factory.mktemp("ddp") / "R"
    return torchrun(*SEARCH, "--out", str(run)), run


def test_ddp_search_cli(ddp_search_cli):
    proc, run = ddp_search_cli
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("genotype:") == 1  # only rank 0 prints
    assert (run / "genotype.json").exists() and (run / "alphas/epoch_001.pt").exists()


def ranks_loading(pid: int) -> bool:
    """Both ranks have started their loader worker: they are in their first epoch, before any checkpoint."""
    ranks = children(pid)
    return len(ranks) == 2 and all(children(rank) for rank in ranks)


def rank_1(pid: int) -> int:
    """The process group of torchrun ``pid``'s rank 1 (with its loader worker)."""
    return next(rank for rank in children(pid) if environment(rank).get("RANK") == "1")


@pytest.mark.parametrize("target", [lambda pid: pid, rank_1], ids=["torchrun", "rank 1 alone"])
def test_ddp_search_sigterm_stops_every_rank_at_one_step_then_resumes_exactly(ddp_search_cli, tmp_path, target):
    """torchrun forwards a SIGTERM (`timeout torchrun ...`, SLURM) to each rank's process group, loader workers
    included; a preempted node signals its own ranks only. Either way the ranks agree on the step to stop after,
    rank 0 checkpoints, and each exits with the resume hint."""
    run = tmp_path / "R"
    code, err = sigterm_group_when([*TORCHRUN, *SEARCH, "--out", str(run)], tmp_path / "stderr.txt", ranks_loading,
                                   ENV, target)
    stops = re.findall(r"preempted: stopped at search epoch 1/1, step (\d+); .* --resume", err)  # one per rank
    assert code != 0 and len(stops) == 2 and stops[0] == stops[1], err[-3000:]  # torchrun itself exits 1
    progress = torch.load(run / "checkpoint.pt", weights_only=True)["progress"]
    assert (progress["epoch"], progress["step"]) == (0, int(stops[0])) and not (run / "genotype.json").exists()
    proc = torchrun(*SEARCH, "--out", str(run), "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    straight = torch.load(ddp_search_cli[1] / "alphas/epoch_001.pt")
    resumed = torch.load(run / "alphas/epoch_001.pt")
    assert all(torch.equal(resumed[kind], straight[kind]) for kind in straight)


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
