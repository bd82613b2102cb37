"""The fast retrain network (``impl="fast"``) against the literal one (``impl="reference"``), the oracle.

Twins hold the same weights; float64 outputs, input and weight gradients and BatchNorm buffers must agree
to ~1e-10 for every op of the registry, normal and reduction cells (and the cell after a reduction, whose
first input is factorised), both stems, train mode (drop-path and dropout drawn from the same seed) and
eval mode, on odd sizes (7x5 maps, 3 frames).
"""

from __future__ import annotations

import copy

import pytest
import torch

import pvnas
from pvnas.config import NETWORK_PRESETS, override
from pvnas.retrain.evaluate import view_logits
from pvnas.errors import ConfigError
from pvnas.nn.network import Network, network_from_config
from pvnas.space.genotype import CellGenotype, Genotype
from pvnas.space.ops import CELL_KINDS, SPATIAL_OPS, TEMPORAL_OPS


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def one_op(op: str) -> Genotype:
    """Every edge of every cell is ``op`` (spatial cells use sep_conv where ``op`` is temporal-only), inputs
    chosen so that every node reads both cell inputs and an earlier node."""
    inputs = (0, 1, 1, 2, 0, 3, 2, 4)
    spatial = op if op in SPATIAL_OPS else "sep_conv_1x3x3"
    return Genotype({k: CellGenotype(tuple(zip([spatial if k.startswith("S") else op] * 8, inputs)))
                     for k in CELL_KINDS})


def twins(genotype: Genotype, preset: str = "tiny", channels: int = 4, **changes) -> tuple[Network, Network]:
    torch.manual_seed(0)
    cfg = override(NETWORK_PRESETS[preset], channels=channels, **changes)
    ref = network_from_config(genotype, override(cfg, impl="reference"), 5)
    fast = network_from_config(genotype, cfg, 5)
    for m in ref.modules():  # BN statistics away from the identity, so eval mode tests them
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def run(net: Network, x: torch.Tensor, train: bool, seed: int = 3) -> dict[str, object]:
    """Output, input gradient, parameter gradients and buffers after one forward/backward from ``seed``."""
    net.train(train)
    x = x.clone().requires_grad_()
    torch.manual_seed(seed)  # drop-path masks and dropout
    out = net(x)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=out.dtype)).view_as(out))  # a fixed, uneven gradient
    return {
        "output": out.detach(),
        "input grad": x.grad,
        **{f"grad {n}": p.grad for n, p in net.named_parameters()},
        **{f"buffer {n}": b for n, b in net.named_buffers()},
    }


def assert_same(ref: dict[str, object], fast: dict[str, object], tol: float) -> None:
    assert ref.keys() == fast.keys()
    for name, a in ref.items():
        b = fast[name]
        assert a is not None and b is not None, f"{name}: no gradient"
        assert a.shape == b.shape, name
        err = (a.double() - b.double()).abs().max().item()
        assert err <= tol * max(1.0, a.double().abs().max().item()), f"{name}: max abs error {err:.3g}"


def clip(n: int = 2, t: int = 3, h: int = 13, w: int = 9) -> torch.Tensor:
    """Odd sizes: behind the tiny stride-2 stem the first cells see 7x5 maps, after a reduction 4x3, then 2x2."""
    return torch.randn(n, 3, t, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("op", [op for op in TEMPORAL_OPS if op != "zero"])
def test_fast_network_equals_reference_for_every_op(op, train, float64, kernels):
    ref, fast = twins(one_op(op), drop_path=0.3)
    assert_same(run(ref, clip(), train), run(fast, clip(), train), 1e-10)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_paper_layout_stride_4_stem_and_repeats(train, float64, kernels):
    """L's layout (stride-4 stem, 7 cells, temporal cells after temporal reductions) with K = 2 and a mixed
    genotype; 26x18 input: 7x5 maps at the first cell, 1x1 after the last reduction."""
    ref, fast = twins(Genotype.random(3, min_conv=4), "L", channels=4, repeats=2, drop_path=0.3)
    x = clip(2, 3, 26, 18)
    assert_same(run(ref, x, train), run(fast, x, train), 1e-10)


def test_drop_path_really_drops_and_both_drop_the_same_samples(float64):
    """With drop-path 0.5 the train-mode output depends on the seed (so the equality above is not vacuous),
    and a fast net run with the reference's seed matches it while another seed does not."""
    ref, fast = twins(one_op("sep_conv_1x3x3"), drop_path=0.5, dropout=0.0)
    x = clip(4)
    a, b, c = run(ref, x, True, seed=3), run(fast, x, True, seed=3), run(fast, x, True, seed=4)
    assert torch.allclose(a["output"], b["output"], rtol=0, atol=1e-10)
    assert not torch.allclose(b["output"], c["output"])


def test_twins_stay_identical_through_sgd_steps(float64):
    ref, fast = twins(Genotype.random(5, min_conv=4), channels=8)
    opts = [torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4) for net in (ref, fast)]
    x, labels = clip(4, 4, 16, 16), torch.tensor([0, 1, 2, 3])
    for step in range(3):
        for net, opt in zip((ref, fast), opts):
            torch.manual_seed(step)
            net.train()
            torch.nn.functional.cross_entropy(net(x), labels).backward()
            opt.step()
            opt.zero_grad()
    for (name, a), b in zip(ref.state_dict().items(), fast.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), rtol=1e-9, atol=1e-9), name


def test_float32_agrees_within_rounding():
    """float32 at PV-NAS-L's layout: 2D channels-last kernels sum in another order than the Conv3d ones, and
    eval mode folds BatchNorms into convs, so results differ by rounding, ~1e-6 relative per layer; over 7
    cells 1e-4 relative to the largest logit is a bound with margin, and a real bug is O(1)."""
    ref, fast = twins(Genotype.random(1, min_conv=4), "L", channels=8)
    x = clip(2, 4, 64, 64).float()
    for train in (True, False):
        a, b = run(ref.float(), x, train), run(fast.float(), x, train)
        for name in ("output", "input grad"):
            scale = a[name].abs().max()
            assert (a[name] - b[name]).abs().max() <= 1e-4 * scale, f"{name} ({'train' if train else 'eval'})"


@pytest.mark.parametrize("op", ["dil_conv_1x3x3", "conv_3x3x3"])
def test_bf16_autocast_is_as_close_to_float32_as_the_reference(op, kernels):
    """train/eval run the forward under bf16 autocast on CUDA; CPU autocast takes the same code paths (convs
    in bf16, BatchNorm statistics and buffers in float32, custom backward functions fed bf16 gradients).
    Outputs and BatchNorm buffers of the fast path must be about as close to the float32 reference as the
    bf16 reference's are (relative L2 error, 1.5x + 0.05). Gradients only need the reference's dtype and
    to be finite: with bf16's 8-bit mantissa the reference's own BN weight gradients (sums with
    cancellation) differ from float32 by O(1) on this random net, and their exactness is the float64 tests'."""
    x = clip(2, 4, 48, 48).float()
    for train in (True, False):
        ref, fast = twins(one_op(op), "L", channels=8)
        ref16 = copy.deepcopy(ref)
        exact = run(ref.float(), x, train)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = run(ref16.float(), x, train), run(fast.float(), x, train)
        for name, value in exact.items():
            assert b[name].dtype == a[name].dtype, name  # float32 buffers and gradients, as the reference's
            assert torch.isfinite(b[name].double()).all(), name
            if name.startswith("grad") or name == "input grad":
                continue

            def error(other: torch.Tensor) -> float:
                return ((other.double() - value.double()).norm() / value.double().norm().clamp_min(1e-12)).item()

            assert error(b[name]) <= 1.5 * error(a[name]) + 0.05, f"{name} ({train=})"


def test_state_dicts_are_the_same_and_load_both_ways():
    genotype = Genotype.random(2, min_conv=4)
    ref = pvnas.build_network(genotype, "tiny", num_classes=3, impl="reference")
    fast = pvnas.build_network(genotype, "tiny", num_classes=3)
    assert fast.impl == "fast" and ref.impl == "reference"
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in fast.state_dict().items()}
    fast.load_state_dict(ref.state_dict())
    ref.load_state_dict(fast.state_dict())


def test_impl_is_checked_where_it_is_defined():
    with pytest.raises(ConfigError, match=r"impl \(--impl\) must be one of fast, reference, got 'slow'"):
        override(NETWORK_PRESETS["tiny"], impl="slow")
    with pytest.raises(ConfigError, match="impl"):
        pvnas.build_network(Genotype.random(0), "tiny", impl="slow")
    net = pvnas.build_network(Genotype.random(0), "tiny", num_classes=3)
    net.impl = "slow"
    with pytest.raises(ValueError, match="Network.impl must be one of fast, reference, got 'slow'"):
        net(clip(1, 4, 32, 32))


class BatchRecorder(torch.nn.Module):
    """Records the clips per forward; logits: the clip's mean, so results can be checked too."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x.mean(dim=(1, 2, 3, 4))[:, None].repeat(1, 2)


def test_multi_view_test_never_runs_more_clips_than_the_batch_size():
    """``pvnas eval``/``predict`` memory bound: 3 videos x 30 views in chunks of 7 clips."""
    model, views = BatchRecorder(), torch.randn(3, 30, 3, 2, 4, 4)
    logits = view_logits(model, views, 7, torch.device("cpu"))
    assert max(model.batches) == 7 and sum(model.batches) == 90
    torch.testing.assert_close(logits[..., 0], views.mean(dim=(2, 3, 4, 5)))
