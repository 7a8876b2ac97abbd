"""Which device checks in next: a uniformly random idle, eligible one.

Devices are drawn at random and skipped while busy or outside their availability
window (bounded retries: when nearly nobody is eligible the caller retries later).
The busy flags are also what guarantees no device runs two sessions at once.

With ``min_separation`` N > 0 (a DP task's participation limit) a device is skipped
while the current version is less than N past the version it last checked in at, and
each pick records that version: the server's rule at check-in
(:class:`server.privacy.participation.InProcessParticipation`), so the accountant's
assumption (at most one update per device every N versions) holds in simulation too.
"""

from __future__ import annotations

import numpy as np

from simulator.fleet import Fleet

__all__ = ["DevicePicker"]

_BLOCK = 4096


class DevicePicker:
    def __init__(
        self, fleet: Fleet, seed: int, *, tries: int = 256, min_separation: int = 0
    ) -> None:
        self.fleet = fleet
        self.tries = tries
        self.busy = bytearray(fleet.size)  # 1 while the device is in a session
        self.min_separation = min_separation
        # the version each device last checked in at (DP participation limit only)
        self._last: list[int] | None = [-min_separation] * fleet.size if min_separation else None
        self._rng = np.random.default_rng([seed, 0x91C4])
        self._block: list[int] = []

    def _draw_block(self) -> None:
        self._block = self._rng.integers(0, self.fleet.size, _BLOCK).tolist()[::-1]

    def pick(self, now: float, version: int = 0) -> int | None:
        """An idle device eligible at ``now`` and, under a participation limit, at
        ``version`` (marked busy, its check-in version recorded), or None if none was
        found."""
        busy, fleet, last = self.busy, self.fleet, self._last
        # Fleet.available inlined (the same arithmetic): a pick draws ~4 devices on a
        # diurnal fleet, and two calls per draw cost more than the test itself.
        always, t_h = fleet.always_available, now / 3600.0
        offset, start, length = fleet._offset, fleet._start, fleet._length
        for _ in range(self.tries):
            if not self._block:
                self._draw_block()
            device = self._block.pop()
            if busy[device]:
                continue
            if not always and (offset[device] + t_h - start[device]) % 24.0 >= length[device]:
                continue
            if last is not None:
                if version < last[device] + self.min_separation:
                    continue
                last[device] = version
            busy[device] = 1
            return device
        return None

    def release(self, device: int) -> None:
        if not self.busy[device]:
            raise RuntimeError(f"device {device} released while idle")
        self.busy[device] = 0
