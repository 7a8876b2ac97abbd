"""Which device checks in next: a uniformly random idle, eligible one.

Devices are drawn at random and skipped while busy or outside their availability
window (bounded retries: when nearly nobody is eligible the caller retries later).
The busy flags are also what guarantees no device runs two sessions at once.
"""

from __future__ import annotations

import numpy as np

from simulator.fleet import Fleet

__all__ = ["DevicePicker"]

_BLOCK = 4096


class DevicePicker:
    def __init__(self, fleet: Fleet, seed: int, *, tries: int = 256) -> None:
        self.fleet = fleet
        self.tries = tries
        self.busy = bytearray(fleet.size)  # 1 while the device is in a session
        self._rng = np.random.default_rng([seed, 0x91C4])
        self._block: list[int] = []

    def _draw(self) -> int:
        if not self._block:
            self._block = self._rng.integers(0, self.fleet.size, _BLOCK).tolist()[::-1]
        return self._block.pop()

    def pick(self, now: float) -> int | None:
        """An idle device eligible at ``now`` (marked busy), or None if none was found."""
        busy, fleet, always = self.busy, self.fleet, self.fleet.always_available
        for _ in range(self.tries):
            device = self._draw()
            if not busy[device] and (always or fleet.available(device, now)):
                busy[device] = 1
                return device
        return None

    def release(self, device: int) -> None:
        if not self.busy[device]:
            raise RuntimeError(f"device {device} released while idle")
        self.busy[device] = 0
