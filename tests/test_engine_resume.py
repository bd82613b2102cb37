"""Never lose work: exact resume (epoch boundary and SIGTERM mid-epoch), atomic files, guards."""

import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from pvnas.config import SEARCH_PRESETS, override
from pvnas.engine.runtime import NonFiniteGuard, NonFiniteLossError
from pvnas.errors import ConfigError
from pvnas.search.loop import run_search

CFG = override(SEARCH_PRESETS["tiny"], channels=4, batch_size=4, epochs=2, seed=5)
DATA = "synthetic:24"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    run_search(CFG, DATA, run, impl="reference")
    return run


def alphas(run, epoch):
    return torch.load(run / "alphas" / f"epoch_{epoch:03d}.pt")


def assert_same_alphas(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_from_epoch_boundary_is_bit_exact(straight, tmp_path):
    run = tmp_path / "run"
    run_search(override(CFG, epochs=1), DATA, run, impl="reference")
    assert not (run / "alphas/epoch_002.pt").exists()
    run_search(CFG, DATA, run, impl="reference", resume=True)
    assert_same_alphas(alphas(run, 1), alphas(straight, 1))
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))
    weights = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    ref = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(weights[k], ref[k]) for k in ref)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_sigterm_mid_epoch_then_resume_is_bit_exact(straight, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pvnas", "search", "--data", DATA, "--preset", "tiny", "--epochs", "2",
           "--channels", "4", "--batch-size", "4", "--seed", "5", "--impl", "reference", "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not (run / "alphas/epoch_001.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # inside epoch 2 (6 steps)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    progress = torch.load(run / "checkpoint.pt", weights_only=False)["progress"]
    assert progress["epoch"] == 1 and 0 < progress["step"] < 6, progress  # stopped inside epoch 2
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert_same_alphas(alphas(run, 2), alphas(straight, 2))


def test_resume_with_other_config_is_refused(straight, tmp_path):
    with pytest.raises(ConfigError, match="written with search.channels = 4, this run has 8"):
        run_search(override(CFG, channels=8), DATA, straight, impl="reference", resume=True)
    with pytest.raises(ConfigError, match="no checkpoint at"):
        run_search(CFG, DATA, tmp_path / "empty", impl="reference", resume=True)
    with pytest.raises(ConfigError, match="already holds a run; use --resume"):
        run_search(CFG, DATA, straight, impl="reference")


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
    run_search(override(CFG, epochs=1), DATA, run, impl="reference")
    before = (run / "checkpoint.pt").read_bytes()
    import pvnas.search.loop as loop

    real = loop.F.cross_entropy
    monkeypatch.setattr(loop.F, "cross_entropy", lambda *a, **k: real(*a, **k) * math.nan)
    with pytest.raises(NonFiniteLossError, match="5 non-finite losses in a row"):
        run_search(CFG, DATA, run, impl="reference", resume=True)
    assert (run / "checkpoint.pt").read_bytes() == before
