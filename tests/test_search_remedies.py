"""The search remedies behind one seam (pvnas.search.remedies): each does what its paper says and only that, the
seam changed no number (a tiny search with every remedy on equals the known answer recorded before it), and a new
remedy needs its own class plus one registry line (config, CLI, forwards, alpha loss and derivation pick it up)."""

import importlib
import json
from pathlib import Path

import pytest
import torch
import yaml

import pvnas.cli
from pvnas.config import SEARCH_PRESETS, RunOptions, override
from pvnas.errors import ConfigError
from pvnas.nn.fast import FastCell
from pvnas.nn.mixed import skip_noise
from pvnas.nn.supernet import ReferenceCell, Supernet, supernet_from_config
from pvnas.search import remedies
from pvnas.search.loop import run_search
from pvnas.search.remedies import REMEDIES, Remedy, remedies_of, settings
from pvnas.search.remedies.beta_decay import beta_decay_loss
from pvnas.search.remedies.op_dropout import OpDropout, op_dropout_mask
from pvnas.space.ops import CONV_OPS, PARAMETER_FREE, SPATIAL_OPS, TEMPORAL_OPS

KNOWN = Path(__file__).parent / "data" / "search_remedies_known_answer.json"
DEMO = SEARCH_PRESETS["demo"]


def with_remedies(cfg, **values):
    return override(cfg, remedies={**cfg.remedies, **values})


def test_a_tiny_search_with_every_remedy_gives_the_known_answer(tmp_path):
    """Op dropout, skip noise, the beta regulariser and the cap together, through the real loop: the alphas and the
    genotype of a 4-step search equal those recorded before the remedies moved behind the seam (same seed, same
    draws in the same order; the alphas re-recorded when the optimizers became fused: rounding, same genotype).

    The alphas agree to 0.1 (of up to 16.5), not to the bit: Adam's first steps are about lr (4 here) whatever the
    gradient's size, so where a gradient is near zero another CPU's rounding can turn a step's sign (0.016-0.05
    on a second EPYC model with the same torch). One draw out of order moves some alphas by whole steps."""
    cfg = with_remedies(override(DEMO, channels=4, epochs=2, workers=0, batch_size=4, a_warmup=0.25), beta_decay=2.0)
    result = run_search(cfg, "synthetic:8", tmp_path / "run", RunOptions())
    known = json.loads(KNOWN.read_text())
    for kind, alphas in result.alphas.items():
        torch.testing.assert_close(alphas.double(), torch.tensor(known["alphas"][kind], dtype=torch.float64),
                                   atol=0.1, rtol=0)
    assert result.genotype.to_dict()["cells"] == known["genotype"]
    assert result.genotype.meta["max_param_free"] == 4  # the cap's derivation, recorded


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_search_config_skip_noise_reaches_the_supernet(impl):
    """The demo preset searches with NoisyDARTS' skip noise: a supernet built from its config perturbs training
    forwards (and only those) relative to the same weights without noise."""
    cfg = with_remedies(override(DEMO, channels=4, impl=impl), op_dropout=0.0)
    assert cfg.remedies["skip_noise"] > 0
    noisy = supernet_from_config(cfg, 5, remedies_of(cfg))
    quiet = with_remedies(cfg, skip_noise=0.0)
    clean = supernet_from_config(quiet, 5, remedies_of(quiet))
    clean.load_state_dict(noisy.state_dict())
    x = torch.randn(2, 3, 4, 32, 32)
    outs = {}
    for mode in ("eval", "train"):  # eval first: training forwards move the BatchNorm running statistics
        for name, net in (("noisy", noisy), ("clean", clean)):
            net.train(mode == "train")
            torch.manual_seed(0)
            outs[mode, name] = net(x)
    assert not torch.allclose(outs["train", "noisy"], outs["train", "clean"])
    torch.testing.assert_close(outs["eval", "noisy"], outs["eval", "clean"])


def test_skip_noise_std_is_its_share_of_the_nodes_std():
    """The noise's std is `scale` x the node's own std (not a constant): ten times the node, ten times the noise,
    drawn alike; and over many draws its std is the share asked for."""
    x = torch.randn(2, 8, 4, 16, 16)
    torch.manual_seed(3)
    small = skip_noise(x, 0.3)
    torch.manual_seed(3)
    large = skip_noise(10 * x, 0.3)
    torch.testing.assert_close(large, 10 * small)
    assert small.std().item() == pytest.approx(0.3 * x.std().item(), rel=0.05)


@pytest.mark.parametrize("cell", [ReferenceCell, FastCell], ids=["reference", "fast"])
@pytest.mark.parametrize("kind", ["S-NC", "T-RC"])
def test_skip_noise_lands_on_identity_edges_only(cell, kind):
    """With every edge's weight on one op, the noise changes a training forward only when that op is identity, and
    a reduction cell's edges from its inputs (FactorizedReduce, not identity) never get it."""
    torch.manual_seed(0)
    c = cell(kind, 4, 4, 4, False).double().train()
    s0, s1 = torch.randn(2, 4, 2, 8, 8, dtype=torch.float64), torch.randn(2, 4, 2, 8, 8, dtype=torch.float64)
    ops = SPATIAL_OPS if kind.startswith("S") else TEMPORAL_OPS

    def out(op: str, noise: float, only_inputs: bool = False) -> torch.Tensor:
        w = torch.zeros(14, len(ops), dtype=torch.float64)
        w[:, ops.index(op)] = 1.0
        if only_inputs:  # the identity weight only on the edges that leave the cell's two inputs
            w[[e for e, (_, j) in enumerate(remedies_edges()) if j >= 2], ops.index(op)] = 0.0
        torch.manual_seed(1)
        return c(s0, s1, w, None, noise)

    for op in ops:
        if op == "zero":
            continue
        moved = not torch.equal(out(op, 0.5), out(op, 0.0))
        assert moved == (op == "identity"), op
    if kind == "T-RC":  # FactorizedReduce on the input edges: no noise there
        assert torch.equal(out("identity", 0.5, only_inputs=True), out("identity", 0.0, only_inputs=True))


def remedies_edges():
    from pvnas.space.genotype import edge_inputs

    return edge_inputs()


def test_op_dropout_keeps_one_op_of_each_group_and_is_unbiased():
    """DropNAS' grouped operation dropout: every edge keeps a parameter-free and a parameterised op, kept weights
    are scaled so the expected mixture is unchanged, and `zero` is never touched."""
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
    dropout = [OpDropout(0.5, DEMO)]
    fast = Supernet(4, 5, cell=FastCell, perturbations=dropout).double()
    reference = Supernet(4, 5, cell=ReferenceCell, perturbations=dropout).double()
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


def test_beta_decay_loss_is_the_mean_logsumexp_of_every_edge_and_ramps_over_the_alpha_updates():
    net = Supernet(4, 5, cell=FastCell)
    want = torch.stack([torch.logsumexp(a[e], 0) for a in net.alphas.values() for e in range(a.shape[0])]).mean()
    torch.testing.assert_close(beta_decay_loss(net), want)
    beta_decay_loss(net).backward()
    for a in net.alphas.values():  # its gradient is softmax(alpha) / edges: it pulls every alpha down, the leaders most
        torch.testing.assert_close(a.grad, torch.softmax(a, -1) / 56)
    (beta,) = remedies_of(override(DEMO, a_warmup=0.5, remedies={"beta_decay": 4.0}))
    assert beta.alpha_loss(net, 0.5) is None  # the ramp starts with the alpha updates, at 0
    torch.testing.assert_close(beta.alpha_loss(net, 0.75), 2.0 * want)  # half way through them: half the weight
    torch.testing.assert_close(beta.alpha_loss(net, 1.0), 4.0 * want)


def test_a_config_names_only_registered_remedies_and_each_checks_its_value():
    with pytest.raises(ConfigError, match="unknown remedy 'skip_nose'; expected one of: op_dropout, skip_noise"):
        remedies_of(override(DEMO, remedies={"skip_nose": 0.2}))
    with pytest.raises(ConfigError, match=r"op_dropout \(--op-dropout\) must be in \[0, 1\), got 1.0"):
        remedies_of(override(DEMO, remedies={"op_dropout": 1.0}))
    assert settings(SEARCH_PRESETS["search"]) == {name: cls.off for name, cls in REMEDIES.items()}  # the paper's


def test_skip_noise_flag_reaches_the_run_config_and_a_bad_value_is_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    args = ["search", "--data", "synthetic:8", "--preset", "tiny", "--channels", "4", "--epochs", "1", "--out", str(run)]
    assert pvnas.cli.main([*args, "--skip-noise", "0.35", "--op-dropout", "0.25"]) == 0
    recorded = yaml.safe_load((run / "config.yaml").read_text())["search"]["remedies"]
    assert recorded["skip_noise"] == 0.35 and recorded["op_dropout"] == 0.25 and recorded["beta_decay"] == 0.0
    capsys.readouterr()
    assert pvnas.cli.main([*args[:-1], str(tmp_path / "bad"), "--skip-noise", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: skip_noise (--skip-noise) must be >= 0, got -1.0" and not (tmp_path / "bad").exists()


class Toy(Remedy):
    """A remedy made for this test: it records every hook call, halves identity's weight and adds a loss term."""

    name = "toy_remedy"
    help = "Test only."
    rule = ">= 0"
    calls: dict[str, int] = {}

    @classmethod
    def valid(cls, value):
        return isinstance(value, (int, float)) and value >= 0

    def mixture(self, kind, weights):
        Toy.calls["mixture"] = Toy.calls.get("mixture", 0) + 1
        return weights

    def alpha_loss(self, model, progress):
        Toy.calls["alpha_loss"] = Toy.calls.get("alpha_loss", 0) + 1
        return self.value * sum(a.sum() for a in model.alphas.values())

    def epoch_record(self, model):
        return {"toy": float(self.value)}

    def derive_options(self):
        Toy.calls["derive"] = Toy.calls.get("derive", 0) + 1
        return {"max_param_free": 0}


@pytest.fixture
def toy_registered(monkeypatch):
    """The registry with the toy remedy added (what its one registry line does), the CLI rebuilt from it."""
    monkeypatch.setitem(remedies.REMEDIES, Toy.name, Toy)
    Toy.calls.clear()
    importlib.reload(pvnas.cli)
    yield
    monkeypatch.delitem(remedies.REMEDIES, Toy.name)
    importlib.reload(pvnas.cli)


def test_a_new_remedy_is_one_class_plus_its_registry_entry(toy_registered, tmp_path):
    """Registered, a remedy gets its flag, its value in config.yaml, its hooks called by training forwards, the
    alpha step, the epoch record and the derivation: nothing else has to change."""
    run = tmp_path / "toy"
    assert pvnas.cli.main(["search", "--data", "synthetic:8", "--preset", "tiny", "--channels", "4", "--epochs", "1",
                           "--out", str(run), "--toy-remedy", "0.5"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["search"]["remedies"]["toy_remedy"] == 0.5
    assert Toy.calls["mixture"] > 0 and Toy.calls["alpha_loss"] > 0 and Toy.calls["derive"] > 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    genotype = json.loads((run / "genotype.json").read_text())
    assert record["toy"] == 0.5 and genotype["meta"]["max_param_free"] == 0
    assert all(op not in PARAMETER_FREE for cell in genotype["cells"].values() for op, _ in cell["edges"])


def test_derive_reads_a_run_of_the_release_before_remedies_moved(tmp_path, capsys):
    """A config.yaml that held the remedies as flat keys (search.max_param_free) still derives with its cap."""
    run = tmp_path / "old"
    assert pvnas.cli.main(["search", "--data", "synthetic:8", "--preset", "tiny", "--channels", "4", "--epochs", "1",
                           "--out", str(run), "--max-param-free", "0"]) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    search = config["search"]
    search.update({name: value for name, value in search.pop("remedies").items()})  # the old, flat layout
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    capsys.readouterr()
    assert pvnas.cli.main(["derive", str(run)]) == 0
    genotype = json.loads(capsys.readouterr().out)
    assert genotype["meta"]["max_param_free"] == 0
