"""MACs and parameters: a hand-computed conv, and agreement with an independent hook count."""

import json
import math

import pytest
import torch
from torch import nn

import pvnas
from pvnas.cli import main
from pvnas.space.genotype import CellGenotype, Genotype
from pvnas.space.ops import CELL_KINDS


def test_single_conv3d_matches_hand_count():
    conv = nn.Conv3d(3, 16, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False)
    # output (16, 8, 16, 16); each output element is 3 * 3 * 5 * 5 multiply-adds
    expected = 16 * 8 * 16 * 16 * (3 * 3 * 5 * 5)
    result = pvnas.count_flops(conv, (3, 8, 32, 32))
    assert result == {"params": 16 * 3 * 3 * 5 * 5, "gmacs": expected / 1e9, "gflops": expected / 1e9}  # (0.1's name)


def test_grouped_conv_and_linear_and_per_view_division():
    model = nn.Sequential(
        nn.Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1), groups=8, bias=False),  # depthwise: 9 MACs per output
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 10),
    )
    expected = 8 * 4 * 6 * 6 * 9 + 8 * 10
    assert pvnas.count_flops(model, (8, 4, 6, 6))["gmacs"] * 1e9 == pytest.approx(expected)
    assert pvnas.count_flops(model, (5, 8, 4, 6, 6))["gmacs"] * 1e9 == pytest.approx(expected)  # per view


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Independent count: forward hooks on every Conv3d/Linear, MACs from their output shapes."""
    total = 0

    def conv_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv3d) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


ALL_CONV = Genotype({k: CellGenotype((("dil_conv_1x3x3", 0), ("sep_conv_1x3x3", 1)) * 4) for k in CELL_KINDS})
# temporal cells of "3+1x1" only: the fast forward runs them as one conv, 3/4 of the MACs (not the count)
ALL_3X1X1 = Genotype({k: CellGenotype(((("sep_conv_1x3x3" if k[0] == "S" else "conv_3x1x1"), 0),
                                       (("sep_conv_1x3x3" if k[0] == "S" else "conv_3x1x1"), 1)) * 4)
                      for k in CELL_KINDS})


@pytest.mark.parametrize("genotype", [Genotype.random(1, min_conv=4), Genotype.random(7, min_conv=0), ALL_CONV,
                                      ALL_3X1X1])
def test_count_flops_agrees_with_hook_count_on_the_network(genotype):
    net = pvnas.build_network(genotype, "L", num_classes=11, channels=8)  # paper layout, small C
    counted = pvnas.count_flops(net, (3, 4, 96, 96))  # 96 px: the last reduction still sees 6x6
    assert net.training and net.impl == "fast"  # count_flops restores the mode and the impl
    # the architecture's MACs: the literal Conv3d ops of the reference twin, where the hooks fire
    independent = hook_macs(pvnas.build_network(genotype, "L", num_classes=11, channels=8, impl="reference"),
                            torch.zeros(1, 3, 4, 96, 96))
    assert counted["gmacs"] * 1e9 == pytest.approx(independent, rel=0.02)
    assert counted["params"] == sum(p.numel() for p in net.parameters())


def test_flops_cli_prints_json(tmp_path, capsys):
    path = tmp_path / "g.json"
    Genotype.random(1, min_conv=4).save(path)
    assert main(["flops", "--genotype", str(path), "--preset", "tiny", "--frames", "4", "--size", "32",
                 "--num-classes", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    net = pvnas.build_network(Genotype.load(path), "tiny", num_classes=8, impl="reference")
    assert out["params"] == sum(p.numel() for p in net.parameters())
    assert out["gmacs"] == pytest.approx(hook_macs(net, torch.zeros(1, 3, 4, 32, 32)) / 1e9, rel=0.02)
