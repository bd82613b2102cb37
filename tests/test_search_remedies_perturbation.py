"""``pvnas derive --select perturbation`` (DARTS-PT): the known answer of the selection rule, and the command."""

import json

import pytest
import torch

from pvnas.cli import main
from pvnas.search.remedies import perturbation
from pvnas.space.genotype import EDGES_PER_CELL, Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, ops_for


def test_selection_keeps_the_ops_and_edges_whose_removal_costs_most(monkeypatch):
    """A fake supernet whose score is the sum of the importance of what the mask keeps: the op kept per edge must
    be its most important non-zero op, and the edges kept per node the two whose chosen op matters most."""
    g = torch.Generator().manual_seed(3)
    importance = {k: torch.rand(EDGES_PER_CELL, len(ops_for(k)), generator=g) for k in CELL_KINDS}
    for k in CELL_KINDS:
        importance[k][:, 0] = 10.0  # `zero` is never a candidate, however much the score would drop
    monkeypatch.setattr(perturbation, "score",
                        lambda model, clips, labels, mask: (float(sum((mask[k] * importance[k]).sum() for k in mask)), 0.0))
    cells = perturbation.select(None, None, None)
    for k in CELL_KINDS:
        best = importance[k][:, 1:].argmax(1) + 1
        want = []
        for node in range(2, 6):
            incoming = [e for e, (t, _) in enumerate(edge_inputs()) if t == node]
            top = sorted(sorted(incoming, key=lambda e: -importance[k][e, best[e]])[:2])
            want += [(ops_for(k)[best[e]], edge_inputs()[e][1]) for e in top]
        assert list(cells[k].edges) == want, k


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "s"
    assert main(["search", "--data", "synthetic:16", "--preset", "tiny", "--epochs", "2", "--channels", "4",
                 "--out", str(out)]) == 0
    return out


def test_derive_by_perturbation_writes_a_valid_genotype(search_run, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["derive", str(search_run), "--select", "perturbation", "--videos", "2", "-o", str(out)]) == 0
    genotype = Genotype.load(out)
    assert genotype.meta["selection"] == "perturbation" and genotype.meta["epoch"] == 2
    assert main(["derive", str(search_run), "--select", "perturbation", "--epoch", "1"]) == 2
    assert "only the last epoch" in capsys.readouterr().err
    assert main(["derive", str(search_run), "--select", "nope"]) == 2
    (search_run / "checkpoint.pt").rename(tmp_path / "moved.pt")
    try:
        assert main(["derive", str(search_run), "--select", "perturbation"]) == 2
    finally:
        (tmp_path / "moved.pt").rename(search_run / "checkpoint.pt")
    assert main(["derive", str(search_run)]) == 0 and json.loads(capsys.readouterr().out)["meta"]["epoch"] == 2
