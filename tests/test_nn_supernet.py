"""The reference supernet (literal DARTS MixedOp in 3D): structure, forward/backward, alphas."""

import pytest
import torch

import pvnas
from pvnas.config import SEARCH_PRESETS, override
from pvnas.nn.fast import FastCell
from pvnas.nn.mixed import MixedOp
from pvnas.nn.supernet import ReferenceCell, Supernet, supernet_from_config
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


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_search_config_skip_noise_reaches_the_supernet(impl):
    """The demo preset searches with NoisyDARTS' skip noise: a supernet built from its config perturbs training
    forwards (and only those) relative to the same weights without noise."""
    cfg = override(SEARCH_PRESETS["demo"], channels=4, op_dropout=0.0, impl=impl)
    assert cfg.skip_noise > 0
    noisy = supernet_from_config(cfg, 5)
    clean = supernet_from_config(override(cfg, skip_noise=0.0), 5)
    clean.load_state_dict(noisy.state_dict())
    x = tiny_clip(n=2)
    outs = {}
    for mode in ("eval", "train"):  # eval first: training forwards move the BatchNorm running statistics
        for name, net in (("noisy", noisy), ("clean", clean)):
            net.train(mode == "train")
            torch.manual_seed(0)
            outs[mode, name] = net(x)
    assert not torch.allclose(outs["train", "noisy"], outs["train", "clean"])
    torch.testing.assert_close(outs["eval", "noisy"], outs["eval", "clean"])


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(pvnas.errors.ConfigError, match="unknown preset 'huge'; expected one of: search, tiny"):
        pvnas.build_supernet(preset="huge")


def test_op_dropout_keeps_one_op_of_each_group_and_is_unbiased():
    """DropNAS' grouped operation dropout: every edge keeps a parameter-free and a parameterised op, kept weights
    are scaled so the expected mixture is unchanged, and `zero` is never touched."""
    from pvnas.nn.supernet import op_dropout_mask
    from pvnas.space.ops import CONV_OPS, PARAMETER_FREE, TEMPORAL_OPS

    torch.manual_seed(0)
    masks = torch.stack([op_dropout_mask(TEMPORAL_OPS, 14, 0.6) for _ in range(400)])
    free = [i for i, op in enumerate(TEMPORAL_OPS) if op in PARAMETER_FREE - {"zero"}]
    conv = [i for i, op in enumerate(TEMPORAL_OPS) if op in CONV_OPS]
    assert (masks[..., free] > 0).any(-1).all() and (masks[..., conv] > 0).any(-1).all()
    assert (masks[..., 0] == 1).all() and set(masks[..., 1:].unique().tolist()) == {0.0, 1 / 0.4}
    # dropped at about the rate asked for (a little less: the group guarantee restores some)
    dropped = (masks[..., 1:] == 0).float().mean()
    assert 0.5 < dropped < 0.6


def test_op_dropout_applies_in_training_only_and_alike_in_both_cell_implementations():
    torch.manual_seed(0)
    fast = Supernet(4, 5, cell=FastCell, op_dropout=0.5).double()
    reference = Supernet(4, 5, cell=ReferenceCell, op_dropout=0.5).double()
    reference.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 3, 12, 12, dtype=torch.float64)
    outs = []
    for net in (fast, reference):
        torch.manual_seed(7)  # the same masks
        outs.append(net(x))
    assert torch.allclose(outs[0], outs[1], atol=1e-10)
    torch.manual_seed(8)
    assert not torch.allclose(fast(x), outs[0])  # other masks, other mixture
    fast.eval()
    assert torch.equal(fast(x), fast(x))
