"""Steps that never wait for the device: no host read inside a search or train step, a non-finite loss skips the
update on the device exactly as a skipped step, and the run loop reads the steps' results a few at a time."""

import math

import pytest
import torch
import torch.nn.functional as F

import pvnas.search.loop as loop
from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, override
from pvnas.nn.network import Network
from pvnas.nn.supernet import supernet_from_config
from pvnas.retrain.train import make_optimizer, train_step
from pvnas.runtime import steps
from pvnas.search.loop import make_state, search_step
from pvnas.search.remedies import alpha_terms, remedies_of
from pvnas.space.genotype import Genotype

HOST_READS = ("item", "__float__", "__int__", "__bool__", "cpu", "tolist", "numpy")


@pytest.fixture
def host_reads(monkeypatch):
    """Counts the calls of every Tensor method that reads a value on the host (a device sync on a GPU)."""
    calls: list[str] = []
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def demo_search(channels=4):
    """A tiny search state with the demo preset's remedies (op dropout, skip noise, the cap) and beta decay."""
    cfg = override(SEARCH_PRESETS["demo"], channels=channels, remedies={**SEARCH_PRESETS["demo"].remedies,
                                                                        "beta_decay": 1.0})
    torch.manual_seed(0)
    remedies = remedies_of(cfg)
    model = supernet_from_config(cfg, 5, remedies)
    return make_state(model, cfg), remedies


def batch(n=2, size=16):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 4, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_search_and_train_steps_read_nothing_on_the_host(host_reads):
    state, remedies = demo_search()
    clips, labels = batch()
    for update_alpha in (False, True, True):
        loss, acc, finite = search_step(state, clips, labels, update_alpha=update_alpha,
                                        alpha_terms=lambda: alpha_terms(remedies, state.model, 0.9))
    assert host_reads == [] and loss.dim() == acc.dim() == finite.dim() == 0 and finite.dtype == torch.bool
    torch.manual_seed(0)
    net = Network(Genotype.random(1, min_conv=4), 4, ("S-NC", "S-RC"), 5, drop_path_prob=0.2)
    optimizer = make_optimizer(net, NETWORK_PRESETS["tiny"])
    net.train()
    for _ in range(3):
        loss, acc, finite = train_step(net, optimizer, clips, labels, torch.device("cpu"))
    assert host_reads == [] and loss.dim() == acc.dim() == finite.dim() == 0


def snapshot(params, optimizer):
    """Copies of ``params`` and of their state in ``optimizer``."""
    return [p.detach().clone() for p in params], [{k: v.clone() for k, v in optimizer.state[p].items()} for p in params]


def equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a[1], b[1]))


def poison(monkeypatch, which):
    """Make the ``which``-th cross-entropy of the next search step (1: the alpha loss, 2: the weight loss) NaN."""
    real, calls = F.cross_entropy, []

    def loss(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs) * (math.nan if len(calls) == which else 1.0)

    monkeypatch.setattr(loop.F, "cross_entropy", loss)


def test_a_non_finite_alpha_loss_skips_both_updates_as_if_the_step_never_ran(monkeypatch):
    """Parameters and both optimizers' state (Adam's step count, the momentum buffers, even where the skipped step
    is the first: the fused kernel's first-step buffers are uninitialised memory) end as they were, so the next
    good step equals a twin's first step that never saw the bad batch."""
    clips, labels = batch()
    state, _ = demo_search()
    twin, _ = demo_search()
    before = [p.detach().clone() for p in state.model.parameters()]
    with monkeypatch.context() as m:
        poison(m, 1)
        *_, finite = search_step(state, clips, labels)
    assert not bool(finite) and all(torch.equal(p, q) for p, q in zip(state.model.parameters(), before))
    for net in (state, twin):
        torch.manual_seed(6)  # (the same op-dropout and skip-noise draws)
        search_step(net, clips, labels)
    for params in (lambda s: (s.model.arch_parameters(), s.alpha_opt), lambda s: (s.model.weight_parameters(),
                                                                                    s.weight_opt)):
        assert equal(snapshot(*params(state)), snapshot(*params(twin)))


def test_a_non_finite_weight_loss_skips_the_weight_update_only(monkeypatch):
    clips, labels = batch()
    state, _ = demo_search()
    search_step(state, clips, labels)  # (momentum buffers and Adam state exist)
    arch, weights = state.model.arch_parameters(), state.model.weight_parameters()
    alphas, before = [a.detach().clone() for a in arch], snapshot(weights, state.weight_opt)
    with monkeypatch.context() as m:
        poison(m, 2)
        *_, finite = search_step(state, clips, labels)
    assert not bool(finite) and equal(snapshot(weights, state.weight_opt), before)
    assert not all(torch.equal(a, b) for a, b in zip(arch, alphas))  # the alpha update ran


def test_an_optimizer_of_an_earlier_checkpoint_steps_on_the_device_too():
    """Optimizer state written before the optimizers were fused loads unfused (and Adam's step counts on the CPU):
    the first step makes them fused, and a skipped step still changes nothing."""
    p = torch.nn.Parameter(torch.randn(4))
    old = torch.optim.Adam([p], lr=0.1, betas=(0.0, 0.999))
    p.grad = torch.ones(4)
    old.step()
    new = torch.optim.Adam([p], lr=0.1, betas=(0.0, 0.999), fused=True)
    new.load_state_dict(old.state_dict())
    assert not new.param_groups[0]["fused"]
    before = p.detach().clone(), new.state[p]["exp_avg_sq"].clone()
    p.grad = torch.full((4,), math.nan)
    steps.step_if(new, torch.tensor(False))
    assert torch.equal(p, before[0]) and torch.equal(new.state[p]["exp_avg_sq"], before[1])
    assert new.param_groups[0]["fused"] and float(new.state[p]["step"]) == 1.0


def test_the_run_loop_reads_the_steps_results_a_few_at_a_time(tmp_path, monkeypatch):
    """A 1-epoch search of 24 steps: the loop reads the results twice (after step 20 and at the epoch's end), and
    the step hook reads nothing but the alphas when the converge monitor looks at them (every window of steps)."""
    import sys

    from pvnas.runtime.run import __file__ as run_file
    from pvnas.search.loop import run_search

    reads = {"loop": 0, "step": 0}
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, **kwargs):
            frame = sys._getframe(1)
            reads["loop"] += frame.f_code.co_filename == run_file
            while frame is not None:
                if frame.f_code.co_name == "step" and frame.f_code.co_filename == loop.__file__:
                    reads["step"] += 1
                    break
                frame = frame.f_back
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    due = []
    monkeypatch.setattr(loop.ConvergenceMonitor, "observe", lambda self, step, alphas: due.append(step) or False)
    cfg = override(SEARCH_PRESETS["tiny"], channels=4, epochs=1, batch_size=2, workers=0)
    run_search(cfg, "synthetic:48", tmp_path / "run")
    assert 24 % steps.READ_EVERY and reads["loop"] == 24 // steps.READ_EVERY + 1
    assert due and reads["step"] == 4 * len(due)  # (the monitor's alpha_dict when due: one read per cell kind)
