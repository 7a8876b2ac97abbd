"""Training-time distributions for the device fleet (heavy tails by default)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

SPECS = "lognormal:MEDIAN:SIGMA, pareto:MIN:ALPHA, halfnormal:SCALE, exp:MEAN or const:SECONDS"
_ARITY = {"lognormal": 2, "pareto": 2, "halfnormal": 1, "exp": 1, "const": 1}


@dataclass(frozen=True)
class TrainTime:
    """A training-time distribution parsed from ``kind:arg[:arg]`` (seconds).

    ``lognormal:30:1`` has median 30 s and mean 30·e^0.5 ≈ 49 s; ``pareto:10:1.5`` is
    at least 10 s with an infinite-variance tail; ``halfnormal`` is FLSim's choice.
    """

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> TrainTime:
        kind, *args = spec.split(":")
        if kind not in _ARITY or len(args) != _ARITY[kind]:
            raise ValueError(f"bad training time {spec!r}: use {SPECS}")
        try:
            values = [float(v) for v in args]
        except ValueError:
            raise ValueError(f"bad training time {spec!r}: use {SPECS}") from None
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"bad training time {spec!r}: parameters must be finite, >= 0")
        if kind == "pareto" and values[1] <= 0:
            raise ValueError(f"bad training time {spec!r}: pareto needs ALPHA > 0")
        return cls(kind, *values)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "lognormal":
            return self.a * math.exp(rng.gauss(0.0, self.b))
        if self.kind == "pareto":
            return self.a * rng.paretovariate(self.b)
        if self.kind == "halfnormal":
            return abs(rng.gauss(0.0, self.a))
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        return self.a
