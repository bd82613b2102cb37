"""pvnas: practical video neural architecture search (PV-NAS) — search, derive, retrain, evaluate."""

from __future__ import annotations

from torch import nn

from pvnas.config import NETWORK_PRESETS, SEARCH_PRESETS, get_preset, override
from pvnas.metrics.flops import count_flops
from pvnas.space.genotype import Genotype

__all__ = ["Genotype", "build_network", "build_supernet", "count_flops"]
__version__ = "0.1.0"


def build_supernet(
    preset: str = "search",
    num_classes: int = 400,
    channels: int | None = None,
    partial_channels: int = 1,
    impl: str | None = None,
) -> nn.Module:
    """The search network of DESIGN §2; ``channels`` overrides the preset's C.

    ``partial_channels=K`` mixes ops on 1/K of the channels (PC-DARTS); ``impl`` picks the cell
    implementation ("reference" is the literal DARTS MixedOp, the oracle); None is the default.
    """
    from pvnas.nn.supernet import DEFAULT_IMPL, supernet_from_config

    cfg = override(get_preset(SEARCH_PRESETS, preset), channels=channels, partial_channels=partial_channels)
    return supernet_from_config(cfg, num_classes, impl or DEFAULT_IMPL)


def build_network(
    genotype: Genotype,
    preset: str = "L",
    num_classes: int = 400,
    channels: int | None = None,
    repeats: int | None = None,
) -> nn.Module:
    """The retrain network of DESIGN §4 for ``genotype``; ``channels``/``repeats`` override C and K."""
    from pvnas.nn.network import network_from_config

    cfg = override(get_preset(NETWORK_PRESETS, preset), channels=channels, repeats=repeats)
    return network_from_config(genotype, cfg, num_classes)

