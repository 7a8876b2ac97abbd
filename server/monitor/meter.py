"""CPU spent on the dashboard's behalf, measured on the threads that spend it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# what the CPU went to (the label of ``asyncfl_dashboard_cpu_seconds``)
PARTS = ("documents", "refresh", "checkins", "snapshot", "stream")


class CpuMeter:
    """Sums CPU seconds (user and system) of the dashboard's work, by part.

    :meth:`measure` times a block on the calling thread with :func:`time.thread_time`.
    A block that does not await is exact. A block that awaits (a rollup refresh's SQL)
    also counts whatever else the event loop ran meanwhile: an upper bound. :meth:`add`
    takes CPU measured elsewhere (the database driver's thread, :mod:`server.storage.fleet`).

    - ``documents``: the admin API's fleet documents (``/live``, ``/fleet``, ...);
    - ``refresh``: rollup refreshes, whole (queries, the driver's thread, folding);
    - ``checkins``: folding the check-ins this process wrote;
    - ``snapshot``: the live snapshots' summaries, documents and encoding;
    - ``stream``: writing snapshots and keepalives to the open streams.
    """

    def __init__(self) -> None:
        self.parts: dict[str, float] = dict.fromkeys(PARTS, 0.0)

    @property
    def seconds(self) -> float:
        return sum(self.parts.values())

    @contextmanager
    def measure(self, part: str = "documents") -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.parts[part] = self.parts.get(part, 0.0) + time.thread_time() - started

    def add(self, seconds: float, part: str) -> None:
        self.parts[part] = self.parts.get(part, 0.0) + max(0.0, seconds)
