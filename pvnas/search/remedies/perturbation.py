"""Perturbation-based selection (DARTS-PT, Wang et al. 2021), ``pvnas derive RUN --select perturbation``:
derive the cells from what the trained supernet needs rather than from the size of the alphas.

DARTS-PT observed that the largest alpha of an edge often does not name the op the supernet relies on most
(skip connections grow large alphas without being the most useful), which is how DARTS collapses to
parameter-free cells. It keeps, per edge, the op whose removal costs the supernet most validation accuracy,
and per node the two incoming edges whose removal costs most. Here, as there: ops first (each removed alone
from the full supernet), then edges (each removed from the supernet whose edges hold their chosen op only).
Unlike DARTS-PT, the supernet is not fine-tuned between decisions (a minutes-long search has nothing to spare
for it); the clips scored are centre views of the training split, the data the search had (the validation
split stays unseen for testing the retrained network); ties in accuracy, common on a few dozen clips, are
broken by the loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pvnas.config import SearchConfig, from_dict
from pvnas.data import build_dataset
from pvnas.data.loader import Skipped
from pvnas.errors import ConfigError
from pvnas.nn.supernet import supernet_from_config
from pvnas.runtime.rundir import load_torch, load_yaml
from pvnas.search.snapshots import saved_epochs
from pvnas.space.genotype import EDGES_PER_CELL, NODES, CellGenotype, Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, ops_for

log = logging.getLogger(__name__)

Score = tuple[float, float]  # (accuracy, -loss): higher is better, compared in that order


def load_supernet(run: Path) -> tuple[nn.Module, dict, SearchConfig]:
    """The trained supernet of a search run (its last checkpoint, read as data), its config record and config."""
    record = load_yaml(run / "config.yaml")
    if record.get("command") != "search":
        raise ConfigError(f"{run}: not a search run (config.yaml says command {record.get('command')!r})")
    cfg = from_dict(SearchConfig, record["search"])
    model = supernet_from_config(cfg, len(record["classes"]), ())  # scored in eval mode: remedies change training only
    ckpt = load_torch(run / "checkpoint.pt", "a `pvnas search` checkpoint")
    try:
        model.load_state_dict(ckpt["state"]["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"{run / 'checkpoint.pt'}: does not hold this run's supernet ({type(exc).__name__})") from None
    return model.eval(), record, cfg


def scoring_batch(data: str, cfg: SearchConfig, videos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``videos`` training clips (centre view), spread evenly over the split, decoded once."""
    dataset = build_dataset(data, "train", cfg.clip, seed=cfg.seed, views="single")
    items = [dataset[int(i)] for i in np.unique(np.linspace(0, len(dataset) - 1, videos).round())]
    good = [it for it in items if not isinstance(it, Skipped)]
    if not good:
        raise ConfigError(f"--data {data}: none of the training videos read for --select perturbation is readable")
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good])


@torch.no_grad()
def score(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, mask: dict[str, torch.Tensor],
          chunk: int = 32) -> Score:
    """(accuracy, -cross-entropy) of the supernet with op weights multiplied by ``mask``."""
    logits = torch.cat([model(clips[i : i + chunk], op_mask=mask) for i in range(0, len(clips), chunk)])
    return float((logits.argmax(1) == labels).float().mean()), -float(F.cross_entropy(logits, labels))


def select(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor) -> dict[str, CellGenotype]:
    """Per cell kind: each edge's op whose removal costs most, then each node's two edges whose removal costs most."""
    full = {kind: torch.ones(EDGES_PER_CELL, len(ops_for(kind))) for kind in CELL_KINDS}
    chosen: dict[str, list[int]] = {}
    for kind in CELL_KINDS:
        ops = ops_for(kind)
        chosen[kind] = []
        for e in range(EDGES_PER_CELL):
            scores = {}
            for o, name in enumerate(ops):
                if name == "zero":
                    continue
                mask = {**full, kind: full[kind].clone()}
                mask[kind][e, o] = 0.0
                scores[o] = score(model, clips, labels, mask)
            chosen[kind].append(min(scores, key=lambda o: (scores[o], o)))  # the largest drop
    one_hot = {kind: F.one_hot(torch.tensor(chosen[kind]), len(ops_for(kind))).float() for kind in CELL_KINDS}
    cells = {}
    for kind in CELL_KINDS:
        edges: list[tuple[str, int]] = []
        for node in range(2, 2 + NODES):
            incoming = [e for e, (target, _) in enumerate(edge_inputs()) if target == node]
            scores = {}
            for e in incoming:
                mask = {**one_hot, kind: one_hot[kind].clone()}
                mask[kind][e] = 0.0
                scores[e] = score(model, clips, labels, mask)
            keep = sorted(sorted(incoming, key=lambda e: (scores[e], e))[:2])
            edges += [(ops_for(kind)[chosen[kind][e]], edge_inputs()[e][1]) for e in keep]
        cells[kind] = CellGenotype(tuple(edges))
    return cells


def derive_by_perturbation(run: Path, epoch: int | None = None, videos: int = 64) -> Genotype:
    """The genotype DARTS-PT's selection gives for the trained supernet of ``run`` (its last epoch: only its
    weights are saved), scored on ``videos`` training clips of the run's data."""
    run = Path(run)
    last = saved_epochs(run)[-1] if (run / "alphas").is_dir() and saved_epochs(run) else None
    if last is None or not (run / "checkpoint.pt").is_file():
        raise ConfigError(f"{run}: --select perturbation needs a search run with its checkpoint.pt")
    if epoch is not None and epoch != last:
        raise ConfigError(f"--select perturbation --epoch {epoch}: only the last epoch's supernet ({last}) is saved; "
                          "derive earlier epochs with --select alpha")
    model, record, cfg = load_supernet(run)
    clips, labels = scoring_batch(record["data"], cfg, videos)
    log.info("perturbation-based selection on %d training clips of %s", len(labels), record["data"])
    cells = select(model, clips, labels)
    meta = {"source": "search", "selection": "perturbation", "scored_on": f"{len(labels)} training clips",
            "epoch": last, "run": str(run), "dataset": record["data"]}
    genotype = Genotype(cells, meta)
    genotype.validate()
    return genotype
