"""The reference supernet (literal DARTS MixedOp in 3D): structure, forward/backward, alphas."""

import pytest
import torch

import pvnas
from pvnas.nn.mixed import MixedOp
from pvnas.nn.supernet import ReferenceCell, Supernet
from pvnas.space.ops import CELL_KINDS, SPATIAL_OPS, TEMPORAL_OPS


def tiny_clip(n=2, t=4, size=32):
    return torch.randn(n, 3, t, size, size)


def test_supernet_structure_and_parameter_split():
    net = Supernet(channels=4, num_classes=5, cell=ReferenceCell)
    assert list(net.cells) == list(CELL_KINDS)
    for kind, cell in net.cells.items():
        assert len(cell.edges) == 14
        assert all(isinstance(e, MixedOp) for e in cell.edges)
        n_ops = len(TEMPORAL_OPS if kind.startswith("T") else SPATIAL_OPS)
        assert net.alphas[kind].shape == (14, n_ops)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == 4
    ids_a, ids_w = {id(p) for p in arch}, {id(p) for p in weights}
    assert not ids_a & ids_w
    assert ids_a | ids_w == {id(p) for p in net.parameters()}


def test_reference_forward_backward_reaches_every_alpha_and_weight():
    net = Supernet(channels=4, num_classes=5, cell=ReferenceCell)
    logits = net(tiny_clip())
    assert logits.shape == (2, 5)
    logits.logsumexp(1).sum().backward()
    for kind, a in net.alphas.items():
        assert a.grad is not None and torch.count_nonzero(a.grad[:, 1:]) > 0, kind
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing


def test_reduction_cells_halve_space_not_time():
    net = Supernet(channels=4, num_classes=5, cell=ReferenceCell)
    shapes = {}
    s0 = s1 = net.stem(tiny_clip(t=4, size=32))
    for kind, cell in net.cells.items():
        s0, s1 = s1, cell(s0, s1, torch.softmax(net.alphas[kind], -1))
        shapes[kind] = tuple(s1.shape[1:])
    assert shapes == {"S-NC": (16, 4, 16, 16), "S-RC": (32, 4, 8, 8), "T-NC": (32, 4, 8, 8), "T-RC": (64, 4, 4, 4)}


def test_mixed_op_is_the_softmax_weighted_sum():
    op = MixedOp(4, 1, TEMPORAL_OPS).eval()
    x = torch.randn(1, 4, 3, 8, 8)
    w = torch.softmax(torch.randn(len(TEMPORAL_OPS)), 0)
    expected = sum(wi * o(x) for wi, o in zip(w, op.ops))
    torch.testing.assert_close(op(x, w), expected)
    one_hot = torch.zeros(len(TEMPORAL_OPS))
    one_hot[TEMPORAL_OPS.index("identity")] = 1.0
    torch.testing.assert_close(op(x, one_hot), x)


def test_build_supernet_api_and_genotype():
    net = pvnas.build_supernet(preset="tiny", num_classes=7, channels=4, impl="reference")
    assert net(tiny_clip(n=1)).shape == (1, 7)
    g = net.genotype()
    g.validate()
    assert g.meta["source"] == "search"


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(pvnas.errors.ConfigError, match="unknown preset 'huge'; expected one of: search, tiny"):
        pvnas.build_supernet(preset="huge")
