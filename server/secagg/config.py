"""A task's secure-aggregation switch and what it implies for devices and the aggregator.

JSON form (in the task config)::

    "secure_aggregation": {"threshold": 10, "max_updates": null}

``threshold`` is the fewest updates, from distinct devices, whose sum of masks the mask
service will release (it also enforces its own minimum). ``max_updates`` bounds how many
updates one sum may hold (default 2 K: a replica's partial may carry a buffer past K);
with the clip bound and the largest integer weight it fixes the fixed-point scale
devices encode with, so no sum can wrap modulo 2**32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from client_sdk.secagg import FixedPoint, SecaggError
from server.aggregation import AggregationConfig, MaskedConfig, make_staleness_fn
from server.errors import ConfigError

__all__ = ["SecureAggregation"]

STALENESS_LEVELS = 64
EXAMPLE_LEVELS = 64
# Noise beyond this many standard deviations (probability ~1e-15 per coordinate) could
# wrap the noised sum; max_updates must leave room for it above the aggregation goal.
NOISE_SIGMAS = 8


@dataclass(frozen=True)
class SecureAggregation:
    threshold: int
    max_updates: int | None = None

    def __post_init__(self) -> None:
        for name in ("threshold", "max_updates"):
            value = getattr(self, name)
            if value is None and name == "max_updates":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
                raise ConfigError(f"secure_aggregation.{name} must be an integer in 1..100000")

    @classmethod
    def from_dict(cls, data: Any) -> SecureAggregation:
        if not isinstance(data, dict) or set(data) - {"threshold", "max_updates"}:
            raise ConfigError("secure_aggregation is {threshold, max_updates?}")
        if "threshold" not in data:
            raise ConfigError("secure_aggregation.threshold is required")
        return cls(data["threshold"], data.get("max_updates"))

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "max_updates": self.max_updates}

    def check(self, agg: AggregationConfig) -> None:
        """Refuse what secure aggregation cannot do with this aggregation config."""
        where = "secure_aggregation needs"
        if agg.clip_norm is None:
            raise ConfigError(f"{where} aggregation.clip_norm: devices clip before masking")
        if agg.max_update_norm is not None:
            raise ConfigError(
                f"{where} no max_update_norm: the server cannot see a masked update's norm"
            )
        if agg.noise_multiplier > 0 and agg.normalization != "goal":
            raise ConfigError(
                f'{where} normalization "goal" with noise: the mask service adds the '
                "noise to the integer sum, before any division, and a division by the "
                "sum of weights would make its std depend on the devices' example counts"
            )
        headroom = self.limit(agg) - agg.aggregation_goal
        if agg.noise_multiplier > 0 and NOISE_SIGMAS * agg.noise_multiplier > headroom:
            raise ConfigError(
                f"secure_aggregation.max_updates {self.limit(agg)} leaves room for "
                f"{headroom} update(s) above the goal; noise of multiplier "
                f"{agg.noise_multiplier:g} needs {NOISE_SIGMAS} times that so the noised "
                "sum cannot wrap modulo 2**32: raise max_updates"
            )
        if self.threshold > agg.aggregation_goal:
            raise ConfigError(
                f"secure_aggregation.threshold {self.threshold} is above the aggregation "
                f"goal {agg.aggregation_goal}: no buffer could ever be released"
            )
        if agg.mode == "sync":
            short = max(1, math.ceil(agg.min_round_fraction * agg.aggregation_goal))
            if short < self.threshold:
                raise ConfigError(
                    "a sync round closing short must still reach the threshold: raise "
                    f"min_round_fraction to at least {self.threshold / agg.aggregation_goal:.3f}"
                )
        weighting = agg.example_weighting
        if weighting.kind != "equal" and weighting.cap is None:
            raise ConfigError(
                f"{where} a cap on example weights ({weighting.kind}): integer weights "
                "must be bounded for the sum to fit in 32 bits"
            )
        if make_staleness_fn(agg)(0) > 1.0:
            raise ConfigError(f"{where} staleness weights of at most 1")
        try:
            self.fixed_point(agg).check()
        except SecaggError as exc:
            raise ConfigError(f"secure_aggregation: {exc}") from exc

    def noise_std(self, agg: AggregationConfig, size: int) -> float:
        """The std of the mask service's noise on the integer sum ``sum(w q)``:
        ``noise_multiplier`` times its sensitivity, one update at the largest integer
        weight, ``|q| <= C * scale + sqrt(size) / 2`` (clipped, then rounded)."""
        if agg.noise_multiplier <= 0:
            return 0.0
        assert agg.clip_norm is not None
        fp = self.fixed_point(agg)
        return (
            agg.noise_multiplier * fp.max_weight * (agg.clip_norm * fp.scale + math.sqrt(size) / 2)
        )

    def limit(self, agg: AggregationConfig) -> int:
        return self.max_updates or 2 * agg.aggregation_goal

    def fixed_point(self, agg: AggregationConfig) -> FixedPoint:
        """What devices encode with (sent at check-in)."""
        assert agg.clip_norm is not None
        return FixedPoint(agg.clip_norm, self.masked(agg, scale=1.0).max_weight, self.limit(agg))

    def masked(self, agg: AggregationConfig, *, scale: float | None = None) -> MaskedConfig:
        """What the aggregator folds with."""
        weighting = agg.example_weighting
        levels = 1 if weighting.kind == "equal" else EXAMPLE_LEVELS
        cap = weighting.cap or 1
        example_max = {
            "equal": 1.0,
            "linear": float(cap),
            "sqrt": math.sqrt(cap),
            "log": math.log10(1 + cap),
        }[weighting.kind]
        if scale is None:
            scale = self.fixed_point(agg).scale
        return MaskedConfig(
            scale, STALENESS_LEVELS, levels, example_max, self.threshold, self.limit(agg)
        )
