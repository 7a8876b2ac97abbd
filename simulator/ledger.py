"""Accounting of a run: trips, bytes, updates, wasted work by cause, energy per tier.

Energy is ``train_power_w x seconds training + radio_power_w x seconds transferring``
per session (the Green FL studies' device-side split), counted when a session ends;
wasted work is the training time of sessions whose update was never applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from simulator.config import TierConfig
from simulator.sessions import Session

__all__ = ["WASTE_CAUSES", "Ledger", "LedgerView"]

WASTE_CAUSES: tuple[str, ...] = (
    "staleness",  # async: refused as too stale
    "over_selection",  # sync: still training when the round reached its goal
    "deadline",  # sync: still training when the round hit its deadline
    "timeout",  # async: session outlived its lease
    "dropout",  # the device quit mid-session
    "unavailable",  # the device's eligibility window closed mid-session
    "rejected",  # refused for any other reason (norm bound, round closed, ...)
)


@dataclass
class _Tally:
    sessions: int = 0
    compute_s: float = 0.0
    energy_j: float = 0.0


@dataclass
class LedgerView:
    """A frozen copy of the counters (what :meth:`Ledger.view` returns)."""

    trips: int
    bytes_down: int
    bytes_up: int
    applied: int
    wasted: dict[str, dict[str, float]]
    tiers: dict[str, dict[str, float]]
    energy_j: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "trips": self.trips,
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "applied": self.applied,
            "energy_j": self.energy_j,
            "wasted": self.wasted,
            "tiers": self.tiers,
        }


@dataclass
class Ledger:
    tiers: tuple[TierConfig, ...]
    trips: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    applied: int = 0
    wasted: dict[str, _Tally] = field(default_factory=lambda: {c: _Tally() for c in WASTE_CAUSES})
    _tier_trips: list[int] = field(default_factory=list)
    _tier_applied: list[int] = field(default_factory=list)
    _tier_energy: list[float] = field(default_factory=list)
    _tier_compute: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.tiers)
        self._tier_trips, self._tier_applied = [0] * n, [0] * n
        self._tier_energy, self._tier_compute = [0.0] * n, [0.0] * n

    def started(self, s: Session) -> None:
        self.trips += 1
        self.bytes_down += s.bytes_down
        self._tier_trips[s.tier] += 1

    def finished(self, s: Session, until: float, *, uploaded: bool, waste: str | None) -> None:
        """Close the books on ``s`` at ``until``; ``waste`` is None when it was applied."""
        tier = self.tiers[s.tier]
        compute = s.compute_s(until)
        energy = compute * tier.train_power_w + s.radio_s(until) * tier.radio_power_w
        self._tier_energy[s.tier] += energy
        self._tier_compute[s.tier] += compute
        if uploaded:
            self.bytes_up += s.bytes_up
        if waste is None:
            self.applied += 1
            self._tier_applied[s.tier] += 1
            return
        tally = self.wasted[waste if waste in self.wasted else "rejected"]
        tally.sessions += 1
        tally.compute_s += compute
        tally.energy_j += energy

    def view(self) -> LedgerView:
        applied = max(1, self.applied)
        return LedgerView(
            trips=self.trips,
            bytes_down=self.bytes_down,
            bytes_up=self.bytes_up,
            applied=self.applied,
            wasted={c: copy.copy(vars(t)) for c, t in self.wasted.items()},
            tiers={
                t.name: {
                    "trips": self._tier_trips[i],
                    "applied": self._tier_applied[i],
                    "applied_share": self._tier_applied[i] / applied,
                    "compute_s": self._tier_compute[i],
                    "energy_j": self._tier_energy[i],
                }
                for i, t in enumerate(self.tiers)
            },
            energy_j=sum(self._tier_energy),
        )
