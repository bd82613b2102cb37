"""``pvnas estimate``: never a step that does not fit in memory; the retrain estimate and its CLI errors."""

import json

import pytest
import torch

from pvnas.cli import main
from pvnas.engine import estimate as est
from pvnas.engine.estimate import cost_step, meta_activations_mb
from pvnas.space.genotype import Genotype

CLIP_MB = 40  # what the fake step below holds per clip


def fake_step(ran: list[int]):
    """A "training step" of b clips that really holds b x 40 MiB (pages touched, so resident) for a moment."""

    def run(b: int) -> None:
        ran.append(b)
        torch.ones(b * CLIP_MB * 2**18).sum()  # float32: 2**18 per MiB

    return run


def test_cost_step_never_runs_a_batch_that_does_not_fit(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 400.0)  # 0.9 x 400 MiB: 9 clips minus slack
    ran: list[int] = []
    cost = cost_step(fake_step(ran), 64, device=torch.device("cpu"), activations_mb=(CLIP_MB, CLIP_MB), state_mb=0,
                     steps=2, time_budget=30)
    assert not cost.fits_in_memory and 4 <= cost.max_batch <= 9, cost
    assert ran[:2] == [1, 2] and max(ran) <= cost.max_batch, ran  # probes, then timed steps at a batch that fits
    assert cost.measured_batch == max(ran) and cost.step_seconds_source.startswith("extrapolated from batch")
    assert cost.step_seconds == pytest.approx(cost.measured_step_seconds * 64 / cost.measured_batch)
    assert cost.per_clip_memory_mb == pytest.approx(CLIP_MB, rel=0.3)
    assert cost.peak_step_memory_mb > 0.9 * 400 and cost.peak_step_memory_source.startswith("extrapolated")


def test_cost_step_runs_nothing_when_one_clip_does_not_fit(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 100.0)
    ran: list[int] = []
    cost = cost_step(fake_step(ran), 8, device=torch.device("cpu"), activations_mb=(CLIP_MB, CLIP_MB), state_mb=50)
    assert ran == [] and cost.step_seconds is None and cost.max_batch == 0 and not cost.fits_in_memory


def test_cost_step_probes_batch_2_only_if_batch_1_says_it_fits(monkeypatch):
    monkeypatch.setattr(est, "available_mb", lambda device: 110.0)  # batch 1 (~40 MiB, 80 predicted) fits, 2 not
    ran: list[int] = []
    cost = cost_step(fake_step(ran), 4, device=torch.device("cpu"), activations_mb=(CLIP_MB, CLIP_MB), state_mb=0)
    assert 2 not in ran and set(ran) == {1} and cost.max_batch == 1 and not cost.fits_in_memory


def test_cost_step_measures_the_requested_batch_when_it_fits():
    ran: list[int] = []
    cost = cost_step(fake_step(ran), 3, device=torch.device("cpu"), activations_mb=(CLIP_MB, CLIP_MB), state_mb=0, steps=2)
    assert ran == [1, 2, 3, 3] and cost.fits_in_memory and cost.step_seconds_source == "measured"
    assert cost.peak_step_memory_source == "measured" and cost.peak_step_memory_mb >= 2.5 * CLIP_MB


def test_meta_activations_are_linear_in_the_batch_and_allocate_nothing():
    import pvnas

    genotype = Genotype.random(1, min_conv=4)
    one, per_clip = meta_activations_mb(lambda: pvnas.build_network(genotype, "tiny", num_classes=5), (3, 4, 32, 32))
    assert one > 0 and per_clip > 0.9 * one  # nearly everything autograd keeps grows with the batch
    net = pvnas.build_network(genotype, "tiny", num_classes=5)
    real = est.activation_bytes(net, torch.zeros(2, 3, 4, 32, 32)) / 2**20
    assert real == pytest.approx(one + per_clip, rel=0.05)


@pytest.fixture(scope="module")
def genotype_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("estimate") / "g.json"
    Genotype.random(1, min_conv=4).save(path)
    return str(path)


def test_retrain_estimate_cli_projects_training_and_test_time(genotype_file, capsys):
    assert main(["estimate", "--genotype", genotype_file, "--preset", "tiny", "--batch", "2", "--data", "synthetic:10",
                 "--epochs", "3", "--steps", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "retrain" and out["impl"] == "fast" and out["params"] > 0 and out["gmacs_per_view"] > 0
    assert (out["dataset_size"], out["val_size"], out["num_classes"], out["epochs"]) == (10, 8, 8, 3)
    assert out["fits_in_memory"] and out["step_seconds_source"] == "measured" and out["steps_per_epoch"] == 5
    assert out["train_seconds"] == pytest.approx(3 * (5 * out["step_seconds"] + out["val_seconds_per_epoch"]))
    assert out["test_views"] == 6  # tiny: 2 clips x 3 crops
    assert out["test_seconds"] == pytest.approx(8 * 6 * out["eval_seconds_per_clip"])


def test_retrain_epochs_default_to_the_datasets(genotype_file, capsys):
    assert main(["estimate", "--genotype", genotype_file, "--preset", "tiny", "--batch", "1", "--steps", "1",
                 "--data", "ucf101:/absent", "--channels", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and out["val_size"] == 3783 and "official val split" in out["val_size_source"]


@pytest.mark.parametrize("args,message", [
    (["--genotype", "{g}", "--batch", "0"], "--batch must be >= 1, got 0"),
    (["--genotype", "{g}", "--preset", "search"], "unknown preset 'search'; expected one of: L, M, tiny, demo"),
    (["--genotype", "/absent/g.json"], "g.json: genotype file not found"),
    (["--genotype", "{g}", "--partial-channels", "4"], "--partial-channels is a search setting"),
    (["--repeats", "2"], "--repeats is a retrain setting"),
    (["--preset", "L"], "unknown preset 'L'; expected one of: search, tiny, demo"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
])
def test_bad_estimate_input_is_one_line_and_exit_2(args, message, genotype_file, capsys):
    assert main(["estimate", *[a.format(g=genotype_file) for a in args]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
