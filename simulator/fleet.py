"""A device fleet: each device's tier, speed, bandwidth and daily availability.

Attributes are drawn once from the preset and the seed and kept as numpy arrays, a few
tens of bytes per device (100,000 devices take a few MB); data shards are separate and
lazy (:mod:`simulator.shards`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from simulator.config import FleetConfig, TierConfig
from simulator.distributions import sample_speeds

__all__ = ["Fleet"]

Array = np.ndarray[Any, Any]


class Fleet:
    """Per-device attributes; ``tier[d]`` indexes :attr:`tiers`."""

    def __init__(self, cfg: FleetConfig, seed: int) -> None:
        n = cfg.devices
        rng = np.random.default_rng([seed, 0xF1EE7])
        self.cfg = cfg
        self.size = n
        self.tiers: tuple[TierConfig, ...] = cfg.tiers
        shares = np.asarray([t.share for t in cfg.tiers], dtype=np.float64)
        self.tier: Array = rng.choice(len(shares), size=n, p=shares / shares.sum()).astype(np.int16)
        self.seconds_per_example: Array = np.empty(n, dtype=np.float64)
        self.down_bps: Array = np.empty(n, dtype=np.float64)
        self.up_bps: Array = np.empty(n, dtype=np.float64)
        for i, tier in enumerate(cfg.tiers):
            members = np.flatnonzero(self.tier == i)
            k = len(members)
            self.seconds_per_example[members] = sample_speeds(tier.speed, rng, k)
            spread = np.exp(cfg.bandwidth_sigma * rng.standard_normal((2, k)))
            self.down_bps[members] = tier.down_mbps * 1e6 * spread[0]
            self.up_bps[members] = tier.up_mbps * 1e6 * spread[1]
        a = cfg.availability
        self.always_available = a.kind == "always"
        # Local hour = UTC hour + offset; a device is eligible while the local hour is in
        # [start, start + length) modulo 24.
        self._offset_h: Array = a.sim_start_h + rng.uniform(0.0, a.tz_spread_h, n)
        self._start_h: Array = (a.start_h + rng.uniform(-1, 1, n) * a.start_spread_h) % 24
        self._length_h: Array = np.clip(
            a.window_h + rng.uniform(-1, 1, n) * a.window_spread_h, 0.25, 24.0
        )
        # memoryviews: per-device scalar reads at Python speed, without copies
        self.tier_of = self.tier.data
        self.seconds_of = self.seconds_per_example.data
        self.down_of = self.down_bps.data
        self.up_of = self.up_bps.data
        self._offset = self._offset_h.data
        self._start = self._start_h.data
        self._length = self._length_h.data

    def tier_counts(self) -> list[int]:
        return np.bincount(self.tier, minlength=len(self.tiers)).tolist()  # type: ignore[no-any-return]

    def members(self, tier: int) -> Array:
        return np.flatnonzero(self.tier == tier)

    def _phase_h(self, device: int, t: float) -> float:
        return float((self._offset[device] + t / 3600.0 - self._start[device]) % 24.0)

    def available(self, device: int, t: float) -> bool:
        """Whether ``device`` may start training at virtual time ``t``."""
        if self.always_available:
            return True
        return bool(self._phase_h(device, t) < self._length[device])

    def window_end(self, device: int, t: float) -> float:
        """When the eligibility window open at ``t`` closes (inf when always available)."""
        if self.always_available:
            return math.inf
        return t + (float(self._length[device]) - self._phase_h(device, t)) * 3600.0

    def available_fraction(self, t: float, sample: int = 2000) -> float:
        """Share of (a sample of) the fleet eligible at ``t``."""
        if self.always_available:
            return 1.0
        idx = np.arange(min(sample, self.size))
        phase = (self._offset_h[idx] + t / 3600.0 - self._start_h[idx]) % 24.0
        return float(np.mean(phase < self._length_h[idx]))
