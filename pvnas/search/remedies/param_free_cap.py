"""A cap on parameter-free edges at derivation (P-DARTS' limit on skip connections, Chen et al. 2019, extended to
pools): a cell that would keep more than K identity/pool edges is derived as the best cell within the cap (exact,
:meth:`~pvnas.space.genotype.Genotype.derive`); cells within it keep the paper's rule."""

from __future__ import annotations

from typing import Any

from pvnas.search.remedies.base import Remedy, Value
from pvnas.space.genotype import NODES


class ParamFreeCap(Remedy):
    name = "max_param_free"
    help = ("Derive with at most this many identity/pool edges per cell (P-DARTS' cap on skip connections; "
            "8: no cap, the paper's rule).")
    type = int
    off = None
    rule = f"in 0..{2 * NODES} ({2 * NODES}: no cap) or None"
    trains = False
    at_derive = True

    @classmethod
    def valid(cls, value: Value) -> bool:
        return value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2 * NODES)

    def derive_options(self) -> dict[str, Any]:
        return {} if self.value is None else {"max_param_free": self.value}
