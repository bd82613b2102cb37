"""The retrain network's impl and ``--compile`` through the retrain stage: model files, resume, eval, predict, train."""

from __future__ import annotations

import torch

import pvnas
from pvnas.config import NETWORK_PRESETS, RunOptions, override
from pvnas.data.generators.moving_patterns import CLASSES
from pvnas.retrain.evaluate import run_eval
from pvnas.retrain.modelfile import load_model, model_record, save_model
from pvnas.retrain.predict import predict_videos
from pvnas.retrain.train import run_train
from pvnas.space.genotype import Genotype

GENOTYPE = Genotype.random(1, min_conv=4)
TINY = override(NETWORK_PRESETS["tiny"], channels=4, batch_size=4, epochs=1, val_videos=4)
DATA = "synthetic:8"


def test_a_model_file_from_before_impl_loads_with_the_fast_forward(tmp_path):
    """model.pt files written before ``NetworkConfig.impl`` existed (no such key) load, run the default
    forward, and give the logits of the literal network with the same weights."""
    torch.manual_seed(0)
    ref = pvnas.build_network(GENOTYPE, "tiny", num_classes=len(CLASSES), channels=4, impl="reference").eval()
    record = model_record(ref, CLASSES, override(TINY, impl="reference"), "tiny")
    del record["network"]["impl"]
    save_model(tmp_path / "model.pt", record)
    trained = load_model(tmp_path / "model.pt")
    assert trained.model.impl == "fast" and trained.config.impl == "fast"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), ref(x), rtol=1e-4, atol=1e-5)
    assert load_model(tmp_path / "model.pt", impl="reference").model.impl == "reference"


class CompileRecorder:
    """Stands in for ``torch.compile``: records what it was given and counts calls of the "compiled" module."""

    def __init__(self) -> None:
        self.models: list[torch.nn.Module] = []
        self.calls = 0

    def __call__(self, model: torch.nn.Module, dynamic: bool | None = None) -> torch.nn.Module:
        assert dynamic is False  # static shapes: a batch size of its own compiles its own graph
        self.models.append(model)
        recorder = self

        class Compiled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                recorder.calls += 1
                return self.inner(x)

        return Compiled()


def test_compile_wraps_the_network_of_train_eval_predict_and_a_resume_may_switch_impl(tmp_path, monkeypatch, real_clips):
    compile = CompileRecorder()
    monkeypatch.setattr(torch, "compile", compile)
    run = tmp_path / "run"
    run_train(GENOTYPE, override(TINY, impl="reference"), DATA, run, preset="tiny")
    assert compile.models == []  # off by default
    # both impls have the same weights and state dict: a run continues with the other, compiled
    run_train(GENOTYPE, override(TINY, epochs=2), DATA, run, RunOptions(resume=True), preset="tiny", compile=True)
    assert len(compile.models) == 1 and compile.models[0].impl == "fast" and compile.calls == 2  # 8 clips / 4
    result = run_eval(run / "model.pt", DATA, views="1x1", batch_size=4, compile=True)
    assert result["videos"] == 8 and len(compile.models) == 2 and compile.calls == 2 + 8 // 4
    (answer,) = predict_videos(run / "model.pt", [real_clips["cleaning_pool_32f.mp4"]], compile=True)
    assert "predictions" in answer and len(compile.models) == 3 and compile.calls == 5
    assert load_model(run / "model.pt").model.impl == "fast"
