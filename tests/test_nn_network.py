"""The retrain network (paper Fig. 5b): stacking order, K repeats, shapes, drop-path semantics."""

import pytest
import torch

import pvnas
from pvnas.config import FIG5B_STAGES, NETWORK_PRESETS, PAPER_STAGES
from pvnas.errors import ConfigError
from pvnas.nn.layers import drop_path
from pvnas.nn.network import Network, expand_stages
from pvnas.space.genotype import CellGenotype, Genotype
from pvnas.space.ops import CELL_KINDS

GENOTYPE = Genotype.random(1, min_conv=4)


def clip(n=2, t=4, size=32):
    return torch.randn(n, 3, t, size, size)


def test_fig5b_order_with_k_repeats():
    assert expand_stages(FIG5B_STAGES, 1) == ("S-NC", "S-RC", "T-NC", "T-RC")
    assert expand_stages(FIG5B_STAGES, 3) == ("S-NC",) * 3 + ("S-RC",) + ("T-NC",) * 3 + ("T-RC",)
    net = pvnas.build_network(GENOTYPE, "tiny", num_classes=5, channels=4, repeats=2)
    assert [c.kind for c in net.cells] == ["S-NC", "S-NC", "S-RC", "T-NC", "T-NC", "T-RC"]
    for cell in net.cells:  # every cell is wired as its own kind's derived cell
        assert cell.inputs == [j for _, j in GENOTYPE.cells[cell.kind].edges]


def test_paper_presets_layout_l_has_7_cells_m_has_11():
    kinds_l = expand_stages(PAPER_STAGES, NETWORK_PRESETS["L"].repeats)
    kinds_m = expand_stages(PAPER_STAGES, NETWORK_PRESETS["M"].repeats)
    assert kinds_l == ("S-NC", "S-RC", "T-NC", "T-RC", "T-NC", "T-RC", "T-NC")
    assert len(kinds_m) == 11 and kinds_m[:6] == ("S-NC", "S-NC", "S-RC", "T-NC", "T-NC", "T-RC")
    net = pvnas.build_network(GENOTYPE, "M", num_classes=3, channels=4)  # C overridden: cheap to build
    counts = {k: sum(c.kind == k for c in net.cells) for k in CELL_KINDS}
    assert counts == {"S-NC": 2, "S-RC": 1, "T-NC": 6, "T-RC": 2}


def test_channels_double_at_reductions_and_output_shape():
    net = pvnas.build_network(GENOTYPE, "L", num_classes=7, channels=4)
    widths = [cell.out_channels for cell in net.cells]
    assert widths == [16, 32, 32, 64, 64, 128, 128]  # 4 nodes x C, C doubling at each RC
    assert net.classifier.in_features == 128
    net.eval()
    assert net(clip(3, 4, 64)).shape == (3, 7)


def test_tiny_forward_backward_reaches_every_parameter():
    net = pvnas.build_network(GENOTYPE, "tiny", num_classes=5, channels=4)
    net(clip()).logsumexp(1).sum().backward()
    assert not [n for n, p in net.named_parameters() if p.grad is None]


def test_bad_stage_and_repeats_are_config_errors():
    with pytest.raises(ConfigError, match="unknown cell kind 'X-NC'"):
        expand_stages(("S-NC", "X-NC"), 1)
    with pytest.raises(ConfigError, match="repeats"):
        pvnas.build_network(GENOTYPE, "tiny", repeats=0)
    with pytest.raises(ConfigError, match="unknown preset"):
        pvnas.build_network(GENOTYPE, "XL")


def test_drop_path_zeroes_whole_samples_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(64, 3, 2, 2, 2)
    assert drop_path(x, 0.0) is x
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.75)).all(1))
    assert 0 < int((per_sample == 0).all(1).sum()) < 64


def test_drop_path_only_in_training_and_never_on_identity():
    genotype = Genotype({k: CellGenotype((("identity", 0), ("sep_conv_1x3x3", 1)) * 4) for k in CELL_KINDS})
    net = Network(genotype, 4, FIG5B_STAGES, 5, dropout=0.0, drop_path_prob=0.5)
    normal, reduction = net.cells[0], net.cells[1]
    assert normal.droppable == [False, True] * 4  # identity edges are never dropped (DARTS)
    assert reduction.droppable == [True] * 8  # a reduction's "identity" is a FactorizedReduce conv
    x = clip()
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # eval: deterministic
        net.train()
        torch.manual_seed(1)
        a = net(x)
        b = net(x)
        assert not torch.allclose(a, b)  # train with drop_path > 0: random
        net.drop_path_prob = 0.0
        assert torch.equal(net(x), net(x))  # train without drop-path (dropout 0): deterministic


def test_a_drop_path_ramp_does_not_recompile_a_compiled_network():
    """The training loop ramps drop_path_prob every epoch: the forward reads it from a tensor, so dynamo compiles the
    network once (a Python float is a constant to dynamo: one graph per epoch, and a host read per step)."""
    from torch._dynamo.testing import CompileCounter

    from pvnas.nn.fast.policy import generic_kernels

    torch.manual_seed(0)
    net = Network(Genotype.random(1, min_conv=4), 4, ("S-NC",), 5, dropout=0.0, drop_path_prob=0.3)
    counter = CompileCounter()
    forward = torch.compile(net, backend=counter, dynamic=False)
    compiled = []
    with generic_kernels():  # (the kernels a GPU compiles)
        for epoch in range(3):
            net.drop_path_prob = 0.3 * epoch / 3
            forward(clip(2, 2, 8)).sum().backward()
            compiled.append(counter.frame_count)
    assert compiled == [1, 1, 1] and float(net.drop_prob) == pytest.approx(0.2)
