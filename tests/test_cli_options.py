"""Options that only a full command exercises: each runs once, through the CLI, and leaves its trace."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import pvnas.runtime.run as run_module
from pvnas.cli import main
from pvnas.data.encode import write_video
from pvnas.space.genotype import EDGES_PER_CELL, Genotype
from pvnas.space.ops import CELL_KINDS, ops_for

TINY = ["--preset", "tiny", "--channels", "4", "--batch-size", "4"]


def test_search_with_partial_channels_edge_norm_converge_tensorboard_and_timed_checkpoints(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    writes = []
    real = run_module.save_torch
    monkeypatch.setattr(run_module, "save_torch", lambda obj, path: (writes.append(path.name), real(obj, path)))
    assert main(["search", "--data", "synthetic:8", "--out", str(run), *TINY, "--epochs", "2", "--partial-channels", "2",
                 "--edge-norm", "--schedule", "converge", "--alpha-warmup", "0.25", "--alpha-lr-budget", "3",
                 "--op-dropout", "0.3", "--max-param-free", "0", "--tensorboard", "--checkpoint-every", "1e-9"]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())["search"]
    assert (config["partial_channels"], config["edge_norm"], config["schedule"], config["a_warmup"], config["a_lr_budget"],
            config["remedies"]["op_dropout"], config["remedies"]["max_param_free"]) == (2, True, "converge", 0.25, 3.0, 0.3, 0)
    # 2 steps per epoch: a timed checkpoint after every step, and one at each epoch end
    assert writes == ["checkpoint.pt"] * 6
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["alpha_active"] for r in records] == [True, True] and "decays" in records[0]
    assert records[0]["alpha_lr"] == pytest.approx(3 / 3)  # 4 steps, the first a weights-only warm-up one
    # derive reads the edge weights saved beside the alphas
    # the search's derivation cap: in genotype.json and as derive's default; --max-param-free 8 is the paper's rule
    written = Genotype.load(run / "genotype.json")
    assert set(written.parameter_free_edges().values()) == {0} and written.meta["max_param_free"] == 0
    capsys.readouterr()
    assert main(["derive", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["cells"] == written.to_dict()["cells"]
    assert main(["derive", str(run), "--epoch", "1", "--max-param-free", "8"]) == 0
    derived = json.loads(capsys.readouterr().out)
    alphas = torch.load(run / "alphas/epoch_001.pt", weights_only=True)
    edges = torch.load(run / "alphas/edges_001.pt", weights_only=True)
    assert derived["cells"] == Genotype.derive(alphas, edge_weights=edges).to_dict()["cells"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["param_free_share"] == Genotype.derive(alphas).parameter_free_share()  # the alphas' own signal


def test_derive_ranks_edges_by_the_saved_edge_weights(tmp_path, capsys):
    """Node 3's edges from inputs 0 and 1 win on alpha alone; edge weights that favour input 2 must flip that."""
    run = tmp_path / "run"
    (run / "alphas").mkdir(parents=True)
    alphas = {k: torch.zeros(EDGES_PER_CELL, len(ops_for(k))) for k in CELL_KINDS}
    for k in CELL_KINDS:
        alphas[k][2:5, ops_for(k).index("sep_conv_1x3x3")] = torch.tensor([3.0, 2.0, 1.0])  # node 3: inputs 0, 1, 2
    edges = {k: torch.ones(EDGES_PER_CELL) for k in CELL_KINDS}
    for k in CELL_KINDS:
        edges[k][2:5] = torch.tensor([0.1, 1.0, 1.0])
    torch.save(alphas, run / "alphas/epoch_001.pt")
    assert main(["derive", str(run)]) == 0
    assert [j for _, j in json.loads(capsys.readouterr().out)["cells"]["S-NC"]["edges"][2:4]] == [0, 1]
    torch.save(edges, run / "alphas/edges_001.pt")
    assert main(["derive", str(run)]) == 0
    assert [j for _, j in json.loads(capsys.readouterr().out)["cells"]["S-NC"]["edges"][2:4]] == [1, 2]


def _colour_clip(rgb, seed, frames=12, size=40):
    rng = np.random.default_rng(seed)
    base = np.array(rgb, dtype=np.float32)
    video = base + rng.normal(0, 20, size=(frames, size, size, 3))
    return video.clip(0, 255).astype(np.uint8)


def test_predict_names_the_class_of_a_clip_it_was_trained_to_recognise(tmp_path, capsys):
    """Two classes a tiny network learns in two epochs (red and blue clips); predict must name the right one."""
    root = tmp_path / "colours"
    colours = {"blue": (20, 40, 220), "red": (220, 30, 30)}
    for s, (split, n) in enumerate((("train", 12), ("val", 2))):
        for c, (name, rgb) in enumerate(colours.items()):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                write_video(root / split / name / f"{i}.mp4", _colour_clip(rgb, 100 * s + 10 * c + i), 12)
    genotype = tmp_path / "g.json"
    assert main(["random", "--seed", "3", "-o", str(genotype)]) == 0
    assert main(["train", "--genotype", str(genotype), "--data", f"folder:{root}", "--out", str(tmp_path / "run"),
                 *TINY, "--epochs", "3", "--lr", "0.1"]) == 0
    capsys.readouterr()
    red, blue = tmp_path / "red.mp4", tmp_path / "blue.mp4"
    write_video(red, _colour_clip(colours["red"], 4242), 12)
    write_video(blue, _colour_clip(colours["blue"], 4343), 12)
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "model.pt"), str(red), str(blue), "--top", "2"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["predictions"][0]["label"] for r in results] == ["red", "blue"]
    assert all(r["predictions"][0]["prob"] > 0.5 for r in results), results


def test_the_command_line_waits_passively_and_imports_torch_after_setting_it():
    """OpenMP reads OMP_WAIT_POLICY when torch loads it: the CLI must set it first (a user's own value wins). An
    import hook records the policy at the moment torch is first imported, whoever imports it."""
    code = "\n".join([
        "import os, sys",
        "class Spy:",
        "    seen = []",
        "    def find_spec(self, name, path=None, target=None):",
        "        if name == 'torch' and not Spy.seen: Spy.seen.append(os.environ.get('OMP_WAIT_POLICY'))",
        "sys.meta_path.insert(0, Spy())",
        "import pvnas.cli",
        "import torch",
        "print(Spy.seen[0], os.environ['OMP_WAIT_POLICY'])",
    ])
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["PASSIVE", "PASSIVE"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, check=True).stdout
    assert out.split() == ["ACTIVE", "ACTIVE"]


def test_search_help_lists_the_new_options(capsys):
    assert main(["search", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--overwrite", "--alpha-lr", "--alpha-warmup", "converge"):
        assert option in text


def shared_options() -> dict[str, list[str]]:
    """Every visible --option of two or more commands -> those commands, from the command line itself."""
    import typer

    from pvnas.cli import app

    uses: dict[str, list[str]] = {}
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and not getattr(param, "hidden", False):
                    uses.setdefault(opt, []).append(name)
    return {opt: names for opt, names in uses.items() if len(names) > 1}


def test_the_readme_table_lists_every_shared_option_once_with_its_commands():
    """One name for one thing: the README's table of shared options is the command line's, row for row."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("### Options shared by commands", 1)[1].split("\n\n")[2]
    rows = {}
    for line in table.splitlines()[2:]:
        option, commands = [cell.strip() for cell in line.strip("|").split(" | ")][:2]
        rows[[o for o in option.replace("`", " ").split() if o.startswith("--")][0]] = commands.split(", ")
    assert rows == shared_options()


def test_old_option_names_still_work_but_not_beside_the_new_ones(capsys):
    """--batch and --size were estimate's and flops' names for --batch-size and --crop: hidden aliases now."""
    assert main(["estimate", "--batch", "2", "--batch-size", "2"]) == 2
    assert "give --batch-size or its old name --batch, not both" in capsys.readouterr().err
    assert main(["flops", "--genotype", "g.json", "--crop", "32", "--size", "32"]) == 2
    assert "give --crop or its old name --size, not both" in capsys.readouterr().err
    for command in ("estimate", "flops"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--crop" in text and "--size" not in text and "--batch " not in text
