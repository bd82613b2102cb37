"""The per-epoch alpha snapshots of a search run (``RUN/alphas/epoch_NNN.pt``, docs/design.md §2), read as data.

``derive``, ``plot`` and the report read them; files are loaded with ``weights_only`` and checked against
the alpha contract, so a corrupt, foreign or hostile file is one error naming it, never code run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from pvnas.config import LEGACY_REMEDIES, SearchConfig, from_dict
from pvnas.errors import ConfigError
from pvnas.runtime.rundir import load_torch, load_yaml
from pvnas.search.remedies import REMEDIES, Remedy, derive_options, remedies_of, unknown
from pvnas.search.remedies.budget import run_budget
from pvnas.space.genotype import Budget, Genotype, check_alphas

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


def saved_epoch(run: Path, epoch: int | None) -> int:
    """``epoch`` (default: the last saved one) if ``run`` saved its alphas, else one line naming what is there."""
    saved = saved_epochs(run)
    if not saved:
        raise ConfigError(f"{run / 'alphas'}: no epoch_NNN.pt files yet")
    epoch = saved[-1] if epoch is None else epoch
    if epoch not in saved:
        raise ConfigError(f"--epoch {epoch}: {run / 'alphas' / f'epoch_{epoch:03d}.pt'} does not exist; "
                          f"saved epochs are {saved[0]}..{saved[-1]}")
    return epoch


def derive_from_run(run: Path, epoch: int | None = None, overrides: Mapping[str, Any] | None = None,
                    budget: Budget | None = None) -> Genotype:
    """The genotype of any saved epoch (default: the last), paper Table 3 "stop at epoch", derived as the search
    derives: with the derivation its remedies ask for (e.g. the parameter-free cap) and within its targets' budget,
    so that the last epoch gives the run's genotype.json. ``overrides``: remedy values that replace the run's
    (``{"max_param_free": 8}``: the paper's rule); ``budget``: limits that replace the run's targets."""
    run = Path(run)
    epoch = saved_epoch(run, epoch)
    meta: dict[str, Any] = {"source": "search", "epoch": epoch, "run": str(run)}
    config = load_yaml(run / "config.yaml") if (run / "config.yaml").exists() else {}
    if config:
        meta["dataset"] = config.get("data")
    options = derive_options(run_remedies(run / "config.yaml", config, overrides or {}))
    search = config.get("search") if isinstance(config.get("search"), dict) else {}
    budget = budget if budget is not None else run_budget(search)
    options = {**options, **({"budget": budget} if budget is not None else {})}
    alphas, edge_weights = load_alphas(run, epoch)
    return Genotype.derive(alphas, meta={**meta, **options}, edge_weights=edge_weights, **options)


def run_remedies(path: Path, config: dict[str, Any], overrides: Mapping[str, Any]) -> list[Remedy]:
    """The derivation remedies a search ran with (its config.yaml's ``search``, the remedies of an earlier release's
    flat keys included), with ``overrides`` applied; a bad value is one line naming the file and the key."""
    search = config.get("search")
    search = search if isinstance(search, dict) else {}
    try:
        values = {**from_dict(SearchConfig, {k: search[k] for k in (*LEGACY_REMEDIES, "remedies") if k in search}).remedies,
                  **overrides}
    except ConfigError as exc:
        raise ConfigError(f"{path}: search.{exc}") from None
    unknown(values, f"{path}: search.remedies")
    try:
        return remedies_of(SearchConfig(remedies={k: v for k, v in values.items() if not REMEDIES[k].trains}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: search.remedies.{exc}") from None


def alpha_history(run: Path) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Epochs and per-kind softmax weights stacked over epochs: ``{kind: (epochs, 14, n_ops)}``."""
    epochs = saved_epochs(run)
    snaps = [load_alphas(run, e)[0] for e in epochs]
    return epochs, {k: torch.stack([torch.softmax(s[k].float(), -1) for s in snaps]) for k in snaps[0]} if snaps else {}
