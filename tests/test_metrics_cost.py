"""The cost model adds up: fixed + the kept edges' costs equal what ``pvnas flops`` counts, to the MAC."""

import json

import pytest
import torch

from pvnas.cli import main
from pvnas.config import NETWORK_PRESETS, override
from pvnas.metrics.cost import covering_genotypes, network_costs
from pvnas.metrics.flops import count_flops, count_macs
from pvnas.nn.network import network_from_config
from pvnas.space.genotype import Genotype, edge_inputs
from pvnas.space.ops import CELL_KINDS, ops_for


def test_covering_genotypes_keep_every_edge_and_op():
    covered = {(k, n, j, op) for g in covering_genotypes() for k in CELL_KINDS
               for e, (op, j) in enumerate(g.cells[k].edges) for n in [2 + e // 2]}
    assert covered == {(k, n, j, op) for k in CELL_KINDS for n, j in edge_inputs() for op in ops_for(k)[1:]}


@pytest.mark.parametrize("preset", ["demo", "L", "M"])
def test_fixed_plus_kept_edges_equals_the_count_of_the_built_network(preset):
    cfg = NETWORK_PRESETS[preset]
    shape = (1, 3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop)
    macs, params = network_costs(cfg, 400, cfg.clip.frames, cfg.clip.crop)
    for seed in range(20):
        genotype = Genotype.random(seed, min_conv=seed % 5)
        with torch.device("meta"):  # the same count as on the CPU, without computing anything
            net = network_from_config(genotype, cfg, 400)
        assert macs.of(genotype) == count_macs(net, shape)[0]
        assert params.of(genotype) == sum(p.numel() for p in net.parameters())


def test_the_table_matches_pvnas_flops_on_the_cpu(tmp_path, capsys):
    cfg = override(NETWORK_PRESETS["demo"], channels=6, repeats=2, stem_stride=4)  # a user's retrain config
    macs, params = network_costs(cfg, 7, 3, 40)
    genotype = Genotype.random(3)
    assert count_flops(network_from_config(genotype, cfg, 7), (3, 3, 40, 40)) == {
        "params": params.of(genotype), "gmacs": macs.of(genotype) / 1e9, "gflops": macs.of(genotype) / 1e9}
    macs, params = network_costs(NETWORK_PRESETS["demo"], 400, 4, 32)  # and through the command line
    genotype.save(tmp_path / "g.json")
    assert main(["flops", "--genotype", str(tmp_path / "g.json"), "--preset", "demo", "--frames", "4", "--crop", "32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert round(result["gmacs"] * 1e9) == macs.of(genotype) and result["params"] == params.of(genotype)


@pytest.mark.parametrize("preset", ["L", "M"])
def test_a_count_on_the_meta_device_equals_the_count_on_the_cpu(preset):
    genotype = Genotype.random(5)
    cfg = override(NETWORK_PRESETS[preset], channels=12)  # the preset's layout; fewer weights to initialise
    with torch.device("meta"):
        meta = network_from_config(genotype, cfg, 10)
    cpu = network_from_config(genotype, cfg, 10)
    assert count_macs(meta, (2, 3, 3, 40, 40)) == count_macs(cpu, (2, 3, 3, 40, 40))


def test_costs_follow_the_positions_of_each_kind():
    cfg = NETWORK_PRESETS["L"]  # T-NC is stacked three times, at three resolutions; S-NC once
    macs, params = network_costs(cfg, 400, 8, 224)
    row = edge_inputs().index((3, 2))
    t_nc = macs.ops["T-NC"][row][ops_for("T-NC").index("conv_3x3x3")]
    assert t_nc > 0 and macs.ops["T-NC"][row][ops_for("T-NC").index("max_pool_1x3x3")] == 0
    # a stride-2 edge of a reduction cell is dearer in parameters only through FactorizedReduce's identity
    assert params.ops["S-RC"][0][ops_for("S-RC").index("identity")] > 0
    assert params.ops["S-RC"][row][ops_for("S-RC").index("identity")] == 0
    assert macs.meta["input"] == [3, 8, 224, 224] and macs.metric == "macs" and params.metric == "params"
