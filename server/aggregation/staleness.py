"""Staleness weights: how much an update trained on an old model version still counts.

``s`` is the number of versions committed since the update's base version. Every rule
gives 1 at ``s = 0`` and is non-increasing in ``s``:

- ``polynomial``: ``(1 + s) ** -exponent``; exponent 0.5 is FedBuff's ``1/sqrt(1+s)``.
- ``constant``: 1 (FLSim's FedBuff default).
- ``hinge``: 1 while ``s <= b``, then ``1 / (a * (s - b) + 1)`` (FedAsync).
- ``nvflare``: ``1 / (1 + sqrt(s))`` (NVFlare edge mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from server.aggregation.config import AggregationConfig, StalenessConfig

__all__ = ["StalenessFn", "make_staleness_fn"]

StalenessFn = Callable[[int], float]


def make_staleness_fn(
    config: StalenessConfig | AggregationConfig | Mapping[str, Any],
) -> StalenessFn:
    """The weight function of a staleness config (or of a whole aggregation config)."""
    if isinstance(config, AggregationConfig):
        config = config.staleness
    elif not isinstance(config, StalenessConfig):
        config = StalenessConfig.from_dict(config)
    if config.kind == "constant":
        rule: StalenessFn = _constant
    elif config.kind == "nvflare":
        rule = _nvflare
    elif config.kind == "hinge":
        a, b = config.a, config.b

        def rule(s: int) -> float:
            return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)
    else:
        exponent = config.exponent

        def rule(s: int) -> float:
            return float((1.0 + s) ** -exponent)

    def weight(staleness: int) -> float:
        if staleness < 0:
            raise ValueError(f"staleness must be >= 0, got {staleness}")
        return rule(staleness)

    return weight


def _constant(s: int) -> float:
    return 1.0


def _nvflare(s: int) -> float:
    return 1.0 / (1.0 + math.sqrt(s))
