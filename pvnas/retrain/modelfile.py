"""``RUN/model.pt``: a trained network that eval, predict and export can use with nothing else.

The file holds the weights plus everything needed to rebuild the module: the genotype (as its
JSON dict), the resolved :class:`~pvnas.config.NetworkConfig`, the class names and the preset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from pvnas.config import NetworkConfig, from_dict, override, to_dict
from pvnas.runtime.rundir import load_torch, save_torch
from pvnas.errors import ConfigError, PvnasError
from pvnas.nn.network import Network, network_from_config
from pvnas.space.genotype import Genotype

MODEL_FORMAT = "pvnas-model/1"


@dataclass
class TrainedModel:
    """A rebuilt network with what it was trained for."""

    model: Network
    classes: list[str]
    config: NetworkConfig
    preset: str
    genotype: Genotype
    meta: dict[str, Any]


def model_record(
    model: Network, classes: Sequence[str], cfg: NetworkConfig, preset: str, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The content of ``model.pt`` (CPU tensors, so it loads anywhere)."""
    return {
        "format": MODEL_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "genotype": model.genotype.to_dict(),
        "classes": list(classes),
        "preset": preset,
        "network": to_dict(cfg),
        "meta": dict(meta or {}),
    }


def save_model(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Atomically write a :func:`model_record`."""
    save_torch(record, Path(path))


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", impl: str | None = None) -> TrainedModel:
    """Rebuild the network of ``model.pt`` in eval mode; errors name the file and what is wrong.

    ``impl`` is the forward to run (:class:`~pvnas.nn.network.Network`); None: the default (fast), whichever
    trained the weights (both have the same state dict; files from before ``impl`` existed load the same way).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--checkpoint {path}: file not found (expected RUN/model.pt written by `pvnas train`)")
    record = load_torch(path, "a model file (RUN/model.pt written by `pvnas train`)")
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        hint = " (RUN/checkpoint.pt is for --resume; use RUN/model.pt)" if isinstance(record, dict) and "progress" in record else ""
        raise ConfigError(f"--checkpoint {path}: format must be {MODEL_FORMAT!r}, got {found!r}{hint}")
    try:
        genotype = Genotype.from_dict(record["genotype"], source=f"{path}: genotype")
        cfg = override(from_dict(NetworkConfig, record["network"]), impl=impl or NetworkConfig.impl)
        classes = list(record["classes"])
        model = network_from_config(genotype, cfg, len(classes))
        model.load_state_dict(record["state_dict"])
    except PvnasError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--checkpoint {path}: inconsistent model file ({exc})") from None
    model.to(device).eval()
    return TrainedModel(model, classes, cfg, record.get("preset", "custom"), genotype, dict(record.get("meta", {})))
