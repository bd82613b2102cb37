"""`pvnas search/derive/random` as a user runs them, and the one-line errors for bad input.

The commands run in this process through `main` (what the `pvnas` script calls); one error and `--debug` run
as the user's own process, where nothing else (a warning at import, a log line) may reach stderr.
"""

import json
import subprocess
import sys

import pytest

from pvnas.cli import main
from pvnas.space.genotype import Genotype
from pvnas.space.ops import CONV_OPS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvnas", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture()
def search_run(tiny_search_run):
    return tiny_search_run  # `pvnas search` run once per test worker (conftest); derive only reads it


def test_search_cli_writes_run(search_run):
    for name in ("genotype.json", "checkpoint.pt", "metrics.jsonl", "config.yaml", "alphas/epoch_002.pt"):
        assert (search_run / name).exists(), name


def test_derive_any_epoch(search_run, tmp_path):
    out = tmp_path / "g1.json"
    assert main(["derive", str(search_run), "--epoch", "1", "-o", str(out)]) == 0
    g = Genotype.load(out)
    assert g.meta["epoch"] == 1
    assert main(["derive", str(search_run), "--epoch", "7"]) == 2


def test_derive_max_param_free(search_run, tmp_path, capsys):
    out = tmp_path / "g0.json"
    assert main(["derive", str(search_run), "--max-param-free", "0", "-o", str(out)]) == 0
    g = Genotype.load(out)
    assert g.meta["max_param_free"] == 0 and all(n == 0 for n in g.parameter_free_edges().values())
    assert main(["derive", str(search_run), "--max-param-free", "9"]) == 2
    assert main(["derive", str(search_run), "--max-param-free", "2", "--select", "perturbation"]) == 2
    assert "goes with --select alpha" in capsys.readouterr().err


def test_derive_to_stdout_is_pure_json(search_run, capsys):
    assert main(["derive", str(search_run)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["meta"]["epoch"] == 2
    Genotype.from_dict(data)


def test_random_cli(tmp_path):
    out = tmp_path / "r.json"
    assert main(["random", "--seed", "3", "--min-conv", "4", "-o", str(out)]) == 0
    g = Genotype.load(out)
    assert all(c.count(CONV_OPS) >= 4 for c in g.cells.values())
    assert main(["random", "--seed", "3", "--min-conv", "4", "-o", str(tmp_path / "r2.json")]) == 0
    assert (tmp_path / "r2.json").read_text() == out.read_text()


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "--data", "synthetic", "--preset", "huge", "--out", "X"], "unknown preset 'huge'"),
        (["search", "--data", "nowhere:/x", "--preset", "tiny", "--out", "X"], "unknown dataset spec 'nowhere:/x'"),
        (["search", "--data", "synthetic", "--preset", "tiny", "--epochs", "0", "--out", "X"], "epochs (--epochs) must be >= 1"),
        (["derive", "/no/such/run"], "not a search run directory"),
        (["random", "--min-conv", "12"], "min_conv must be in 0..8"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "Traceback" not in captured.err and not list(tmp_path.iterdir())  # nothing written


def test_a_users_process_prints_one_line_and_debug_the_traceback(tmp_path):
    proc = run_cli("search", "--data", "nowhere:/x", "--preset", "tiny", "--out", str(tmp_path / "X"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset spec 'nowhere:/x'"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stderr
    proc = run_cli("--debug", "random", "--min-conv", "12")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


@pytest.mark.parametrize("args,message", [(["search", "--bogus"], "No such option"),
                                          (["random", "--seed", "abc"], "Invalid value")])
def test_usage_errors_exit_2_with_clicks_message(args, message, capsys):
    """Unknown options and unparsable values: click's message on stderr, exit 2, whichever typer is installed."""
    assert main(args) == 2
    assert message in capsys.readouterr().err
