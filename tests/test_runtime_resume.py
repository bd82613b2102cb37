"""Never lose work: exact resume (epoch boundary, SIGTERM mid-epoch to the process or its whole group, SIGKILL
during a checkpoint write), atomic files, guards."""

import json
import shutil
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pvnas.cli import main
from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, RunOptions, override, override_clip
from pvnas.runtime.run import NonFiniteGuard, NonFiniteLossError, Preempted
from pvnas.runtime.rundir import remove_stale_temps
from pvnas.retrain.train import run_train
from pvnas.errors import ConfigError
from pvnas.search.loop import run_search
from pvnas.space.genotype import Genotype
from processes import checkpoint_progress, children, sigterm_group_when

# 16-pixel crops: what resumes is the same at any size, and every run here costs half the CPU of the preset's 32
CLIP = override_clip(SEARCH_PRESETS["tiny"].clip, None, 16, "16,20")
CFG = override(SEARCH_PRESETS["tiny"], channels=4, batch_size=4, epochs=2, seed=5, impl="reference", clip=CLIP)
DATA = "synthetic:24"
SEARCH = [sys.executable, "-m", "pvnas", "search", "--data", DATA, "--preset", "tiny", "--epochs", "2",
          "--channels", "4", "--batch-size", "4", "--seed", "5", "--impl", "reference", "--crop", "16",
          "--scale", "16,20"]  # CFG on the command line
SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    run_search(CFG, DATA, run)
    return run


def alphas(run, epoch):
    return torch.load(run / "alphas" / f"epoch_{epoch:03d}.pt")


def assert_same_alphas(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_from_epoch_boundary_is_bit_exact(straight, tmp_path, monkeypatch):
    """A process killed after the epoch-1 checkpoint (here: while finishing epoch 2) resumes to the same run."""
    import pvnas.search.loop as loop

    run, calls = tmp_path / "run", []
    real = loop.collapse_stats

    def crash_in_epoch_2(alphas):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(alphas)

    monkeypatch.setattr(loop, "collapse_stats", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_search(CFG, DATA, run)
    monkeypatch.setattr(loop, "collapse_stats", real)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["progress"]["epoch"] == 1
    run_search(CFG, DATA, run, RunOptions(resume=True))
    assert_same_alphas(alphas(run, 1), alphas(straight, 1))
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))
    weights = torch.load(run / "checkpoint.pt", weights_only=True)["state"]["model"]
    ref = torch.load(straight / "checkpoint.pt", weights_only=True)["state"]["model"]
    assert all(torch.equal(weights[k], ref[k]) for k in ref)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_resume_may_extend_the_epochs(tmp_path):
    """--epochs may grow on resume (the schedule, a function of progress, then follows the longer run)."""
    run = tmp_path / "run"
    run_search(override(CFG, epochs=1), DATA, run)
    run_search(CFG, DATA, run, RunOptions(resume=True))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert not torch.equal(alphas(run, 1)["T-NC"], alphas(run, 2)["T-NC"])


def in_epoch_2(run: Path) -> bool:
    """The run's (per-step) checkpoint is a step or more into epoch 2 (of 6 steps)."""
    progress = checkpoint_progress(run)
    return progress is not None and progress["epoch"] == 1 and progress["step"] >= 1


def test_sigterm_mid_epoch_then_resume_is_bit_exact(straight, tmp_path):
    run = tmp_path / "run"
    cmd = SEARCH + ["--out", str(run), "--checkpoint-every", "0.0001"]  # a checkpoint after every step
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not in_epoch_2(run) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    progress = torch.load(run / "checkpoint.pt", weights_only=True)["progress"]
    assert progress["epoch"] == 1 and 0 < progress["step"] < 6, progress  # stopped inside epoch 2
    assert main(cmd[3:] + ["--resume"]) == 0  # (in this process: what resumes is the same, the start costs ~3 s)
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))


def workers_started(pid: int) -> bool:
    """SIGTERM then: in the first epoch, before any checkpoint, the main process waiting for its first batch."""
    return len(children(pid)) >= 2


def assert_preempted(code: int, err: str) -> None:
    assert code == 128 + signal.SIGTERM, err
    assert "Resume with the same command plus --resume" in err, err
    assert "Traceback" not in err and "killed by signal" not in err, err


def test_sigterm_to_the_process_group_with_loader_workers_then_resume_is_bit_exact(straight, tmp_path):
    """As SLURM, Kubernetes and `timeout` stop a job: SIGTERM to the main process and its 2 loader workers."""
    run = tmp_path / "run"
    cmd = SEARCH + ["--workers", "2", "--out", str(run)]
    assert_preempted(*sigterm_group_when(cmd, tmp_path / "stderr.txt", workers_started))
    assert (run / "checkpoint.pt").is_file() and not (run / "genotype.json").exists()
    assert main(cmd[3:] + ["--resume"]) == 0
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))


TRAIN = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, seed=3, clip=CLIP)  # 2 epochs, validation each


def test_sigterm_to_the_process_group_of_a_retrain_then_resume_is_bit_exact(tmp_path):
    """The same for `pvnas train`, whose validation loader has workers too."""
    genotype, straight, run = tmp_path / "g.json", tmp_path / "straight", tmp_path / "run"
    Genotype.random(2, min_conv=4).save(genotype)
    run_train(Genotype.load(genotype), TRAIN, "synthetic:32", straight)
    cmd = [sys.executable, "-m", "pvnas", "train", "--genotype", str(genotype), "--data", "synthetic:32", "--preset",
           "tiny", "--channels", "4", "--batch-size", "4", "--seed", "3", "--crop", "16", "--scale", "16,20", "--workers", "2",
           "--out", str(run)]
    assert_preempted(*sigterm_group_when(cmd, tmp_path / "stderr.txt", workers_started))
    assert main(cmd[3:] + ["--resume"]) == 0
    weights = [torch.load(r / "checkpoint.pt", weights_only=True)["state"]["model"] for r in (run, straight)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])


def test_sigterm_during_end_of_epoch_stops_before_the_next_epoch(straight, tmp_path, monkeypatch):
    """A stop that comes while an epoch ends (its alphas, its validation) stops at that epoch's checkpoint."""
    import pvnas.search.loop as loop

    real, run = loop.collapse_stats, tmp_path / "run"

    def signalled(alphas):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(alphas)

    monkeypatch.setattr(loop, "collapse_stats", signalled)
    with pytest.raises(Preempted, match="stopped after search epoch 1/2; .* --resume"):
        run_search(CFG, DATA, run)
    monkeypatch.setattr(loop, "collapse_stats", real)
    progress = torch.load(run / "checkpoint.pt", weights_only=True)["progress"]
    assert (progress["epoch"], progress["step"]) == (1, 0)
    run_search(CFG, DATA, run, RunOptions(resume=True))
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint(straight, tmp_path):
    """Killed (OOM, node failure) halfway through writing the epoch-2 checkpoint: the epoch-1 one resumes, and
    the half-written temp file is removed, not read."""
    run = tmp_path / "run"
    cmd = SEARCH[3:] + ["--out", str(run)]  # the arguments of `pvnas`
    killed = subprocess.run([sys.executable, str(SCRIPTS / "kill_mid_checkpoint.py"), *cmd], capture_output=True,
                            text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [torn] = run.glob(".checkpoint.pt.tmp*")  # the half-written second checkpoint
    assert torn.stat().st_size < (run / "checkpoint.pt").stat().st_size
    assert torch.load(run / "checkpoint.pt", weights_only=True)["progress"]["epoch"] == 1  # the first one
    assert main(cmd + ["--resume"]) == 0
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))
    assert not torn.exists() and not list(run.rglob(".*.tmp*"))
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_stale_temps_are_those_of_gone_processes_and_our_own(tmp_path):
    """A temp file of a live process is another write in progress: kept."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pids = {"gone": int(gone.stdout), "own": os.getpid(), "live": os.getppid()}
    temps = {who: tmp_path / "alphas" / f".epoch_001.pt.tmp{pid}" for who, pid in pids.items()}
    temps["live"].parent.mkdir()
    for path in temps.values():
        path.write_bytes(b"torn")
    assert remove_stale_temps(tmp_path) == sorted([temps["gone"], temps["own"]])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [temps["live"]]


# alphas barely move (lr 1e-6), any relative change passes: with 12 steps and a look every 3, `converge`
# decays after steps 3, 6 and 9
CONVERGE = override(CFG, schedule="converge", converge_window=0.25, converge_tol=100.0, a_lr=1e-6)


def test_converge_resumes_bit_exact_across_a_decay(tmp_path, monkeypatch):
    """Killed in epoch 2 after 2 decays (last timed checkpoint after step 7), resumed: the 3rd decay and every
    number after it are those of the uninterrupted run."""
    import pvnas.search.loop as loop

    straight, run, calls = tmp_path / "straight", tmp_path / "run", []
    run_search(CONVERGE, DATA, straight)
    real = loop.search_step

    def crash_at_step_8(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "search_step", crash_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        run_search(CONVERGE, DATA, run, RunOptions(checkpoint_every=1e-9))
    monkeypatch.setattr(loop, "search_step", real)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (ckpt["progress"]["epoch"], ckpt["progress"]["step"], ckpt["state"]["converge"]["decays"]) == (1, 1, 2)
    run_search(CONVERGE, DATA, run, RunOptions(resume=True))
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))
    ends = [torch.load(r / "checkpoint.pt", weights_only=True)["state"] for r in (run, straight)]
    assert ends[0]["converge"]["decays"] == ends[1]["converge"]["decays"] == 3
    assert all(torch.equal(ends[0]["model"][k], ends[1]["model"][k]) for k in ends[1]["model"])
    records = [[json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (run, straight)]
    # a record's lr is that of its epoch's last step; the decay after step 6 counts in epoch 1, acts in epoch 2
    assert [(r["decays"], r["lr"]) for r in records[0]] == [(r["decays"], r["lr"]) for r in records[1]]
    assert [(r["decays"], r["lr"]) for r in records[0]] == [(2, pytest.approx(0.01)), (3, pytest.approx(1e-4))]


def test_resume_with_other_config_is_refused(straight, tmp_path):
    with pytest.raises(ConfigError, match="written with search.channels = 4, this run has 8"):
        run_search(override(CFG, channels=8), DATA, straight, RunOptions(resume=True))
    with pytest.raises(ConfigError, match="no checkpoint at"):
        run_search(CFG, DATA, tmp_path / "empty", RunOptions(resume=True))
    with pytest.raises(ConfigError, match="already holds a run .*use --resume to continue it, --overwrite to replace it"):
        run_search(CFG, DATA, straight)


def test_a_checkpoint_of_an_earlier_release_resumes_without_the_settings_added_since(straight, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(straight, old)
    ckpt = torch.load(old / "checkpoint.pt", weights_only=True)
    search = ckpt["config"]["search"]
    remedies = search.pop("remedies")  # its remedies were flat keys of `search` then; beta_decay, the budget
    search.update({k: remedies[k] for k in ("op_dropout", "skip_noise", "max_param_free")})  # targets came later
    del ckpt["config"]["compile"]  # not yet a setting when it was written
    torch.save(ckpt, old / "checkpoint.pt")
    run_search(CFG, DATA, old, RunOptions(resume=True))  # (its epochs are done: it resumes and finishes at once)
    with pytest.raises(ConfigError, match="search.channels"):
        run_search(override(CFG, channels=8), DATA, old, RunOptions(resume=True))


def test_non_finite_guard_skips_then_stops():
    guard = NonFiniteGuard(limit=3)
    assert guard.check(1.0, "s1")
    assert not guard.check(math.nan, "s2")
    assert not guard.check(math.inf, "s3")
    assert guard.check(0.5, "s4")  # a finite loss resets the count
    assert not guard.check(math.nan, "s5") and not guard.check(math.nan, "s6")
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row at s7"):
        guard.check(math.nan, "s7")


def test_non_finite_losses_stop_the_search_and_keep_last_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_search(override(CFG, epochs=1), DATA, run)
    before = (run / "checkpoint.pt").read_bytes()
    import pvnas.search.loop as loop

    real = loop.F.cross_entropy
    monkeypatch.setattr(loop.F, "cross_entropy", lambda *a, **k: real(*a, **k) * math.nan)
    with pytest.raises(NonFiniteLossError, match="5 non-finite losses in a row"):
        run_search(CFG, DATA, run, RunOptions(resume=True))
    assert (run / "checkpoint.pt").read_bytes() == before


def files_of(run: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_auto_refuses_another_run_and_leaves_a_finished_one_alone(straight, tmp_path, capsys):
    """A requeued command: into a finished run of its own config it says so, exits 0 and writes nothing; into
    another config's or command's run it stops with one line and exit 2, before writing anything."""
    args = SEARCH[3:] + ["--resume", "auto", "--out"]
    before = files_of(straight)
    capsys.readouterr()
    assert main(args + [str(straight)]) == 0
    err = capsys.readouterr().err
    assert "finished" in err and "nothing to do" in err and files_of(straight) == before, err
    assert main(args[:-3] + ["--channels", "8", "--resume", "auto", "--out", str(straight)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "search.channels = 4, this run has 8" in err, err
    other = tmp_path / "train_run"
    shutil.copytree(straight, other)
    ckpt = torch.load(other / "checkpoint.pt", weights_only=True)
    ckpt["command"] = ckpt["config"]["command"] = "train"  # a `pvnas train` run in that directory
    torch.save(ckpt, other / "checkpoint.pt")
    before = files_of(other)
    assert main(args + [str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is a `pvnas train` run, not a `pvnas search` one" in err, err
    assert files_of(other) == before


def crash_at_search_step(monkeypatch, n: int) -> None:
    """Make the n-th search step raise KeyboardInterrupt (a kill before any checkpoint was written)."""
    import pvnas.search.loop as loop

    real, calls = loop.search_step, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "search_step", crashing)


@pytest.mark.parametrize("resume", ["auto", True], ids=["--resume auto", "--resume"])
def test_a_run_stopped_before_its_first_checkpoint_restarts_afresh(straight, tmp_path, monkeypatch, caplog, resume):
    """The trap: killed in its first epoch, a run leaves config.yaml but no checkpoint. Without --resume it is
    protected; --resume auto and --resume both start it afresh (and record that), to the uninterrupted result."""
    run = tmp_path / "run"
    crash_at_search_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_search(CFG, DATA, run)
    monkeypatch.undo()
    assert (run / "config.yaml").is_file() and not (run / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="already holds a run"):
        run_search(CFG, DATA, run)
    with pytest.raises(ConfigError, match="search.channels"):  # another config's run is not restarted
        run_search(override(CFG, channels=8), DATA, run, RunOptions(resume=resume))
    run_search(CFG, DATA, run, RunOptions(resume=resume))
    assert "holds no checkpoint (the run stopped before its first one): starting it afresh" in caplog.text
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    [restart] = yaml.safe_load((run / "config.yaml").read_text())["restarts"]
    assert (restart["from"], restart["epoch"], restart["step"]) == ("scratch", 0, 0)


def test_a_finished_run_whose_checkpoint_was_removed_is_not_restarted(straight, tmp_path):
    """Its genotype.json (a search's last output) says it finished: --resume auto refuses rather than redo it."""
    done = tmp_path / "done"
    shutil.copytree(straight, done)
    (done / "checkpoint.pt").unlink()
    before = files_of(done)
    with pytest.raises(ConfigError, match="holds genotype.json but no checkpoint.pt"):
        run_search(CFG, DATA, done, RunOptions(resume="auto"))
    assert files_of(done) == before
