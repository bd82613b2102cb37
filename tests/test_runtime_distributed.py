"""torchrun on CPU (gloo): 2 processes search in lockstep, alphas identical on both ranks; a SIGTERM stops both;
one command line (`--resume auto`) survives requeues and a lost rank."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from processes import checkpoint_progress, children, environment, sigterm_group_when

from pvnas.errors import ConfigError
from pvnas.runtime.distributed import collective_timeout

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).parent / "scripts"


TORCHRUN = [shutil.which("torchrun", path=os.path.dirname(sys.executable)), "--standalone", "--nproc_per_node", "2"]


def env(dump: Path, **extra: str) -> dict[str, str]:
    """The same thread count in every run a test compares; scripts/ddp_search.py's ranks dump into ``dump``."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "DDP_DUMP": str(dump), **extra}


def torchrun(*args: str, dump: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=900, env=env(dump))


# one command line for every start of a job (SLURM --requeue, torchrun --max-restarts): `--resume auto`, and a
# checkpoint after every step so that a stop anywhere resumes mid-epoch. Through scripts/ddp_search.py: `converge`
# decays at its first three looks, and each rank dumps its alphas and decisions into $DDP_DUMP.
AUTO = [str(SCRIPTS / "ddp_search.py"), "search", "--data", "synthetic:48", "--preset", "tiny", "--epochs", "2",
        "--channels", "4", "--batch-size", "4", "--crop", "16", "--scale", "16,20", "--workers", "1", "--resume",
        "auto", "--checkpoint-every", "0.0001"]  # 6 steps per rank


@pytest.fixture(scope="module")
def ddp_search_cli(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The uninterrupted run the restarted ones must reproduce."""
    run = tmp_path_factory.mktemp("ddp") / "R"
    return torchrun(*AUTO, "--out", str(run), dump=run.parent), run


def test_ddp_search_cli_keeps_alphas_and_convergence_decisions_identical_on_every_rank(ddp_search_cli):
    proc, run = ddp_search_cli
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("genotype:") == 1  # only rank 0 prints
    assert (run / "genotype.json").exists()
    r0, r1 = torch.load(run.parent / "rank0.pt"), torch.load(run.parent / "rank1.pt")
    saved = torch.load(run / "alphas/epoch_002.pt")
    for kind in saved:
        assert torch.equal(r0["alphas"][kind], r1["alphas"][kind]) and torch.equal(saved[kind], r0["alphas"][kind])
    # `converge` decides on every rank alike: 6 steps per epoch and rank, a look every 3, decays after 3, 6 and 9
    assert r0["decisions"] == r1["decisions"] == [(1, False), (3, True), (6, True), (9, True), (12, False)]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["decays"] == 3 and records[-1]["lr"] == pytest.approx(0.2 * 1e-3)  # 0.1 x 2 ranks, 3 decays


def rank_1(pid: int) -> int:
    """The process group of torchrun ``pid``'s rank 1 (with its loader worker)."""
    return next(rank for rank in children(pid) if environment(rank).get("RANK") == "1")


def checkpointed(run: Path, epoch: int) -> Callable[[int], bool]:
    """Ready once ``run``'s checkpoint is a step or more into epoch ``epoch`` (0-based)."""
    def ready(pid: int) -> bool:
        progress = checkpoint_progress(run)
        return progress is not None and progress["epoch"] == epoch and progress["step"] >= 1
    return ready


def epochs_of(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_final_alphas(run: Path, straight: Path) -> None:
    done, ref = torch.load(run / "alphas/epoch_002.pt"), torch.load(straight / "alphas/epoch_002.pt")
    assert done.keys() == ref.keys() and all(torch.equal(done[k], ref[k]) for k in ref)


class KilledThenReady:
    """For `sigterm_group_when` under `torchrun --max-restarts 1`, resuming a run stopped at ``resumed`` (epoch 1):
    at its first checkpoint past that, SIGKILL rank 1 (as the OOM killer would); ready once the group torchrun started
    again has a rank 1 and the run's checkpoint is a step into epoch 2, a whole epoch later, so the stop that follows
    always falls inside epoch 2."""

    def __init__(self, run: Path, resumed: tuple[int, int]) -> None:
        self.run, self.resumed, self.killed = run, resumed, None

    def __call__(self, pid: int) -> bool:
        progress = checkpoint_progress(self.run)
        if progress is None or (progress["epoch"], progress["step"]) <= self.resumed:
            return False
        if self.killed is None:
            self.killed = rank_1(pid)
            os.kill(self.killed, signal.SIGKILL)
            return False
        restarted = any(environment(p).get("RANK") == "1" and p != self.killed for p in children(pid))
        return restarted and progress["epoch"] == 1 and progress["step"] >= 1


def test_the_same_command_three_times_stopped_killed_and_stopped_ends_as_an_uninterrupted_run(ddp_search_cli, tmp_path):
    """A requeued job reruns its one command line. (1) Stopped mid-epoch 1 by a SIGTERM to torchrun's process group
    (`timeout torchrun ...`, SLURM: it forwards the signal to each rank's group, loader workers included). (2) Under
    `torchrun --max-restarts 1`, rank 1 SIGKILLed a step after resuming: rank 0 leaves at once with one line (its
    peer's sockets close), torchrun starts the group again, which resumes from the last checkpoint; then in epoch 2
    that group's rank 1 alone gets a SIGTERM (a preempted node signals its own ranks). Each SIGTERM: the ranks agree
    on the step to stop after and rank 0 checkpoints it. (3) The third start finishes with bit-identical alphas,
    each epoch once in metrics.jsonl and all three restarts in config.yaml."""
    run = tmp_path / "R"
    code, err = sigterm_group_when([*TORCHRUN, *AUTO, "--out", str(run)], tmp_path / "stderr0.txt",
                                   checkpointed(run, 0), env(tmp_path))
    first = assert_stopped_mid_epoch(run, 0, code, err)
    killed = KilledThenReady(run, (0, first))
    code, err = sigterm_group_when([TORCHRUN[0], "--max-restarts", "1", *TORCHRUN[1:], *AUTO, "--out", str(run)],
                                   tmp_path / "stderr1.txt", killed, env(tmp_path), rank_1)
    second = assert_stopped_mid_epoch(run, 1, code, err)
    assert err.count("lost a process of the group") == 1  # rank 0's one line after the SIGKILL, not a hang
    proc = torchrun(*AUTO, "--out", str(run), dump=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_final_alphas(run, ddp_search_cli[1])
    assert epochs_of(run) == [1, 2]
    restarts = [(r["from"], r["epoch"], r["step"]) for r in yaml.safe_load((run / "config.yaml").read_text())["restarts"]]
    assert len(restarts) == 3 and restarts[0] == ("checkpoint", 0, first) and restarts[2] == ("checkpoint", 1, second)
    assert restarts[1][0] == "checkpoint" and (0, first) < restarts[1][1:] < (1, second)  # torchrun's restart


def assert_stopped_mid_epoch(run: Path, epoch: int, code: int, err: str) -> int:
    """Both ranks said they stopped after the same step of ``epoch`` (0-based), inside it, and rank 0 checkpointed
    it; the step."""
    stops = re.findall(rf"preempted: stopped at search epoch {epoch + 1}/2, step (\d+); .* --resume", err)
    assert code != 0 and len(stops) == 2 and stops[0] == stops[1], err[-3000:]  # torchrun itself exits 1
    progress = torch.load(run / "checkpoint.pt", weights_only=True)["progress"]
    assert (progress["epoch"], progress["step"]) == (epoch, int(stops[0])) and 1 <= progress["step"] < 6
    assert not (run / "genotype.json").exists()
    return progress["step"]


def test_a_rank_that_stops_answering_ends_the_others_after_the_collective_timeout(tmp_path):
    """Rank 1 frozen (SIGSTOP: a hung node, which torchrun cannot see): rank 0 does not wait forever but leaves
    with one line once PVNAS_COLLECTIVE_TIMEOUT (here 5 s) has passed in a collective."""
    run, log = tmp_path / "R", tmp_path / "stderr.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen([*TORCHRUN, *AUTO, "--out", str(run)], stdout=subprocess.DEVNULL, stderr=f,
                                env=env(tmp_path, PVNAS_COLLECTIVE_TIMEOUT="5"), start_new_session=True)
    try:
        ready = checkpointed(run, 0)
        while proc.poll() is None and not ready(proc.pid):
            time.sleep(0.02)
        ranks = {environment(pid).get("RANK"): pid for pid in children(proc.pid)}
        os.kill(ranks["1"], signal.SIGSTOP)
        deadline = time.monotonic() + 120  # the default timeout (600 s) would still be waiting
        while "lost a process of the group" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert re.search(r"error: lost a process of the group \(.*[Tt]imed? ?out", log.read_text()), log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
            os.kill(ranks["1"], signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_bad_collective_timeout_is_one_error_naming_the_variable(value, monkeypatch):
    monkeypatch.setenv("PVNAS_COLLECTIVE_TIMEOUT", value)
    with pytest.raises(ConfigError, match=f"PVNAS_COLLECTIVE_TIMEOUT must be a number of seconds > 0, got '{value}'"):
        collective_timeout()
    monkeypatch.setenv("PVNAS_COLLECTIVE_TIMEOUT", "2.5")
    assert collective_timeout() == 2.5
