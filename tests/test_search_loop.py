"""Algorithm 1: the alternation, the schedules, and a real 2-epoch search's run directory."""

import json
import math

import pytest
import torch
import yaml

from pvnas.config import SEARCH_PRESETS, override
from pvnas.nn.supernet import ReferenceCell, Supernet
from pvnas.search.loop import make_state, run_search, search_step
from pvnas.lr_schedules import search_lr
from pvnas.search.alpha_schedule import ConvergenceMonitor, alpha_lr
from pvnas.space.genotype import Genotype
from pvnas.space.ops import CELL_KINDS, ops_for

TINY = override(SEARCH_PRESETS["tiny"], channels=4, batch_size=4)


def snapshot(params):
    return [p.detach().clone() for p in params]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_one_iteration_changes_alpha_only_in_alpha_step_and_w_only_in_w_step():
    torch.manual_seed(0)
    net = Supernet(4, 8, cell=ReferenceCell)
    state = make_state(net, TINY)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    seen = {}
    a_step, w_step = state.alpha_opt.step, state.weight_opt.step

    def alpha_step(*args, **kw):
        seen["before_a"] = (snapshot(arch), snapshot(weights))
        out = a_step(*args, **kw)
        seen["after_a"] = (snapshot(arch), snapshot(weights))
        seen["w_grads_at_a"] = [p.grad for p in weights]
        return out

    def weight_step(*args, **kw):
        seen["before_w"] = (snapshot(arch), snapshot(weights))
        seen["a_grads_at_w"] = [p.grad for p in arch]
        out = w_step(*args, **kw)
        seen["after_w"] = (snapshot(arch), snapshot(weights))
        return out

    state.alpha_opt.step, state.weight_opt.step = alpha_step, weight_step
    clips, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 3])
    search_step(state, clips, labels)
    a0, w0 = seen["before_a"]
    a1, w1 = seen["after_a"]
    a2, w2 = seen["before_w"]
    a3, w3 = seen["after_w"]
    assert not same(a0, a1) and same(w0, w1)  # alpha step moves alpha only
    assert same(a1, a2) and same(w1, w2)  # nothing between the steps
    assert same(a2, a3) and not same(w2, w3)  # weight step moves weights only
    assert all(g is None for g in seen["w_grads_at_a"])  # no weight gradient computed for the alpha step
    assert all(g is None for g in seen["a_grads_at_w"])  # and no alpha gradient for the weight step


def test_weight_step_uses_the_new_alpha():
    """w_t is computed with alpha_t: replaying the weight step by hand with alpha_t gives the same w."""
    torch.manual_seed(0)
    net = Supernet(4, 8, cell=ReferenceCell)
    cfg = override(TINY, grad_clip=None, w_momentum=0.0, w_weight_decay=0.0)
    state = make_state(net, cfg)
    clips, labels = torch.randn(4, 3, 4, 32, 32), torch.tensor([0, 1, 2, 3])
    twin = Supernet(4, 8, cell=ReferenceCell)
    twin.load_state_dict(net.state_dict())
    search_step(state, clips, labels)
    with torch.no_grad():  # alpha_t and the BN statistics of after the alpha step, then a plain SGD step
        for kind in twin.alphas:
            twin.alphas[kind].copy_(net.alphas[kind])
    twin(clips)  # the alpha step's forward updated BN running stats in `net`; mirror it
    loss = torch.nn.functional.cross_entropy(twin(clips), labels)
    grads = torch.autograd.grad(loss, twin.weight_parameters())
    expected = [p - cfg.w_lr * g for p, g in zip(twin.weight_parameters(), grads)]
    for got, want in zip(net.weight_parameters(), expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_each_forward_tracks_only_the_parameters_its_step_differentiates():
    """The alpha step's forward sees frozen weights and the weight step's frozen alphas (so the fast cell's
    custom backward functions skip unwanted gradients); every flag is back afterwards."""
    torch.manual_seed(0)
    net = Supernet(4, 8)
    state = make_state(net, TINY)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    seen = []
    net.register_forward_pre_hook(
        lambda m, inp: seen.append((all(a.requires_grad for a in arch), any(w.requires_grad for w in weights)))
    )
    search_step(state, torch.randn(4, 3, 4, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert seen == [(True, False), (False, True)]
    assert all(p.requires_grad for p in net.parameters())


def lrs(cfg, total, decays=0):
    return [search_lr(cfg, t / total, decays) for t in range(total)]


@pytest.mark.parametrize("epochs,steps_per_epoch", [(5, 10), (80, 234)])
def test_step_schedule_decays_at_the_same_fractions_for_any_length(epochs, steps_per_epoch):
    """The paper's epochs 20/40/60 of 80, wherever a run of this length puts them; never more than 3 decays."""
    total = epochs * steps_per_epoch
    lr = lrs(override(TINY, schedule="step"), total)
    drops = [t for t in range(1, total) if lr[t] < lr[t - 1]]
    assert drops == [math.ceil(total * f) for f in (0.25, 0.5, 0.75)]
    assert lr[0] == 0.1 and lr[-1] == pytest.approx(1e-4)
    if epochs == 80:
        assert [t // steps_per_epoch for t in drops] == [20, 40, 60] and all(t % steps_per_epoch == 0 for t in drops)


def test_constant_cosine_and_converge_schedules():
    assert set(lrs(override(TINY, schedule="constant"), 50)) == {0.1}
    cos = lrs(override(TINY, schedule="cosine"), 100)
    assert cos[0] == pytest.approx(0.1) and cos[50] == pytest.approx((0.1 + 1e-4) / 2) and cos == sorted(cos, reverse=True)
    conv = override(TINY, schedule="converge")
    assert search_lr(conv, 0.9, decays=0) == 0.1 and search_lr(conv, 0.1, decays=2) == pytest.approx(1e-3)


def test_alpha_lr_budget_is_spread_over_the_alpha_updates():
    """A short run moves its alphas as far as a long one: lr x (steps after the warm-up) = the budget."""
    cfg = override(TINY, a_lr_budget=12.0, a_warmup=0.5)
    assert alpha_lr(cfg, 800) == pytest.approx(12 / 400) and alpha_lr(cfg, 80) == pytest.approx(12 / 40)
    assert alpha_lr(override(cfg, a_warmup=0.0), 800) == pytest.approx(12 / 800)
    assert alpha_lr(override(TINY, a_lr=0.01), 800) == 0.01  # no budget: the lr as given


def _alphas(value):
    return {kind: value[:, : len(ops_for(kind))].clone() for kind in CELL_KINDS}


def test_convergence_monitor_waits_for_settled_alphas_and_decays_at_most_three_times():
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(14, 8, generator=gen)

    def run(trajectory, steps=400, window=20):
        monitor = ConvergenceMonitor(window, tol=0.1)
        decay_steps = [t for t in range(steps) if monitor.observe(t, _alphas(trajectory(t)))]
        return monitor, decay_steps

    # pure noise (a random walk) never converges: its last window is a large share of its displacement
    walk = torch.cumsum(0.01 * torch.randn(400, 14, 8, generator=gen), dim=0)
    assert run(lambda t: walk[t])[1] == []
    # steady drift with a moving derived genotype never converges either
    assert run(lambda t: direction * (t / 50) * torch.sin(torch.tensor(t / 7.0)))[1] == []
    # drift that settles at step 200: decays only after it, one window of convergence apart, at most 3
    monitor, decays = run(lambda t: direction * min(t, 200) / 200)
    assert len(decays) == 3 and decays[0] > 200 and decays == sorted(decays) and monitor.decays == 3
    assert all(b - a >= 20 for a, b in zip(decays, decays[1:]))
    # its state round-trips (checkpoint)
    twin = ConvergenceMonitor(20, 0.1)
    twin.load_state_dict(monitor.state_dict())
    assert twin.state_dict()["history"] == monitor.state_dict()["history"] and twin.decays == 3


def test_two_epoch_search_writes_every_file(tmp_path):
    run = tmp_path / "run"
    cfg = override(TINY, epochs=2, seed=3, schedule="step")  # (step: known decay points; converge is tested above)
    genotype = run_search(override(cfg, impl="reference"), "synthetic:16", run, preset="tiny").genotype
    for name in ("genotype.json", "checkpoint.pt", "metrics.jsonl", "config.yaml", "alphas/epoch_001.pt", "alphas/epoch_002.pt"):
        assert (run / name).exists(), name
    assert Genotype.load(run / "genotype.json") == genotype
    assert genotype.meta["epoch"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert set(r["entropy"]) == set(r["param_free_share"]) == {"S-NC", "S-RC", "T-NC", "T-RC"}
        Genotype.from_dict(r["genotype"])
    # 4 steps per epoch: decays before steps 2, 4, 6 of 8; a record holds the lr of its epoch's last step
    assert [r["lr"] for r in records] == pytest.approx([0.01, 1e-4])
    assert all(set(r["entropy_drop"]) == set(CELL_KINDS) for r in records)
    alphas = torch.load(run / "alphas/epoch_002.pt")
    assert {k: tuple(v.shape) for k, v in alphas.items()} == {"S-NC": (14, 6), "S-RC": (14, 6), "T-NC": (14, 8), "T-RC": (14, 8)}
    assert Genotype.derive(alphas).cells == genotype.cells
    assert not torch.equal(alphas["T-NC"], torch.load(run / "alphas/epoch_001.pt")["T-NC"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["search"]["epochs"] == 2 and config["data"] == "synthetic:16"
