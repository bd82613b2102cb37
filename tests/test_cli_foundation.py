"""`pvnas search/derive/random` as a user runs them, and the one-line errors for bad input.

The commands run in this process through `main` (what the `pvnas` script calls), except the search (its stderr
a file, as in a batch job) and one error, which run as the user's own process, where nothing else (a warning at
import, a log line) may reach stderr.
"""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from pvnas.cli import main
from pvnas.space.genotype import Genotype
from pvnas.space.ops import CONV_OPS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pvnas", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """`pvnas search ... 2> RUN/../stderr.log`: stderr is a file, not a terminal, as in a SLURM job."""
    run = tmp_path_factory.mktemp("cli") / "RUN"
    with open(run.parent / "stderr.log", "w") as log:
        proc = subprocess.run([sys.executable, "-m", "pvnas", "search", "--data", "synthetic:16", "--preset", "tiny",
                               "--epochs", "2", "--out", str(run), "--channels", "4", "--batch-size", "4"],
                              stdout=subprocess.DEVNULL, stderr=log, timeout=900)
    assert proc.returncode == 0, (run.parent / "stderr.log").read_text()
    return run


def test_progress_into_a_file_is_whole_lines(search_run):
    """No carriage-return redraws in a log file: a line every few steps (here each of the 4 steps per epoch)."""
    log = (search_run.parent / "stderr.log").read_bytes()
    assert b"\r" not in log
    lines = log.decode().splitlines()
    assert [line.split(": ", 1)[1].split(" loss")[0] for line in lines if "pvnas.progress" in line] == [
        f"search epoch {e}/2: step {s}/4" for e in (1, 2) for s in range(1, 5)]


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


def test_a_users_process_prints_one_line(tmp_path):
    proc = run_cli("search", "--data", "nowhere:/x", "--preset", "tiny", "--out", str(tmp_path / "X"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown dataset spec 'nowhere:/x'"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == "", proc.stderr


@pytest.mark.parametrize("args", [["--debug", "random", "--min-conv", "12"], ["random", "--min-conv", "12", "--debug"]],
                         ids=["before the command", "after it"])
def test_debug_shows_traceback_anywhere_and_keeps_exit_2(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ") and "min_conv" in err


def test_version(capsys):
    from pvnas.version import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pvnas {__version__}\n"


@pytest.mark.parametrize("args,message", [(["search", "--bogus"], "No such option"),
                                          (["random", "--seed", "abc"], "Invalid value")])
def test_usage_errors_exit_2_with_clicks_message(args, message, capsys):
    """Unknown options and unparsable values: click's message on stderr, exit 2, whichever typer is installed."""
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_search_from_a_runs_config_reproduces_it(search_run, tmp_path):
    """`pvnas search --config RUN/config.yaml --out RUN2`: the same config, alphas and genotype for the same seed."""
    run2 = tmp_path / "RUN2"
    assert main(["search", "--config", str(search_run / "config.yaml"), "--out", str(run2)]) == 0
    assert yaml.safe_load((run2 / "config.yaml").read_text()) == yaml.safe_load((search_run / "config.yaml").read_text())
    assert Genotype.load(run2 / "genotype.json").cells == Genotype.load(search_run / "genotype.json").cells
    ours, theirs = torch.load(run2 / "alphas/epoch_002.pt"), torch.load(search_run / "alphas/epoch_002.pt")
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


CONFIG_CASES = [
    ("search:\n  chanels: 4\n", [], "search: unknown key 'chanels'"),
    ("serach:\n  channels: 4\n", [], "unknown key 'serach'; a `pvnas search` config has: command"),
    ("command: train\nnetwork: {}\n", [], "is the config of a `pvnas train` run, not a `pvnas search` one"),
    ("search:\n  channels: four\n", [], "search.channels must be int, got 'four'"),
    ("search:\n  clip: {scale: 128}\n", [], "search.clip.scale must be a list of 2 int, got 128"),
    ("search:\n  remedies: {skip_nois: 0.2}\n", [], "search.remedies: unknown remedy 'skip_nois'"),
    ("search:\n  channels: 4\n", ["--data"], "give --data SPEC (or a --config file that names its data)"),
]


@pytest.mark.parametrize("text,drop,message", CONFIG_CASES, ids=[c[2][:30] for c in CONFIG_CASES])
def test_a_bad_config_file_is_one_line_naming_the_key(text, drop, message, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    args = ["search", "--data", "synthetic:8", "--preset", "tiny", "--out", str(tmp_path / "R"), "--config", str(config)]
    if drop:
        args = args[:1] + args[3:]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "R").exists()
