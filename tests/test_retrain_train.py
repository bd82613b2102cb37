"""Retraining: schedule defaults per dataset, lr curve, a real 1-epoch run directory, resume."""

import json
from types import SimpleNamespace

import pytest
import torch
import yaml

from pvnas.config import NETWORK_PRESETS, RunOptions, override
from pvnas.retrain.modelfile import load_model
import pvnas.retrain.train as train_module
from pvnas.retrain.train import resolve_schedule, run_train, validation_loader
from pvnas.runtime.distributed import DistEnv
from pvnas.lr_schedules import train_lr
from pvnas.errors import ConfigError
from pvnas.space.genotype import Genotype

L = NETWORK_PRESETS["L"]
TINY = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, val_videos=8)
DATA = "synthetic:16"
GENOTYPE = Genotype.random(3, min_conv=4)


def test_schedule_defaults_follow_the_paper_per_dataset():
    assert (resolve_schedule(L, "kinetics:/k").epochs, resolve_schedule(L, "kinetics:/k").warmup_epochs) == (196, 36)
    assert resolve_schedule(L, "ssv2:/s").warmup_epochs == 36
    ucf = resolve_schedule(L, "ucf101:/u?split=2")
    assert (ucf.epochs, ucf.warmup_epochs) == (128, 16)
    assert resolve_schedule(L, "hmdb51:/h?split=3").epochs == 128  # (UCF-101's size, UCF-101's schedule)
    short = resolve_schedule(L, "ucf101:/u", epochs=64)
    assert (short.epochs, short.warmup_epochs) == (64, 8)  # warm-up scaled with --epochs
    assert resolve_schedule(L, "kinetics:/k", epochs=98).warmup_epochs == 18
    tiny = resolve_schedule(NETWORK_PRESETS["tiny"], "kinetics:/k")
    assert (tiny.epochs, tiny.warmup_epochs) == (2, 0)  # a preset's own schedule wins over the dataset's
    with pytest.raises(ConfigError, match=r"epochs \(--epochs\) must be >= 1"):
        resolve_schedule(L, "synthetic", epochs=0)


def test_lr_warms_up_linearly_then_cosine_decays():
    cfg = resolve_schedule(L, "ucf101:/u")  # 128 epochs, 16 warm-up
    assert train_lr(cfg, 0) == pytest.approx(0.01 * 0.01)
    assert train_lr(cfg, 8) == pytest.approx(0.01 * (0.01 + 0.99 * 0.5))
    assert train_lr(cfg, 16) == pytest.approx(0.01)
    assert train_lr(cfg, 16 + 56) == pytest.approx(0.005)  # half-way through the cosine
    assert train_lr(cfg, 128) == pytest.approx(0.0)
    lrs = [train_lr(cfg, e / 4) for e in range(0, 4 * 128)]
    peak = lrs.index(max(lrs))
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert train_lr(cfg, 20, scale=4) == pytest.approx(4 * train_lr(cfg, 20))  # linear scaling with world size


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "run"
    result = run_train(GENOTYPE, override(TINY, epochs=1), DATA, run, preset="tiny")
    return run, result


def test_run_directory_is_self_describing(one_epoch):
    run, result = one_epoch
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "genotype.json", "metrics.jsonl", "checkpoint.pt", "model.pt"}
    assert Genotype.load(run / "genotype.json") == GENOTYPE
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["command"] == "train" and config["network"]["channels"] == 4 and config["network"]["epochs"] == 1
    (record,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key in ("epoch", "loss", "acc", "val_loss", "val_top1", "val_top5", "lr", "clips_per_s", "skipped"):
        assert key in record, key
    assert record["val_videos"] == 8 and record["skipped"] == 0
    assert result["model"] == str(run / "model.pt")


def test_model_file_rebuilds_the_trained_network(one_epoch):
    run, _ = one_epoch
    trained = load_model(run / "model.pt")
    assert trained.classes[0] == "shift_left" and len(trained.classes) == 8
    assert trained.config.channels == 4 and trained.genotype == GENOTYPE and trained.preset == "tiny"
    state = torch.load(run / "checkpoint.pt", weights_only=True)["state"]["model"]
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not trained.model.training


def test_resume_extends_a_run_and_refuses_a_different_config(one_epoch, tmp_path):
    run, _ = one_epoch
    copy = tmp_path / "run"
    copy.mkdir()
    for p in run.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ConfigError, match="network.channels"):
        run_train(GENOTYPE, override(TINY, epochs=2, channels=8), DATA, copy, RunOptions(resume=True))
    with pytest.raises(ConfigError, match="already holds a run"):
        run_train(GENOTYPE, override(TINY, epochs=2), DATA, copy)
    run_train(GENOTYPE, override(TINY, epochs=2), DATA, copy, RunOptions(resume=True))
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["drop_path"] == pytest.approx(0.05)  # DARTS ramp: 0.1 * epoch / epochs


def test_validation_loads_each_video_once_over_epochs(monkeypatch):
    """Centre views are the same every epoch: the second epoch's validation reads nothing (same batches)."""
    loads = []

    class Counted:
        def __init__(self, dataset):
            self.dataset, self.classes = dataset, dataset.classes

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, key):
            loads.append(key[0] if isinstance(key, tuple) else key)
            return self.dataset[key]

    build = train_module.build_dataset
    monkeypatch.setattr(train_module, "build_dataset", lambda *a, **k: Counted(build(*a, **k)))
    run = SimpleNamespace(env=DistEnv(), note_files=lambda split, dataset: None)
    loader = validation_loader(DATA, TINY, build(DATA, "val", TINY.clip).classes, run)
    epochs = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        epochs.append([(b.clips, b.indices) for b in loader])
    assert len(loads) == TINY.val_videos and len(set(loads)) == TINY.val_videos
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(*epochs))


def test_model_file_errors_name_the_file(tmp_path, one_epoch):
    with pytest.raises(ConfigError, match="file not found"):
        load_model(tmp_path / "nope.pt")
    run, _ = one_epoch
    with pytest.raises(ConfigError, match="use RUN/model.pt"):
        load_model(run / "checkpoint.pt")
