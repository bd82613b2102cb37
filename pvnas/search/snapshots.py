"""The per-epoch alpha snapshots of a search run (``RUN/alphas/epoch_NNN.pt``, docs/design.md §2), read as data.

``derive``, ``plot`` and the report read them; files are loaded with ``weights_only`` and checked against
the alpha contract, so a corrupt, foreign or hostile file is one error naming it, never code run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch

from pvnas.runtime.rundir import load_torch, load_yaml
from pvnas.errors import ConfigError
from pvnas.space.genotype import Genotype, check_alphas

SNAPSHOT = re.compile(r"epoch_(\d+)\.pt")


def saved_epochs(run: Path) -> list[int]:
    """Epochs with an alpha snapshot in ``run/alphas``, ascending (files of other names are not ours: ignored)."""
    folder = Path(run) / "alphas"
    if not folder.is_dir():
        raise ConfigError(f"{run}: not a search run directory (no alphas/ folder)")
    return sorted(int(m[1]) for p in folder.iterdir() if (m := SNAPSHOT.fullmatch(p.name)))


def load_alphas(run: Path, epoch: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The alphas of ``epoch`` and, for edge-normalised searches, the edge weights saved beside them."""
    folder = Path(run) / "alphas"
    path = folder / f"epoch_{epoch:03d}.pt"
    alphas = check_alphas(load_torch(path, "an alpha snapshot (dict of cell kind -> tensor)"), str(path))
    edges = folder / f"edges_{epoch:03d}.pt"
    if not edges.exists():
        return alphas, None
    return alphas, check_alphas(load_torch(edges, "edge weights (dict of cell kind -> tensor)"), str(edges), per_edge=True)


def derive_from_run(run: Path, epoch: int | None = None, max_param_free: int | None | Literal["run"] = "run") -> Genotype:
    """The genotype of any saved epoch (default: the last), paper Table 3 "stop at epoch". ``max_param_free`` caps
    each cell's identity/pool edges (see :meth:`Genotype.derive`): ``"run"`` (default) the search's own setting, so
    that the last epoch gives the run's genotype.json; ``None`` no cap, the paper's rule."""
    run = Path(run)
    saved = saved_epochs(run)
    if not saved:
        raise ConfigError(f"{run / 'alphas'}: no epoch_NNN.pt files yet")
    epoch = saved[-1] if epoch is None else epoch
    if epoch not in saved:
        raise ConfigError(f"--epoch {epoch}: {run / 'alphas' / f'epoch_{epoch:03d}.pt'} does not exist; "
                          f"saved epochs are {saved[0]}..{saved[-1]}")
    meta: dict[str, Any] = {"source": "search", "epoch": epoch, "run": str(run)}
    config = load_yaml(run / "config.yaml") if (run / "config.yaml").exists() else {}
    if config:
        meta["dataset"] = config.get("data")
    if max_param_free == "run":
        max_param_free = run_max_param_free(run / "config.yaml", config)
    if max_param_free is not None:
        meta["max_param_free"] = max_param_free
    alphas, edge_weights = load_alphas(run, epoch)
    return Genotype.derive(alphas, meta=meta, edge_weights=edge_weights, max_param_free=max_param_free)


def run_max_param_free(path: Path, config: dict[str, Any]) -> int | None:
    """The derivation cap a search ran with (``search.max_param_free`` of its config.yaml; absent: none)."""
    search = config.get("search")
    value = search.get("max_param_free") if isinstance(search, dict) else None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 8):
        raise ConfigError(f"{path}: search.max_param_free must be an integer in 0..8 or null, got {value!r}")
    return value


def alpha_history(run: Path) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Epochs and per-kind softmax weights stacked over epochs: ``{kind: (epochs, 14, n_ops)}``."""
    epochs = saved_epochs(run)
    snaps = [load_alphas(run, e)[0] for e in epochs]
    return epochs, {k: torch.stack([torch.softmax(s[k].float(), -1) for s in snaps]) for k in snaps[0]} if snaps else {}
