"""A task's budget as the server applies it: the resolved noise multiplier, epsilon per
version, the last version the budget allows, and the status document's ``privacy``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.aggregation import AggregationConfig
from server.errors import ConfigError
from server.privacy.accountant import Accountant, calibrate_noise_multiplier
from server.privacy.config import PrivacyConfig

__all__ = ["PrivacyBudget"]

# What an "auto" calibration is asked for is met with a little room, so the planned
# version count itself stays within the budget after float round-off.
_AUTO_MARGIN = 1.0001


@dataclass(frozen=True)
class PrivacyBudget:
    config: PrivacyConfig
    noise_multiplier: float
    max_staleness: int
    accountant: Accountant = field(repr=False, compare=False)
    max_versions: int = 0

    @classmethod
    def resolve(cls, config: PrivacyConfig, aggregation: AggregationConfig) -> PrivacyBudget:
        """Check what the accounting needs of the aggregation config and fix ``z``."""
        if aggregation.clip_norm is None:
            raise ConfigError("privacy needs aggregation.clip_norm: sensitivity is C-bound")
        if aggregation.mode == "sync":
            staleness = 0  # a round takes updates of its own version only
        elif aggregation.max_staleness is None:
            raise ConfigError(
                "privacy needs aggregation.max_staleness: without it every update of a "
                "device could land in one version, and the accounting has no bound"
            )
        else:
            staleness = aggregation.max_staleness
        kwargs: dict[str, Any] = {
            "min_separation": config.min_separation,
            "max_staleness": staleness,
        }
        if config.noise_multiplier == "auto":
            assert config.planned_versions is not None
            z = calibrate_noise_multiplier(
                config.target_epsilon, config.delta, config.planned_versions, **kwargs
            )
            z = round(z * _AUTO_MARGIN, 6)
        else:
            z = float(config.noise_multiplier)
        accountant = Accountant(z, config.delta, **kwargs)
        limit = accountant.max_versions(config.target_epsilon)
        if limit == 0:
            raise ConfigError(
                f"privacy: with noise_multiplier {z:g} one version already costs epsilon "
                f"{accountant.epsilon(1):.3g} > target_epsilon {config.target_epsilon:g}"
            )
        return cls(config, z, staleness, accountant, limit)

    def epsilon(self, version: int) -> float:
        """Epsilon spent once ``version`` versions are committed."""
        return self.accountant.epsilon(version)

    def reached(self, version: int) -> bool:
        """True when the budget allows no version after ``version``."""
        return version >= self.max_versions

    def status(self, version: int) -> dict[str, Any]:
        """The status document's ``privacy``, as the dashboard reads it."""
        return {
            "epsilon": self.epsilon(version),
            "epsilon_budget": self.config.target_epsilon,
            "budget_reached": self.reached(version),
        }

    def details(self) -> dict[str, Any]:
        """How the epsilon is accounted (the status document's ``privacy_accounting``)."""
        return {
            "delta": self.config.delta,
            "noise_multiplier": self.noise_multiplier,
            "accountant": "rdp",
            "adjacency": "user-level, zero-out (replace-special)",
            "min_separation": self.config.min_separation,
            "max_updates_per_version": self.accountant.per_version,
            "max_versions": self.max_versions,
            "planned_versions": self.config.planned_versions,
        }
