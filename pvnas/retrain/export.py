"""``pvnas export``: a trained network as a deployable TorchScript or ONNX file.

Both take float clips ``(N, 3, T, H, W)`` normalised like training (Kinetics mean/std) and return
logits ``(N, num_classes)``; N is dynamic. The class names and clip settings travel inside the
file (TorchScript extra file ``pvnas.json``, ONNX metadata ``pvnas``) so a deployment needs
nothing else. After writing, the exported model is run once and compared with the eager one.

What is exported is the network with the reference forward (literal ``Conv3d`` ops, the same weights):
the fast forward's Python-level choices (split sizes, repeats per batch) would be frozen by tracing at the
example's batch size, and ONNX/TorchScript runtimes optimise plain convolutions themselves.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from pvnas.config import to_dict
from pvnas.retrain.modelfile import TrainedModel, load_model
from pvnas.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")


def export_metadata(trained: TrainedModel) -> str:
    """JSON with what a deployment needs to feed the model and read its output."""
    from pvnas.data.transforms import MEAN, STD

    return json.dumps({
        "classes": trained.classes, "clip": to_dict(trained.config.clip), "mean": MEAN, "std": STD,
        "input": "float (N, 3, T, H, W)", "output": "logits (N, num_classes)", "genotype": trained.genotype.to_dict(),
    })


def export_model(
    checkpoint: str | os.PathLike, fmt: str, output: str | os.PathLike, *, example: torch.Tensor | None = None
) -> dict[str, Any]:
    """Write ``output`` in ``fmt``; returns ``{"output", "format", "input_shape", "max_abs_diff"}``.

    ``example`` (default: random noise of the model's clip shape, batch 1) is the tracing input and
    the parity check's input.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    trained = load_model(checkpoint, "cpu", impl="reference")
    model = trained.model.eval()
    clip = trained.config.clip
    if example is None:
        example = torch.randn(1, 3, clip.frames, clip.crop, clip.crop, generator=torch.Generator().manual_seed(0))
    output = Path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"-o {output}: cannot create its folder ({exc.strerror or exc})") from None
    with torch.no_grad():
        expected = model(example)
    if fmt == "torchscript":
        with warnings.catch_warnings():  # trace is deprecated in favour of torch.export, which is not TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            traced = torch.jit.trace(model, example, check_trace=False)  # parity is checked below
            torch.jit.save(traced, str(output), _extra_files={"pvnas.json": export_metadata(trained)})
            loaded = torch.jit.load(str(output))
        with torch.no_grad():
            got = loaded(example)
    else:
        got = torch.from_numpy(_export_onnx(model, example, output, export_metadata(trained)))
    diff = float((got - expected).abs().max())
    log.info("wrote %s (%s); max |exported - eager| = %.3g", output, fmt, diff)
    return {"output": str(output), "format": fmt, "input_shape": list(example.shape), "max_abs_diff": diff}


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, output: Path, metadata: str):
    """Export with a dynamic batch, attach the metadata, run once with onnxruntime."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("--format onnx needs the onnx extra: pip install 'pvnas[onnx]' (onnx, onnxruntime)") from None
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript; it warns that it is legacy
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(output), input_names=["clips"], output_names=["logits"],
            dynamic_axes={"clips": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )
    proto = onnx.load(str(output))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "pvnas", metadata
    onnx.save(proto, str(output))
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    return session.run(None, {"clips": example.numpy()})[0]
