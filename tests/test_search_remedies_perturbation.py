"""``pvnas derive --select perturbation`` (DARTS-PT): the known answer of the selection rule, and the command."""

import json
import shutil
from pathlib import Path

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


@pytest.fixture
def search_run(tiny_search_run, tmp_path):
    """A copy of the shared tiny search (a test moves its checkpoint away)."""
    return Path(shutil.copytree(tiny_search_run, tmp_path / "s"))


def test_score_is_the_supernet_with_the_masked_ops_removed(tiny_search_run):
    """On the run's own supernet and clips: an all-ones mask scores the plain forward; removing every op of one
    kind's edges (a zero mask) changes the logits; removing one op equals scaling its weight to 0 in the mixture."""
    model, record, cfg = perturbation.load_supernet(tiny_search_run)
    clips, labels = perturbation.scoring_batch(record["data"], cfg, 2)
    ones = {k: torch.ones(EDGES_PER_CELL, len(ops_for(k))) for k in CELL_KINDS}
    with torch.no_grad():
        plain = model(clips)
        assert torch.equal(model(clips, op_mask=ones), plain)
        zero = {**ones, "S-NC": torch.zeros(EDGES_PER_CELL, len(ops_for("S-NC")))}
        assert not torch.allclose(model(clips, op_mask=zero), plain)
    acc, neg_loss = perturbation.score(model, clips, labels, ones)
    assert acc == float((plain.argmax(1) == labels).float().mean())
    assert neg_loss == pytest.approx(-float(torch.nn.functional.cross_entropy(plain, labels)))


def test_derive_by_perturbation_writes_a_valid_genotype(search_run, tmp_path, capsys, monkeypatch):
    """The command end to end: the run's supernet in eval mode and its clips reach the selection (spied: its
    ~400 real scorings are the known-answer test's subject), its cells become the written genotype."""
    seen = []

    def spy(model, clips, labels):
        seen.append((model.training, len(clips)))
        ones = {k: torch.ones(EDGES_PER_CELL, len(ops_for(k))) for k in CELL_KINDS}
        perturbation.score(model, clips, labels, ones)  # one real scoring on what the command loaded
        return Genotype.random(7).cells

    monkeypatch.setattr(perturbation, "select", spy)
    out = tmp_path / "g.json"
    assert main(["derive", str(search_run), "--select", "perturbation", "--videos", "2", "-o", str(out)]) == 0
    genotype = Genotype.load(out)
    assert seen == [(False, 2)] and genotype.cells == Genotype.random(7).cells
    assert genotype.meta["selection"] == "perturbation" and genotype.meta["epoch"] == 2
    assert genotype.meta["scored_on"] == "2 training clips"
    assert main(["derive", str(search_run), "--select", "perturbation", "--epoch", "1"]) == 2
    assert "only the last epoch" in capsys.readouterr().err
    assert main(["derive", str(search_run), "--select", "nope"]) == 2
    (search_run / "checkpoint.pt").unlink()
    assert main(["derive", str(search_run), "--select", "perturbation"]) == 2
    assert main(["derive", str(search_run)]) == 0 and json.loads(capsys.readouterr().out)["meta"]["epoch"] == 2
