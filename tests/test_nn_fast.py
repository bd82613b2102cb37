"""The fast supernet cell against the literal reference (partial channels: tests/test_nn_partial_channels.py)."""


import pytest
import torch
import torch.nn.functional as F

import pvnas
from pvnas.config import SEARCH_PRESETS, override
from pvnas.errors import ConfigError
from pvnas.nn.fast import FastCell
from pvnas.nn.fast.cpu.kernels import AvgPool3x3, DilatedDepthwise, separable_3x3
from pvnas.nn.fast.layout import pc_join
from pvnas.nn.fast.shared import SharedInput
from pvnas.nn.supernet import ReferenceCell, Supernet, supernet_from_config
from pvnas.search.remedies.skip_noise import SkipNoise
from pvnas.search.loop import make_state, search_step
from pvnas.space.genotype import NODES
from pvnas.space.ops import CELL_KINDS


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def twins(channels=4, classes=5):
    """A reference supernet and a fast one holding the very same weights and buffers.

    With 4 channels the fast cells batch 4, 2, 2 and 1 edges per op: both code paths are checked.
    """
    torch.manual_seed(0)
    ref = Supernet(channels, classes, cell=ReferenceCell)
    fast = Supernet(channels, classes, cell=FastCell)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def clip(n=2, t=4, size=16):
    return torch.randn(n, 3, t, size, size, generator=torch.Generator().manual_seed(1))


def assert_close(a, b, what, tol=1e-10):
    assert a.shape == b.shape, what
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, a.abs().max().item()), f"{what}: max abs error {err:.3g}"


def cell_inputs(net, x):
    """The (s0, s1) each cell of ``net`` sees on clip ``x``, detached (in eval mode: no buffer changes)."""
    net.eval()
    with torch.no_grad():
        s0 = s1 = net.stem(x)
        inputs = {}
        for kind, cell in net.cells.items():
            inputs[kind] = (s0, s1)
            s0, s1 = s1, cell(s0, s1, torch.softmax(net.alphas[kind], -1))
    net.train()
    return inputs


@pytest.mark.parametrize("size", [16, 14])  # 14: odd sizes after the stem (padding paths)
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_fast_cell_equals_reference_cell(kind, size, kernels):
    ref, fast = twins()
    s0, s1 = cell_inputs(ref, clip(size=size))[kind]
    alpha = torch.randn_like(ref.alphas[kind])
    outs, grads = [], []
    for net in (ref, fast):
        a = alpha.clone().requires_grad_()
        x0, x1 = s0.clone().requires_grad_(), s1.clone().requires_grad_()
        out = net.cells[kind](x0, x1, torch.softmax(a, -1))
        out.backward(torch.cos(torch.arange(out.numel()).view_as(out).to(out)))  # any fixed, uneven gradient
        outs.append(out)
        grads.append([a.grad, x0.grad, x1.grad] + [p.grad for p in net.cells[kind].parameters()])
    assert_close(outs[0], outs[1], f"{kind} output")
    for i, (g_ref, g_fast) in enumerate(zip(*grads)):
        assert_close(g_ref, g_fast, f"{kind} gradient #{i}")
    for (name, b_ref), b_fast in zip(ref.cells[kind].state_dict().items(), fast.cells[kind].state_dict().values()):
        assert_close(b_ref.double(), b_fast.double(), f"{kind} {name}")


def test_fast_supernet_equals_reference_train_and_eval(kernels):
    ref, fast = twins()
    x = clip()
    for mode in ("train", "eval"):
        ref.train(mode == "train"), fast.train(mode == "train")
        logits = [net(x) for net in (ref, fast)]
        assert_close(logits[0], logits[1], f"{mode} logits")
        for net, out in zip((ref, fast), logits):
            net.zero_grad()
            F.cross_entropy(out, torch.tensor([1, 3])).backward()
        for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
            assert_close(p_ref.grad, p_fast.grad, f"{mode} grad of {name}")


def test_search_step_keeps_the_twins_identical(kernels):
    ref, fast = twins()
    cfg = SEARCH_PRESETS["tiny"]
    states = [make_state(net, cfg) for net in (ref, fast)]
    x, y = clip(), torch.tensor([0, 4])
    for _ in range(2):
        for state in states:
            search_step(state, x, y)
    for (name, v_ref), v_fast in zip(ref.state_dict().items(), fast.state_dict().values()):
        assert_close(v_ref.double(), v_fast.double(), name, tol=1e-8)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_skip_noise_is_the_same_in_both_and_only_in_training(kernels, train):
    """NoisyDARTS: with one seed both implementations draw the same noise per node (output and every gradient
    agree); in eval mode there is none; in training it changes the output."""
    ref, fast = twins()
    for net in (ref, fast):
        net.perturbations = [SkipNoise(0.5, SEARCH_PRESETS["demo"])]
        net.train(train)
    x, y = clip(), torch.tensor([1, 3])
    logits = []
    for net in (ref, fast):
        torch.manual_seed(7)
        out = net(x)
        F.cross_entropy(out, y).backward()
        logits.append(out)
    assert_close(logits[0], logits[1], "logits")
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        assert_close(p_ref.grad, p_fast.grad, f"grad of {name}")
    fast.perturbations = []
    torch.manual_seed(7)
    quiet = fast(x)
    assert torch.equal(quiet, logits[1]) != train


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_dilated_depthwise_matches_conv2d(size, multiplier):
    """Its hand-written backward (flipped-filter input gradient, pixel-phase weight gradient) is exact."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3 * multiplier, 1, 3, 3, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: DilatedDepthwise.apply(x, w, 2, 3), (x, w))
    assert_close(DilatedDepthwise.apply(x, w, 2, 3), F.conv2d(x, w, None, 1, 2, 2, 3), "forward")


@pytest.mark.parametrize("size", [7, 8])
def test_diagonal_phases_are_strided_pixels_with_zero_padding(size):
    x = torch.randn(2, 3, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
    src = SharedInput(x)
    padded = F.pad(x, (0, 1, 0, 1))
    for i in range(2):
        assert_close(src.phase(2, i), padded[:, :, i::2, i::2][:, :, : (size + 1) // 2, : (size + 1) // 2], f"phase {i}")
    assert torch.autograd.gradcheck(lambda x: torch.cat([SharedInput(x).phase(2, i) for i in range(2)]), (x,))


@pytest.mark.parametrize("size", [(7, 6), (1, 4), (2, 1)])
def test_separable_pools_equal_pool2d(size):
    x = torch.randn(2, 5, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    x[0, 0, :2, :2] = 1.5  # ties
    assert torch.equal(separable_3x3(x, torch.maximum), F.max_pool2d(x, 3, 1, 1))
    assert_close(AvgPool3x3.apply(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), "avg pool")
    assert torch.autograd.gradcheck(AvgPool3x3.apply, (x.requires_grad_(),))


def test_state_dicts_are_interchangeable():
    ref, fast = twins()
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in fast.state_dict().items()}


def test_build_supernet_defaults_to_fast():
    net = pvnas.build_supernet(channels=16, num_classes=10)
    assert all(isinstance(cell, FastCell) for cell in net.cells.values())
    assert isinstance(pvnas.build_supernet(channels=4, num_classes=10, impl="reference").cells["S-NC"], ReferenceCell)


def test_partial_channels_keep_shapes_and_reach_every_alpha():
    exact = pvnas.build_supernet(channels=8, num_classes=5)
    pc = pvnas.build_supernet(channels=8, num_classes=5, partial_channels=4)
    x = clip()
    assert pc(x).shape == exact(x).shape == (2, 5)
    pc(x).logsumexp(1).sum().backward()
    for kind, a in pc.alphas.items():
        assert a.grad is not None and bool((a.grad != 0).all()), kind
    assert all(p.grad is not None for p in pc.weight_parameters())


def test_pc_join_is_pc_darts_channel_shuffle():
    mixed, bypass = torch.arange(2 * 3), torch.arange(6, 24)
    cat = torch.cat([mixed, bypass])
    shuffled = cat.view(4, 6).t().reshape(24)  # PC-DARTS channel_shuffle(cat, groups=4) on channels
    assert torch.equal(pc_join(mixed, bypass, 4), shuffled)
    assert pc_join(mixed, bypass, 4)[:8].tolist() == [0, 6, 12, 18, 1, 7, 13, 19]


def test_partial_channel_config_errors():
    cfg = SEARCH_PRESETS["tiny"]
    with pytest.raises(ConfigError, match="divide"):
        override(cfg, channels=6, partial_channels=4)
    with pytest.raises(ConfigError, match="divide"):
        override(cfg, partial_channels=0)
    for option in ({"partial_channels": 2}, {"edge_norm": True}):
        with pytest.raises(ConfigError, match="need the fast supernet"):
            override(cfg, impl="reference", **option)


def test_edge_norm_betas_are_arch_parameters_and_rank_edges():
    net = supernet_from_config(override(SEARCH_PRESETS["tiny"], channels=4, edge_norm=True), 5, ())
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == 8 and all(any(b is p for p in arch) for b in net.betas.values())
    assert not {id(p) for p in arch} & {id(p) for p in weights}
    assert {id(p) for p in arch} | {id(p) for p in weights} == {id(p) for p in net.parameters()}
    net(clip()).logsumexp(1).sum().backward()
    assert all(b.grad is not None and bool((b.grad != 0).all()) for b in net.betas.values())
    # equal alphas: only the betas decide which two inputs each node keeps
    with torch.no_grad():
        for kind in CELL_KINDS:
            net.alphas[kind].zero_()
            net.alphas[kind][:, 4] = 1.0  # sep_conv everywhere
            net.betas[kind].zero_()
            start = 0
            for node in range(2, 2 + NODES):
                net.betas[kind][start + node - 1] = net.betas[kind][start + node - 2] = 5.0  # the last two inputs
                start += node
    for cell in net.genotype().cells.values():
        assert [j for _, j in cell.edges] == [0, 1, 1, 2, 2, 3, 3, 4]


@pytest.mark.parametrize("stride,dilation,multiplier,size", [(1, 1, 1, 7), (2, 1, 2, 8), (1, 2, 1, 8), (1, 2, 2, 7),
                                                             (2, 1, 1, 7)])
def test_depthwise_by_shifts_equals_conv2d(stride, dilation, multiplier, size):
    """The compiled GPU path's depthwise conv (shifted, scaled views): output and gradients of F.conv2d's."""
    from pvnas.nn.fast.generic import depthwise_by_shifts

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size + 1, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3 * multiplier, 1, 3, 3, generator=g, requires_grad=True)
    pad = (dilation, dilation)
    outs = [f(x, w, (stride, stride), pad, dilation, 3) for f in
            (lambda *a: F.conv2d(a[0], a[1], None, a[2], a[3], a[4], a[5]), depthwise_by_shifts)]
    grads = [torch.autograd.grad(o, (x, w), torch.cos(torch.arange(o.numel()).view_as(o).to(o))) for o in outs]
    assert_close(outs[0], outs[1], "output")
    for a, b in zip(*grads):
        assert_close(a, b, "gradient")


def test_fast_supernet_with_shifted_depthwise_equals_reference():
    from pvnas.nn.fast.policy import generic_kernels, shifted_depthwise

    ref, fast = twins()
    x = clip()
    with generic_kernels(), shifted_depthwise():
        logits = [net(x) for net in (ref, fast)]
        for out in logits:
            F.cross_entropy(out, torch.tensor([1, 3])).backward()
    assert_close(logits[0], logits[1], "logits")
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        assert_close(p_ref.grad, p_fast.grad, f"grad of {name}")
