"""pvnas: practical video neural architecture search (PV-NAS) — search, derive, retrain, evaluate.

Importing the package does not import torch: the command line sets OpenMP's wait policy before torch
loads (see :mod:`pvnas.cli`), and ``Genotype``/``count_flops`` load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from pvnas.metrics.flops import count_flops
    from pvnas.space.genotype import Genotype

from pvnas.version import __version__

__all__ = ["Genotype", "__version__", "build_network", "build_supernet", "count_flops"]


def __getattr__(name: str) -> Any:
    if name == "Genotype":
        from pvnas.space.genotype import Genotype

        return Genotype
    if name == "count_flops":
        from pvnas.metrics.flops import count_flops

        return count_flops
    raise AttributeError(f"module 'pvnas' has no attribute {name!r}")


def build_supernet(
    preset: str = "search",
    num_classes: int = 400,
    channels: int | None = None,
    partial_channels: int = 1,
    impl: str | None = None,
) -> "nn.Module":
    """The search network of docs/design.md §2 with the preset's remedies; ``channels`` overrides the preset's C.

    ``partial_channels=K`` mixes ops on 1/K of the channels (PC-DARTS); ``impl`` picks the cell
    implementation ("reference" is the literal DARTS MixedOp, the oracle); None is the preset's (fast).
    """
    from pvnas.config import SEARCH_PRESETS, get_preset, override
    from pvnas.nn.supernet import supernet_from_config
    from pvnas.search.remedies import remedies_of

    cfg = override(get_preset(SEARCH_PRESETS, preset), channels=channels, partial_channels=partial_channels, impl=impl)
    return supernet_from_config(cfg, num_classes, remedies_of(cfg))


def build_network(
    genotype: "Genotype",
    preset: str = "L",
    num_classes: int = 400,
    channels: int | None = None,
    repeats: int | None = None,
    impl: str | None = None,
) -> "nn.Module":
    """The retrain network of docs/design.md §4 for ``genotype``; ``channels``/``repeats`` override C and K.

    ``impl="reference"`` runs the literal ``Conv3d`` ops (the oracle); None is the preset's (fast, the same
    network on 2D channels-last frames). Both have the same modules and state dict.
    """
    from pvnas.config import NETWORK_PRESETS, get_preset, override
    from pvnas.nn.network import network_from_config

    cfg = override(get_preset(NETWORK_PRESETS, preset), channels=channels, repeats=repeats, impl=impl)
    return network_from_config(genotype, cfg, num_classes)
