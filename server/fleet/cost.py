"""The cost of training: seconds, energy, carbon and bytes, from what devices report.

A device reports ``train_s`` (wall seconds it trained) and, where its platform can
measure it, ``energy_j`` (joules the session used) in an update's metrics, plus
``download_bytes`` (graph and parameter bytes it fetched for the session; a cache hit
fetches none). The server records them with the update (:func:`cost_fields`), and the
upload's body size as ``bytes_up``. Where a device reports no energy, the server
estimates it as ``train_s`` times the tier's power draw from a configurable table
(:class:`CostModel`); energy is turned into kWh and grams of CO2e at a configurable
grid intensity.

Default powers are rough figures for a phone training under load (low/mid/high-end
SoCs draw about 2 / 3.5 / 5 W, cf. the AutoFL measurements); set your own fleet's with
``ASYNCFL_TIER_POWER_W``. The default grid intensity, 475 g CO2e/kWh, is about the
world's average electricity mix; set yours with ``ASYNCFL_GRID_G_CO2E_PER_KWH``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from server.fleet.tiers import normalize_tier

J_PER_KWH = 3.6e6
DEFAULT_POWER_TABLE = "low=2.0,mid=3.5,high=5.0"
DEFAULT_POWER_W = 3.5
DEFAULT_GRID_G_PER_KWH = 475.0
# Bounds a report must be inside to be believed (a day of training, 10 MJ, 100 GB).
MAX_TRAIN_S = 86_400.0
MAX_ENERGY_J = 1e7
MAX_BYTES = 100 * 2**30


class PowerTableError(ValueError):
    """A power table that does not parse (``tier=watts,tier=watts``)."""


def parse_power_table(text: str) -> dict[str, float]:
    """``"low=2,mid=3.5"`` -> ``{"low": 2.0, "mid": 3.5}``; tiers normalised."""
    table: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, watts = part.partition("=")
        tier = normalize_tier(name)
        try:
            value = float(watts)
        except ValueError:
            value = math.nan
        if not sep or tier != name.strip().lower() or not (math.isfinite(value) and value >= 0):
            raise PowerTableError(f"power table entry {part.strip()!r} is not tier=watts")
        table[tier] = value
    return table


@dataclass(frozen=True)
class CostModel:
    power_w: Mapping[str, float] = field(
        default_factory=lambda: parse_power_table(DEFAULT_POWER_TABLE)
    )
    default_power_w: float = DEFAULT_POWER_W  # tiers the table does not name
    grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH

    def __post_init__(self) -> None:
        if not (math.isfinite(self.default_power_w) and self.default_power_w >= 0):
            raise PowerTableError("the default power must be a finite number >= 0")
        if not (math.isfinite(self.grid_g_per_kwh) and self.grid_g_per_kwh >= 0):
            raise PowerTableError("the grid intensity must be a finite number >= 0")

    def power_of(self, tier: str) -> float:
        return self.power_w.get(tier, self.default_power_w)

    def to_dict(self) -> dict[str, Any]:
        return {
            "power_w": dict(sorted(self.power_w.items())),
            "default_power_w": self.default_power_w,
            "grid_g_co2e_per_kwh": self.grid_g_per_kwh,
        }


def _bounded(value: Any, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= limit else None


def cost_fields(metrics: Mapping[str, Any], body_bytes: int | None) -> dict[str, Any]:
    """The ledger's cost columns for an update with these client ``metrics`` and an
    upload body of ``body_bytes``: reports outside believable bounds are dropped."""
    down = _bounded(metrics.get("download_bytes"), MAX_BYTES)
    return {
        "train_s": _bounded(metrics.get("train_s"), MAX_TRAIN_S),
        "energy_j": _bounded(metrics.get("energy_j"), MAX_ENERGY_J),
        "bytes_up": body_bytes if body_bytes is not None and body_bytes >= 0 else None,
        "bytes_down": None if down is None else int(down),
    }


@dataclass
class CostSums:
    """Sums over a set of updates; additive (per version, per tier, per task)."""

    updates: int = 0
    train_s: float = 0.0
    timed: int = 0  # updates that reported train_s
    metered_j: float = 0.0  # energy the devices reported
    metered: int = 0  # updates that reported energy
    unmetered_train_s: float = 0.0  # train_s of updates that reported no energy
    estimated_j: float = 0.0  # unmetered_train_s x the tier's power
    estimated: int = 0  # updates whose energy was estimated
    bytes_up: int = 0
    bytes_down: int = 0

    def add(self, other: CostSums) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def energy_j(self) -> float:
        return self.metered_j + self.estimated_j

    def to_dict(self, grid_g_per_kwh: float) -> dict[str, Any]:
        kwh = self.energy_j / J_PER_KWH
        return {
            "updates": self.updates,
            "train_s": self.train_s,
            "energy_j": self.energy_j,
            "energy_reported_j": self.metered_j,
            "energy_estimated_j": self.estimated_j,
            "updates_metered": self.metered,
            "updates_estimated": self.estimated,
            "updates_unknown": self.updates - self.metered - self.estimated,
            "kwh": kwh,
            "co2e_g": kwh * grid_g_per_kwh,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
        }
