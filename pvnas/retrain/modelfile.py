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


def read_model_file(path: str | os.PathLike, flag: str = "--checkpoint") -> dict[str, Any]:
    """The record of a ``model.pt``, read as data (``weights_only``: no code in it runs); errors name ``flag`` and
    the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path}: file not found (expected RUN/model.pt written by `pvnas train`)")
    record = load_torch(path, "a model file (RUN/model.pt written by `pvnas train`)")
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        hint = " (RUN/checkpoint.pt is for --resume; use RUN/model.pt)" if isinstance(record, dict) and "progress" in record else ""
        raise ConfigError(f"{flag} {path}: format must be {MODEL_FORMAT!r}, got {found!r}{hint}")
    return record


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", impl: str | None = None) -> TrainedModel:
    """Rebuild the network of ``model.pt`` in eval mode; errors name the file and what is wrong.

    ``impl`` is the forward to run (:class:`~pvnas.nn.network.Network`); None: the default (fast), whichever
    trained the weights (both have the same state dict; files from before ``impl`` existed load the same way).
    """
    path = Path(path)
    record = read_model_file(path)
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


# -- starting a retrain from a trained model (transfer) ----------------------------------------------------

HEAD = "classifier."  # the tensors that map features to classes: re-initialised when the classes differ
SHAPE_FIELDS = ("channels", "repeats", "stages", "stem_stride")  # the NetworkConfig fields that set tensor shapes


def init_genotype(path: str | os.PathLike) -> Genotype:
    """The genotype a model file was trained with (``pvnas train --init`` without ``--genotype``)."""
    record = read_model_file(path, "--init")
    try:
        return Genotype.from_dict(record["genotype"], source=f"--init {path}: genotype")
    except PvnasError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--init {path}: inconsistent model file ({exc})") from None


def fitting_model_file(path: str | os.PathLike, genotype: Genotype, cfg: NetworkConfig) -> dict[str, Any]:
    """The record of the model file ``path`` if a network of ``genotype`` and ``cfg`` can start from it; else one
    ConfigError naming what differs (the genotype, or a field that sets tensor shapes, with the model's preset)."""
    flag = f"--init {path}"
    record = read_model_file(path, "--init")
    try:
        trained = from_dict(NetworkConfig, record["network"])
        if Genotype.from_dict(record["genotype"], source=f"{flag}: genotype") != genotype:
            raise ConfigError(f"{flag}: the model was trained with another genotype than --genotype; leave --genotype "
                              "out to start from the model's own, or train from scratch")
        if not isinstance(record["state_dict"], dict) or not isinstance(record["classes"], list):
            raise TypeError("state_dict must be a mapping and classes a list")
    except PvnasError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{flag}: inconsistent model file ({exc})") from None
    preset = record.get("preset", "custom")
    for name in SHAPE_FIELDS:
        then, now = getattr(trained, name), getattr(cfg, name)
        if then != now:
            fix = f"--{name} {then}" if name in ("channels", "repeats") else f"--preset {preset}"
            raise ConfigError(f"{flag}: the model was trained with {name} {then!r} (preset {preset}), this run builds "
                              f"{now!r}; start it with {fix}")
    return record


def init_from_model(model: Network, record: dict[str, Any], classes: Sequence[str], path: str | os.PathLike) -> dict[str, Any]:
    """Start ``model`` (built for ``classes``) from the weights of a model file's ``record`` (checked by
    :func:`fitting_model_file`; ``path`` names it).

    Every tensor whose name and shape match is copied, except the classifier when the classes differ (it keeps
    its fresh initialisation: the old rows mean other classes). A tensor the network needs that the file lacks
    or holds in another shape is refused with one line. Returns what happened, for config.yaml: ``model``,
    ``preset``, ``classes``, and the ``loaded``, ``reinitialised`` and ``skipped`` (file tensors not used) names.
    """
    state, old_classes = dict(record["state_dict"]), list(record["classes"])
    preset = record.get("preset", "custom")
    same_classes = old_classes == list(classes)
    own = model.state_dict()
    loaded, reinitialised = [], []
    for name, tensor in own.items():
        if name.startswith(HEAD) and not same_classes:
            reinitialised.append(name)
        elif isinstance(state.get(name), torch.Tensor) and state[name].shape == tensor.shape:
            loaded.append(name)
        else:
            found = tuple(state[name].shape) if isinstance(state.get(name), torch.Tensor) else "nothing"
            raise ConfigError(f"--init {path}: does not fit this network: {name} needs shape {tuple(tensor.shape)}, "
                              f"the file holds {found}; was it trained with --preset {preset} and this genotype?")
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name])
    return {"model": str(path), "preset": preset,
            "classes": "kept" if same_classes else f"{len(old_classes)} in the model, {len(classes)} here: "
                                                   "classifier re-initialised",
            "loaded": loaded, "reinitialised": reinitialised, "skipped": sorted(set(state) - set(loaded))}
