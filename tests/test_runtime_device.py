"""Where and how networks run: torch threads per config, autocast only where it applies."""

import torch

from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS
from pvnas.runtime.device import autocast, cpu_cores, torch_threads


def test_torch_threads_sets_and_restores_and_0_means_every_core():
    before = torch.get_num_threads()
    with torch_threads(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0) as used:
        assert used == cpu_cores() == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_tiny_networks_take_one_thread_and_the_paper_presets_every_core():
    assert SEARCH_PRESETS["demo"].threads == SEARCH_PRESETS["tiny"].threads == 1
    assert NETWORK_PRESETS["demo"].threads == NETWORK_PRESETS["tiny"].threads == 1
    assert SEARCH_PRESETS["search"].threads == NETWORK_PRESETS["L"].threads == NETWORK_PRESETS["M"].threads == 0


def test_autocast_is_bf16_on_cuda_only():
    for device in ("cpu", "meta"):
        with autocast(torch.device(device)):
            assert not torch.is_autocast_enabled()
            assert (torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)).dtype == torch.float32
