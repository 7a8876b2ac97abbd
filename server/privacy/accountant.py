"""Epsilon after T versions, from Google's ``dp-accounting`` (RDP or PLD).

The model accounted (the README's Privacy section says when it fails):

- **Adjacency**: user level, zero-out (``REPLACE_SPECIAL``): a device's updates are
  replaced by ones that contribute nothing. Which slots exist and when (timing, staleness,
  the count ``n`` of a version) is public; the noise is calibrated to the version's
  sensitivity for that ``n`` (:func:`server.aggregation.sensitivity`), so each version
  is a Gaussian mechanism of noise multiplier ``z`` for one update of one device.
- **No sampling amplification**: async participation is not Poisson sampling, so none
  is claimed. What bounds a device is the participation limit: at most one check-in
  every ``min_separation`` versions, hence at most ``k = ceil(T / min_separation)``
  updates in versions ``1..T``, and (an update lands at most ``max_staleness`` versions
  after its base) at most ``m = max_staleness // min_separation + 1`` of them in one
  version. The worst case packs them ``m`` to a version: ``k // m`` Gaussian
  mechanisms of multiplier ``z / m`` and one of ``z / (k mod m)``.

Epsilon depends on ``k`` only, so it never decreases with T and is cached per ``k``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import dp_accounting
from dp_accounting import pld, rdp

from server.errors import ConfigError
from server.privacy.config import MAX_VERSIONS, AccountantKind

__all__ = ["Accountant", "calibrate_noise_multiplier", "dp_event"]

_RELATION = dp_accounting.NeighboringRelation.REPLACE_SPECIAL


def dp_event(
    noise_multiplier: float, contributions: int, per_version: int
) -> dp_accounting.DpEvent:
    """What ``contributions`` updates of one device cost, at most ``per_version`` of them
    in one version."""
    if contributions <= 0:
        return dp_accounting.NoOpDpEvent()
    full, rest = divmod(contributions, per_version)
    events: list[dp_accounting.DpEvent] = []
    if full:
        events.append(
            dp_accounting.SelfComposedDpEvent(
                dp_accounting.GaussianDpEvent(noise_multiplier / per_version), full
            )
        )
    if rest:
        events.append(dp_accounting.GaussianDpEvent(noise_multiplier / rest))
    return events[0] if len(events) == 1 else dp_accounting.ComposedDpEvent(events)


def _accountant(kind: AccountantKind) -> dp_accounting.PrivacyAccountant:
    if kind == "pld":
        return pld.PLDAccountant(_RELATION)
    return rdp.RdpAccountant(neighboring_relation=_RELATION)


def per_version_limit(max_staleness: int, min_separation: int) -> int:
    return max_staleness // min_separation + 1


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    versions: int,
    *,
    min_separation: int = 1,
    max_staleness: int = 0,
    kind: AccountantKind = "rdp",
) -> float:
    """The smallest noise multiplier with which ``versions`` versions cost at most
    ``target_epsilon`` at ``delta`` (``dp_accounting.calibrate_dp_mechanism``)."""
    k = math.ceil(versions / min_separation)
    m = per_version_limit(max_staleness, min_separation)
    z = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(kind),
        lambda z: dp_event(z, k, m),
        target_epsilon,
        delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-4,
    )
    return float(z)


class Accountant:
    """Epsilon at ``delta`` after T versions of one task."""

    def __init__(
        self,
        noise_multiplier: float,
        delta: float,
        *,
        min_separation: int = 1,
        max_staleness: int = 0,
        kind: AccountantKind = "rdp",
    ) -> None:
        if not noise_multiplier > 0:
            raise ConfigError("privacy: the accountant needs a noise multiplier > 0")
        self.noise_multiplier = noise_multiplier
        self.delta = delta
        self.min_separation = min_separation
        self.per_version = per_version_limit(max_staleness, min_separation)
        self.kind: AccountantKind = kind
        self._by_contributions = lru_cache(maxsize=4096)(self._epsilon_of)

    def contributions(self, versions: int) -> int:
        """The most updates one device can have in versions ``1..versions``."""
        return math.ceil(max(0, versions) / self.min_separation)

    def event(self, versions: int) -> dp_accounting.DpEvent:
        return dp_event(self.noise_multiplier, self.contributions(versions), self.per_version)

    def epsilon(self, versions: int) -> float:
        """Epsilon at ``delta`` once ``versions`` versions are committed."""
        return self._by_contributions(self.contributions(versions))

    def _epsilon_of(self, contributions: int) -> float:
        if contributions <= 0:
            return 0.0
        accountant = _accountant(self.kind)
        accountant.compose(dp_event(self.noise_multiplier, contributions, self.per_version))
        return float(accountant.get_epsilon(self.delta))

    def max_versions(self, target_epsilon: float) -> int:
        """The most versions whose epsilon stays within ``target_epsilon`` (0 if even one
        version would exceed it). Epsilon grows with ``k`` only: search ``k``."""
        if self._by_contributions(1) > target_epsilon:
            return 0
        low, high = 1, 2  # epsilon(low) <= target
        while high <= MAX_VERSIONS and self._by_contributions(high) <= target_epsilon:
            low, high = high, high * 2
        if high > MAX_VERSIONS:
            return MAX_VERSIONS * self.min_separation
        while high - low > 1:  # epsilon(low) <= target < epsilon(high)
            mid = (low + high) // 2
            if self._by_contributions(mid) <= target_epsilon:
                low = mid
            else:
                high = mid
        return low * self.min_separation
