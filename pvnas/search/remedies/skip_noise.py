"""NoisyDARTS' skip noise (Chu et al. 2020): Gaussian noise on the skip connections of every training forward, so
that identity cannot win by being the cleanest path. The cells draw it (:func:`~pvnas.nn.mixed.skip_noise`), one
draw per node, on the identity term of every edge that leaves the node (not on a reduction's FactorizedReduce)."""

from __future__ import annotations

from pvnas.search.remedies.base import Remedy, Value


class SkipNoise(Remedy):
    name = "skip_noise"
    help = "NoisyDARTS: noise on skip connections, std = this x the node's std."
    rule = ">= 0"

    @classmethod
    def valid(cls, value: Value) -> bool:
        return isinstance(value, (int, float)) and value >= 0

    def skip_noise(self) -> float:
        return float(self.value)
