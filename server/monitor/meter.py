"""CPU spent on the dashboard's behalf, measured on the threads that spend it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class CpuMeter:
    """Sums CPU seconds (user and system) of the dashboard's work.

    :meth:`measure` times a block on the calling thread with :func:`time.thread_time`.
    A block that does not await is exact. A block that awaits (a rollup refresh's SQL)
    also counts whatever else the event loop ran meanwhile: an upper bound. :meth:`add`
    takes CPU measured elsewhere (the database driver's thread, :mod:`server.storage.fleet`).
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.blocks = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.seconds += time.thread_time() - started
            self.blocks += 1

    def add(self, seconds: float) -> None:
        self.seconds += max(0.0, seconds)
